"""Mamba-1 language model (Flax NNX): embedding, residual blocks (RMSNorm + MambaMixer), final norm,
tied or untied LM head; full-sequence forward, prefill with cache, and a one-token decode step.

Shape legend: b batch, l seqlen, d d_model, e d_inner, n d_state, w d_conv, L n_layer,
V padded vocab size.  Numerics follow transformers' MambaForCausalLM: the residual stream is float32
when residual_in_fp32, every RMSNorm runs in float32, logits are returned in float32.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx, struct

from .config import MambaConfig
from .mixer import MambaMixer

f32 = jnp.float32


@struct.dataclass
class MambaCache:
    """Decode state of every layer (a pytree): one array per layer, not one stacked array, so that
    each layer's update ops alias their state in place inside a decode loop (a stacked array would be
    rebuilt, i.e. copied whole, every step).

    conv_states: tuple of n_layer arrays [b, e, w-1] in the activation dtype, the last w-1 conv inputs
      (oldest first).
    ssm_states: tuple of n_layer arrays [b, e, n] float32.
    """

    conv_states: tuple
    ssm_states: tuple


class RMSNorm(nnx.Module):
    """y = x / sqrt(mean(x^2) + eps) * scale, computed in float32, returned in `dtype` (default x.dtype)."""

    def __init__(self, features: int, *, eps: float = 1e-5, dtype=None, param_dtype=f32):
        self.eps = eps
        self.dtype = dtype
        self.scale = nnx.Param(jnp.ones((features,), param_dtype))

    def __call__(self, x):
        out_dtype = self.dtype or x.dtype
        x32 = x.astype(f32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (y * self.scale[...].astype(f32)).astype(out_dtype)


class MambaBlock(nnx.Module):
    """h -> residual + mixer(norm(h)), with the residual kept in float32 when residual_in_fp32."""

    def __init__(self, cfg: MambaConfig, *, dtype=f32, param_dtype=f32, precision=None,
                 implementation: Optional[str] = None, rngs: nnx.Rngs):
        self.residual_dtype = f32 if cfg.residual_in_fp32 else dtype
        self.norm = RMSNorm(cfg.d_model, eps=cfg.rms_norm_eps, dtype=dtype, param_dtype=param_dtype)
        self.mixer = MambaMixer(cfg.d_model, **cfg.mixer_kwargs(), dtype=dtype, param_dtype=param_dtype,
                                precision=precision, implementation=implementation, rngs=rngs)

    def __call__(self, h, mask=None, *, implementation=...):
        """h [b, l, d] -> (h' [b, l, d] in the residual dtype, (conv_state, ssm_state))."""
        y, state = self.mixer(self.norm(h), mask, return_state=True, implementation=implementation)
        return h.astype(self.residual_dtype) + y.astype(self.residual_dtype), state

    def step(self, h, conv_state, ssm_state, *, implementation=..., constants=None):
        """h [b, d] -> (h' [b, d], conv_state, ssm_state). constants: `mixer.step_constants()`."""
        y, conv_state, ssm_state = self.mixer.step(self.norm(h), conv_state, ssm_state,
                                                   implementation=implementation, constants=constants)
        return h.astype(self.residual_dtype) + y.astype(self.residual_dtype), conv_state, ssm_state


class MambaLM(nnx.Module):
    """Mamba-1 causal language model.

    Args:
      cfg: `MambaConfig`.
      dtype: activation dtype (float32, bfloat16 or float16).
      param_dtype: dtype of the embedding, norms, projections and conv (A_log, D, dt_bias stay float32).
      precision: matmul precision for the projections and the LM head (None: the backend default;
        on GPUs that default may use TF32 for float32 matmuls).
      implementation: None | "ffi" | "xla", passed to every op call. Settable later:
        ``model.implementation = "xla"``.
      rngs: nnx.Rngs for the initialisation (the reference's: embedding N(0, initializer_range),
        out_proj scaled by 1/sqrt(n_layer) when rescale_prenorm_residual).

    ``model(input_ids)`` -> logits [b, l, V] float32; ``model.prefill`` also returns a `MambaCache`;
    ``model.step`` decodes one token. The layers are a python list (unrolled under jit), which is
    what a decode loop wants: a scan over layers was measured 2x slower per token.
    """

    def __init__(self, cfg: MambaConfig, *, dtype=f32, param_dtype=f32, precision=None,
                 implementation: Optional[str] = None, rngs: nnx.Rngs):
        self.config = cfg
        self.dtype = dtype
        self.precision = precision
        self.implementation = implementation
        V, d = cfg.padded_vocab_size, cfg.d_model
        self.embedding = nnx.Embed(V, d, dtype=dtype, param_dtype=param_dtype,
                                   embedding_init=nnx.initializers.normal(cfg.initializer_range), rngs=rngs)
        self.layers = nnx.List([
            MambaBlock(cfg, dtype=dtype, param_dtype=param_dtype, precision=precision,
                       implementation=implementation, rngs=rngs)
            for _ in range(cfg.n_layer)
        ])
        if cfg.rescale_prenorm_residual:
            for layer in self.layers:
                k = layer.mixer.out_proj.kernel
                k[...] = (k[...].astype(f32) / jnp.sqrt(f32(cfg.n_layer))).astype(k[...].dtype)
        self.norm_f = RMSNorm(d, eps=cfg.rms_norm_eps, dtype=dtype, param_dtype=param_dtype)
        self.lm_head = (None if cfg.tie_embeddings else
                        nnx.Linear(d, V, use_bias=False, dtype=dtype, param_dtype=param_dtype,
                                   precision=precision, preferred_element_type=f32, rngs=rngs))
        self.tokenizer = None

    # ------------------------------------------------------------------ pieces
    def _logits(self, h):
        """h [..., d] (residual dtype) -> float32 logits [..., V] (the matmul accumulates and returns float32)."""
        x = self.norm_f(h).astype(self.dtype)
        if self.lm_head is None:
            E = self.embedding.embedding[...].astype(self.dtype)
            out = jnp.einsum("...d,vd->...v", x, E, precision=self.precision, preferred_element_type=f32)
        else:
            out = self.lm_head(x)
        return out.astype(f32)

    def init_cache(self, batch: int) -> MambaCache:
        """Zero cache for `batch` sequences (the state before any token)."""
        cfg = self.config
        return MambaCache(
            conv_states=tuple(jnp.zeros((batch, cfg.d_inner, cfg.d_conv - 1), self.dtype)
                              for _ in range(cfg.n_layer)),
            ssm_states=tuple(jnp.zeros((batch, cfg.d_inner, cfg.d_state), f32) for _ in range(cfg.n_layer)),
        )

    # ------------------------------------------------------------------ forward
    def prefill(self, input_ids, mask=None, *, last_only: bool = False):
        """Runs a prompt batch and returns its logits and the decode cache after its last position.

        Args:
          input_ids: [b, l] int32 token ids.
          mask: optional [b, l] bool, True at real tokens, for LEFT-padded ragged batches: each row then
            gets exactly the logits (at its real positions) and the cache of its unpadded prompt.
          last_only: return only the logits of the last position, [b, V].

        Returns:
          (logits [b, l, V] float32 (or [b, V]), MambaCache) with conv states from the conv's
          return_final_state and SSM states from the scan's return_last_state.
        """
        h = self.embedding(input_ids)
        convs, ssms = [], []
        for layer in self.layers:
            h, (conv_state, ssm_state) = layer(h, mask, implementation=self.implementation)
            convs.append(conv_state.astype(self.dtype))
            ssms.append(ssm_state)
        if last_only:
            h = h[:, -1]
        cache = MambaCache(conv_states=tuple(convs), ssm_states=tuple(ssms))
        return self._logits(h), cache

    def __call__(self, input_ids, mask=None):
        """input_ids [b, l] int32 (mask: as in `prefill`) -> logits [b, l, V] float32."""
        return self.prefill(input_ids, mask)[0]

    def step_constants(self):
        """Per layer, the float32 values a decode step derives from the weights alone (see
        `MambaMixer.step_constants`); compute once per decode loop and pass to `step`."""
        return tuple(layer.mixer.step_constants() for layer in self.layers)

    def step(self, token_ids, cache: MambaCache, constants=None):
        """One decode step: token_ids [b] int32 -> (logits [b, V] float32, the updated MambaCache).

        Uses causal_conv1d_update and selective_state_update; the layers are unrolled. constants:
        `step_constants()`, hoisted out of a decode loop (None: derived here, each call)."""
        h = self.embedding(token_ids)
        convs, ssms = [], []
        for i, layer in enumerate(self.layers):
            h, conv_state, ssm_state = layer.step(h, cache.conv_states[i], cache.ssm_states[i],
                                                  implementation=self.implementation,
                                                  constants=None if constants is None else constants[i])
            convs.append(conv_state)
            ssms.append(ssm_state)
        return self._logits(h), MambaCache(conv_states=tuple(convs), ssm_states=tuple(ssms))
