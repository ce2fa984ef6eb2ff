"""Mamba-1 and Mamba-2 language model configurations, and their readers for the two checkpoint formats.

Field names follow the original state-spaces code (d_model, n_layer, d_state, ...). `from_hf_dict`
reads a transformers ``MambaConfig`` / ``Mamba2Config`` (config.json of the transformers checkpoints),
`from_state_spaces_dict` the original ``config.json`` (d_model / n_layer / ssm_cfg).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Union

_INF = float("inf")


@dataclasses.dataclass(frozen=True)
class _LMConfig:
    """The fields both model families share (documented on `MambaConfig`)."""

    vocab_size: int
    d_model: int
    n_layer: int
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    conv_bias: bool = True
    bias: bool = False
    rms_norm_eps: float = 1e-5
    residual_in_fp32: bool = True
    tie_embeddings: bool = True
    pad_vocab_size_multiple: int = 1
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    initializer_range: float = 0.02
    rescale_prenorm_residual: bool = True

    def __post_init__(self):
        _check_positive_ints(self, ("vocab_size", "d_model", "n_layer", "d_state", "d_conv", "expand",
                                    "pad_vocab_size_multiple"))

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_size_multiple
        return -(-self.vocab_size // m) * m


@dataclasses.dataclass(frozen=True)
class MambaConfig(_LMConfig):
    """Sizes and options of a Mamba-1 language model.

    Attributes:
      vocab_size: number of tokens. The embedding (and the logits) have `padded_vocab_size` rows.
      d_model: width of the residual stream.
      n_layer: number of Mamba blocks.
      d_state: SSM state size N per channel.
      d_conv: width of the causal depthwise conv (2..8 for the kernels).
      expand: d_inner = expand * d_model.
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
      dt_rank: rank of the dt projection, an int or "auto" (= ceil(d_model / 16)).
    """

    dt_rank: Union[int, str] = "auto"
    dt_init: str = "random"
    dt_scale: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        if self.dt_rank != "auto" and (not isinstance(self.dt_rank, int) or self.dt_rank < 1):
            raise ValueError(f"MambaConfig: dt_rank must be 'auto' or a positive int, got {self.dt_rank!r}")
        if self.dt_init not in ("random", "constant"):
            raise ValueError(f"MambaConfig: dt_init must be 'random' or 'constant', got {self.dt_init!r}")

    @property
    def resolved_dt_rank(self) -> int:
        return math.ceil(self.d_model / 16) if self.dt_rank == "auto" else int(self.dt_rank)

    def mixer_kwargs(self) -> dict:
        """The keyword arguments `MambaMixer` takes from this config."""
        return dict(d_state=self.d_state, d_conv=self.d_conv, expand=self.expand, dt_rank=self.dt_rank,
                    conv_bias=self.conv_bias, bias=self.bias, dt_min=self.dt_min, dt_max=self.dt_max,
                    dt_init=self.dt_init, dt_scale=self.dt_scale, dt_init_floor=self.dt_init_floor)

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> "MambaConfig":
        """Reads a transformers ``MambaConfig`` dict (model_type "mamba")."""
        f = _hf_fields(d, "mamba", d_state=16, tie_embeddings=True)
        inter = d.get("intermediate_size")
        if inter is not None and inter != f["expand"] * f["d_model"]:
            raise ValueError(f"config.json has intermediate_size {inter}, but expand * hidden_size = "
                             f"{f['expand'] * f['d_model']}")
        return cls(**f, dt_rank=d.get("time_step_rank", "auto"), dt_init=d.get("time_step_init_scheme", "random"),
                   dt_scale=d.get("time_step_scale", 1.0))

    @classmethod
    def from_state_spaces_dict(cls, d: dict[str, Any]) -> "MambaConfig":
        """Reads the original mamba_ssm ``config.json`` (d_model, n_layer, vocab_size, ssm_cfg, ...)."""
        known = {"d_state", "d_conv", "expand", "dt_rank", "conv_bias", "bias", "dt_min", "dt_max",
                 "dt_init", "dt_scale", "dt_init_floor"}
        return cls(**_state_spaces_fields(d, _state_spaces_ssm_cfg(d, "Mamba1"), known))


@dataclasses.dataclass(frozen=True)
class Mamba2Config(_LMConfig):
    """Sizes and options of a Mamba-2 language model (`MambaLM` builds `Mamba2Mixer` blocks from it).

    Attributes:
      vocab_size, d_model, n_layer, conv_bias, bias, rms_norm_eps, residual_in_fp32, tie_embeddings,
        pad_vocab_size_multiple, initializer_range, rescale_prenorm_residual: as in `MambaConfig`.
      d_state: SSM state size N per head channel.
      d_conv: width of the causal depthwise conv over x, B and C (2..8 for the kernels).
      expand: d_inner = expand * d_model = nheads * headdim.
      headdim: channels per head P; nheads = d_inner // headdim.
      ngroups: groups of B and C (head h uses group h // (nheads // ngroups)); also the groups of the gated
        RMSNorm (d_inner // ngroups channels each).
      chunk_size: chunk length of the SSD scan (a performance knob; results agree for any value).
      conv_bias: the conv has a bias.
      bias: in_proj and out_proj have biases.
      dt_limit: (lo, hi): dt = clip(softplus(dt + dt_bias), lo, hi).
      gated_norm: y = RMSNorm(y * silu(z)) per group before out_proj (state-spaces `rmsnorm`); False:
        y * silu(z) without a norm.
      norm_before_gate: with gated_norm, RMSNorm(y) * silu(z) instead.
      gated_norm_eps: epsilon of the gated RMSNorm (state-spaces: 1e-5; transformers: layer_norm_epsilon).
      D_has_hdim: D has one value per channel ([nheads * headdim]) instead of one per head.
      dt_min, dt_max, dt_init_floor, A_init_range: initialisation of dt_bias and A_log (random weights only).
    """

    d_state: int = 128
    headdim: int = 64
    ngroups: int = 1
    chunk_size: int = 256
    dt_limit: tuple = (0.0, _INF)
    gated_norm: bool = True
    norm_before_gate: bool = False
    gated_norm_eps: float = 1e-5
    D_has_hdim: bool = False
    A_init_range: tuple = (1.0, 16.0)

    def __post_init__(self):
        super().__post_init__()
        _check_positive_ints(self, ("headdim", "ngroups", "chunk_size"))
        object.__setattr__(self, "dt_limit", tuple(float(v) for v in self.dt_limit))
        object.__setattr__(self, "A_init_range", tuple(float(v) for v in self.A_init_range))
        if self.d_inner % self.headdim:
            raise ValueError(f"Mamba2Config: d_inner = expand * d_model = {self.d_inner} is not a multiple of "
                             f"headdim {self.headdim}")
        if self.nheads % self.ngroups:
            raise ValueError(f"Mamba2Config: nheads = {self.nheads} is not a multiple of ngroups {self.ngroups}")
        lo, hi = self.dt_limit
        if not 0.0 <= lo <= hi:
            raise ValueError(f"Mamba2Config: dt_limit must be (lo, hi) with 0 <= lo <= hi, got {self.dt_limit}")

    @property
    def nheads(self) -> int:
        return self.d_inner // self.headdim

    @property
    def conv_dim(self) -> int:
        """Channels of the conv: x, B and C together (d_inner + 2 * ngroups * d_state)."""
        return self.d_inner + 2 * self.ngroups * self.d_state

    def mixer_kwargs(self) -> dict:
        """The keyword arguments `Mamba2Mixer` takes from this config."""
        return dict(d_state=self.d_state, d_conv=self.d_conv, expand=self.expand, headdim=self.headdim,
                    ngroups=self.ngroups, chunk_size=self.chunk_size, conv_bias=self.conv_bias, bias=self.bias,
                    dt_limit=self.dt_limit, gated_norm=self.gated_norm, norm_before_gate=self.norm_before_gate,
                    norm_eps=self.gated_norm_eps, D_has_hdim=self.D_has_hdim, dt_min=self.dt_min,
                    dt_max=self.dt_max, dt_init_floor=self.dt_init_floor, A_init_range=self.A_init_range)

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> "Mamba2Config":
        """Reads a transformers ``Mamba2Config`` dict (model_type "mamba2")."""
        f = _hf_fields(d, "mamba2", d_state=128, tie_embeddings=False)
        nheads, headdim = d.get("num_heads", 128), d.get("head_dim", 64)
        if nheads * headdim != f["expand"] * f["d_model"]:
            raise ValueError(f"config.json has num_heads * head_dim = {nheads} * {headdim}, but expand * hidden_size "
                             f"= {f['expand'] * f['d_model']}; they must be equal")
        return cls(**f, headdim=headdim, ngroups=d.get("n_groups", 8), chunk_size=d.get("chunk_size", 256),
                   dt_limit=tuple(_json_float(v) for v in d.get("time_step_limit", (0.0, _INF))),
                   gated_norm=d.get("rms_norm", True), norm_before_gate=d.get("norm_before_gate", False),
                   gated_norm_eps=f["rms_norm_eps"])

    @classmethod
    def from_state_spaces_dict(cls, d: dict[str, Any]) -> "Mamba2Config":
        """Reads the original mamba_ssm ``config.json`` with ssm_cfg {"layer": "Mamba2", ...}."""
        ssm = _state_spaces_ssm_cfg(d, "Mamba2")
        act = ssm.pop("activation", "swish")
        if act not in ("silu", "swish"):
            raise ValueError(f"config.json has ssm_cfg.activation {act!r}; only 'swish' (silu) is supported")
        d_ssm = ssm.pop("d_ssm", None)
        if d_ssm is not None and d_ssm != ssm.get("expand", 2) * _req(d, "d_model"):
            raise ValueError(f"config.json has ssm_cfg.d_ssm {d_ssm} (an SSM on part of the channels, the rest "
                             "a gated MLP); only d_ssm = d_inner is supported")
        if "rmsnorm" in ssm:
            ssm["gated_norm"] = ssm.pop("rmsnorm")
        known = {"d_state", "d_conv", "expand", "headdim", "ngroups", "chunk_size", "conv_bias", "bias", "dt_limit",
                 "gated_norm", "norm_before_gate", "D_has_hdim", "dt_min", "dt_max", "dt_init_floor", "A_init_range"}
        return cls(**_state_spaces_fields(d, ssm, known))


def config_from_dict(d: dict[str, Any]):
    """A config.json dict -> (MambaConfig or Mamba2Config, format), format "hf" or "state-spaces".

    The real transformers configs may also carry the state-spaces keys (d_model, n_layer, ssm_cfg,
    pad_vocab_size_multiple, ...), so the transformers keys decide first."""
    if "hidden_size" in d or "model_type" in d:
        kinds = {"mamba": MambaConfig, "mamba2": Mamba2Config}
        model_type = d.get("model_type", "mamba")
        if model_type not in kinds:
            raise ValueError(f"config.json has model_type {model_type!r}; supported: 'mamba' (Mamba-1), "
                             "'mamba2' (Mamba-2)")
        return kinds[model_type].from_hf_dict(d), "hf"
    if "d_model" in d and "n_layer" in d:
        kinds = {"Mamba1": MambaConfig, "Mamba2": Mamba2Config}
        layer = (d.get("ssm_cfg") or {}).get("layer", "Mamba1")
        if layer not in kinds:
            raise ValueError(f"config.json has ssm_cfg.layer {layer!r}; supported: 'Mamba1', 'Mamba2'")
        return kinds[layer].from_state_spaces_dict(d), "state-spaces"
    raise ValueError("config.json is neither a transformers MambaConfig / Mamba2Config (hidden_size, "
                     "num_hidden_layers, ...) nor a state-spaces config (d_model, n_layer, ...)")


def _check_positive_ints(cfg, names):
    for name in names:
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{type(cfg).__name__}: {name} must be a positive int, got {v!r}")


def _hf_fields(d: dict, model_type: str, *, d_state: int, tie_embeddings: bool) -> dict:
    """The fields both transformers configs carry alike (defaults: transformers' where they differ)."""
    if d.get("model_type", model_type) != model_type:
        raise ValueError(f"config.json has model_type {d.get('model_type')!r}, not {model_type!r}")
    act = d.get("hidden_act", "silu")
    if act not in ("silu", "swish"):
        raise ValueError(f"config.json has hidden_act {act!r}; only 'silu' is supported")
    return dict(
        vocab_size=_req(d, "vocab_size"),
        d_model=_req(d, "hidden_size"),
        n_layer=_req(d, "num_hidden_layers"),
        d_state=d.get("state_size", d_state),
        d_conv=d.get("conv_kernel", 4),
        expand=d.get("expand", 2),
        conv_bias=d.get("use_conv_bias", True),
        bias=d.get("use_bias", False),
        rms_norm_eps=d.get("layer_norm_epsilon", 1e-5),
        residual_in_fp32=d.get("residual_in_fp32", True),
        tie_embeddings=d.get("tie_word_embeddings", tie_embeddings),
        pad_vocab_size_multiple=1,
        dt_min=d.get("time_step_min", 0.001),
        dt_max=d.get("time_step_max", 0.1),
        dt_init_floor=d.get("time_step_floor", 1e-4),
        initializer_range=d.get("initializer_range", 0.02),
        rescale_prenorm_residual=d.get("rescale_prenorm_residual", False),
    )


def _state_spaces_fields(d: dict, ssm: dict, known: set) -> dict:
    """The fields of a state-spaces config: the top-level ones, and those of `ssm` (ssm_cfg) in `known`."""
    return dict(
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


def _state_spaces_ssm_cfg(d: dict, layer: str) -> dict:
    """A copy of d["ssm_cfg"] without "layer", after checking the model is a pure `layer` model."""
    ssm = dict(d.get("ssm_cfg") or {})
    got = ssm.pop("layer", "Mamba1")
    if got != layer:
        raise ValueError(f"config.json has ssm_cfg.layer {got!r}; expected {layer!r} here")
    if d.get("d_intermediate", 0):
        raise ValueError(f"config.json has d_intermediate > 0 (MLP blocks); only pure {layer} models are supported")
    if d.get("attn_layer_idx"):
        raise ValueError(f"config.json has attn_layer_idx (hybrid attention); only pure {layer} models are supported")
    if not d.get("rms_norm", True):
        raise ValueError("config.json has rms_norm false (LayerNorm); only RMSNorm models are supported")
    return ssm


def _json_float(v) -> float:
    """A float from config.json: a number, "Infinity"/"inf" strings, or transformers' {"__float__": "Infinity"}."""
    if isinstance(v, dict) and "__float__" in v:
        v = v["__float__"]
    return float(v)


def _req(d: dict, key: str):
    if key not in d:
        raise ValueError(f"config.json has no {key!r}")
    return d[key]
