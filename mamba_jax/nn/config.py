"""Mamba-1 language model configuration, and its readers for the two checkpoint formats.

Field names follow the original state-spaces code (d_model, n_layer, d_state, ...). `from_hf_dict`
reads a transformers ``MambaConfig`` (config.json of the ``*-hf`` checkpoints), `from_state_spaces_dict`
the original ``config.json`` (d_model / n_layer / ssm_cfg).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Union


@dataclasses.dataclass(frozen=True)
class MambaConfig:
    """Sizes and options of a Mamba-1 language model.

    Attributes:
      vocab_size: number of tokens. The embedding (and the logits) have `padded_vocab_size` rows.
      d_model: width of the residual stream.
      n_layer: number of Mamba blocks.
      d_state: SSM state size N per channel.
      d_conv: width of the causal depthwise conv (2..8 for the kernels).
      expand: d_inner = expand * d_model.
      dt_rank: rank of the dt projection, an int or "auto" (= ceil(d_model / 16)).
      conv_bias: the conv has a bias.
      bias: in_proj and out_proj have biases.
      rms_norm_eps: epsilon of every RMSNorm.
      residual_in_fp32: keep the residual stream in float32 whatever the activation dtype.
      tie_embeddings: the LM head reuses the embedding matrix.
      pad_vocab_size_multiple: the embedding has vocab_size rounded up to a multiple of this
        (state-spaces checkpoints use 8; the transformers format stores the padded size as vocab_size).
      dt_min, dt_max, dt_init, dt_scale, dt_init_floor: initialisation of dt_proj (random weights only).
      initializer_range: std of the embedding initialisation.
      rescale_prenorm_residual: divide out_proj's initial weights by sqrt(n_layer), as the reference does.
    """

    vocab_size: int
    d_model: int
    n_layer: int
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: Union[int, str] = "auto"
    conv_bias: bool = True
    bias: bool = False
    rms_norm_eps: float = 1e-5
    residual_in_fp32: bool = True
    tie_embeddings: bool = True
    pad_vocab_size_multiple: int = 1
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init: str = "random"
    dt_scale: float = 1.0
    dt_init_floor: float = 1e-4
    initializer_range: float = 0.02
    rescale_prenorm_residual: bool = True

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "n_layer", "d_state", "d_conv", "expand", "pad_vocab_size_multiple"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"MambaConfig: {name} must be a positive int, got {v!r}")
        if self.dt_rank != "auto" and (not isinstance(self.dt_rank, int) or self.dt_rank < 1):
            raise ValueError(f"MambaConfig: dt_rank must be 'auto' or a positive int, got {self.dt_rank!r}")
        if self.dt_init not in ("random", "constant"):
            raise ValueError(f"MambaConfig: dt_init must be 'random' or 'constant', got {self.dt_init!r}")

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def resolved_dt_rank(self) -> int:
        return math.ceil(self.d_model / 16) if self.dt_rank == "auto" else int(self.dt_rank)

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_size_multiple
        return -(-self.vocab_size // m) * m

    def mixer_kwargs(self) -> dict:
        """The keyword arguments `MambaMixer` takes from this config."""
        return dict(d_state=self.d_state, d_conv=self.d_conv, expand=self.expand, dt_rank=self.dt_rank,
                    conv_bias=self.conv_bias, bias=self.bias, dt_min=self.dt_min, dt_max=self.dt_max,
                    dt_init=self.dt_init, dt_scale=self.dt_scale, dt_init_floor=self.dt_init_floor)

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> "MambaConfig":
        """Reads a transformers ``MambaConfig`` dict (model_type "mamba")."""
        model_type = d.get("model_type", "mamba")
        if model_type != "mamba":
            raise ValueError(f"config.json has model_type {model_type!r}; only Mamba-1 ('mamba') is supported here")
        act = d.get("hidden_act", "silu")
        if act not in ("silu", "swish"):
            raise ValueError(f"config.json has hidden_act {act!r}; only 'silu' is supported")
        hidden = _req(d, "hidden_size")
        expand = d.get("expand", 2)
        inter = d.get("intermediate_size")
        if inter is not None and inter != expand * hidden:
            raise ValueError(f"config.json has intermediate_size {inter}, but expand * hidden_size = {expand * hidden}")
        return cls(
            vocab_size=_req(d, "vocab_size"),
            d_model=hidden,
            n_layer=_req(d, "num_hidden_layers"),
            d_state=d.get("state_size", 16),
            d_conv=d.get("conv_kernel", 4),
            expand=expand,
            dt_rank=d.get("time_step_rank", "auto"),
            conv_bias=d.get("use_conv_bias", True),
            bias=d.get("use_bias", False),
            rms_norm_eps=d.get("layer_norm_epsilon", 1e-5),
            residual_in_fp32=d.get("residual_in_fp32", True),
            tie_embeddings=d.get("tie_word_embeddings", True),
            pad_vocab_size_multiple=1,
            dt_min=d.get("time_step_min", 0.001),
            dt_max=d.get("time_step_max", 0.1),
            dt_init=d.get("time_step_init_scheme", "random"),
            dt_scale=d.get("time_step_scale", 1.0),
            dt_init_floor=d.get("time_step_floor", 1e-4),
            initializer_range=d.get("initializer_range", 0.02),
            rescale_prenorm_residual=d.get("rescale_prenorm_residual", False),
        )

    @classmethod
    def from_state_spaces_dict(cls, d: dict[str, Any]) -> "MambaConfig":
        """Reads the original mamba_ssm ``config.json`` (d_model, n_layer, vocab_size, ssm_cfg, ...)."""
        ssm = dict(d.get("ssm_cfg") or {})
        layer = ssm.pop("layer", "Mamba1")
        if layer != "Mamba1":
            raise ValueError(f"config.json has ssm_cfg.layer {layer!r}; only Mamba1 is supported here")
        if d.get("d_intermediate", 0):
            raise ValueError("config.json has d_intermediate > 0 (MLP blocks); only pure Mamba-1 models are supported")
        if d.get("attn_layer_idx"):
            raise ValueError("config.json has attn_layer_idx (hybrid attention); only pure Mamba-1 models are supported")
        if not d.get("rms_norm", True):
            raise ValueError("config.json has rms_norm false (LayerNorm); only RMSNorm models are supported")
        known = {"d_state", "d_conv", "expand", "dt_rank", "conv_bias", "bias", "dt_min", "dt_max",
                 "dt_init", "dt_scale", "dt_init_floor"}
        return cls(
            vocab_size=_req(d, "vocab_size"),
            d_model=_req(d, "d_model"),
            n_layer=_req(d, "n_layer"),
            rms_norm_eps=d.get("norm_epsilon", 1e-5),
            residual_in_fp32=d.get("residual_in_fp32", True),
            tie_embeddings=d.get("tie_embeddings", True),
            pad_vocab_size_multiple=d.get("pad_vocab_size_multiple", 8),
            initializer_range=d.get("initializer_range", 0.02),
            **{k: v for k, v in ssm.items() if k in known},
        )


def _req(d: dict, key: str):
    if key not in d:
        raise ValueError(f"config.json has no {key!r}")
    return d[key]
