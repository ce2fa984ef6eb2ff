"""Mamba-1 and Mamba-2 language models (Flax NNX): embedding, residual blocks (RMSNorm + MambaMixer or
Mamba2Mixer), final norm, tied or untied LM head; full-sequence forward, prefill with cache, and a
one-token decode step.

Shape legend: b batch, l seqlen, d d_model, e d_inner, n d_state, w d_conv, L n_layer,
V padded vocab size; Mamba-2: h nheads, p headdim, c conv channels (e + 2 ngroups n).  Numerics follow
transformers' MambaForCausalLM / Mamba2ForCausalLM: the residual stream is float32 when
residual_in_fp32, every RMSNorm runs in float32, logits are returned in float32.
"""

from __future__ import annotations

from typing import Optional, Union

import jax
import jax.numpy as jnp
from flax import nnx, struct

from .config import Mamba2Config, MambaConfig
from .mamba2 import Mamba2Mixer
from .mixer import MambaMixer, default_precision
from .norm import RMSNorm

f32 = jnp.float32

# Positions per prefill chunk summed over the batch: about 1 GB of activations at mamba-2.8b's width
# (bfloat16). Shorter prompts run in one piece.
PREFILL_CHUNK_TOKENS = 8192


def default_chunk_size(batch: int) -> int:
    """`MambaLM.prefill`'s default chunk length for a batch: PREFILL_CHUNK_TOKENS / batch positions,
    rounded down to a multiple of 256 (the SSD scan's chunk), at least 256."""
    return max(256, (PREFILL_CHUNK_TOKENS // max(1, batch)) // 256 * 256)


@struct.dataclass
class MambaCache:
    """Decode state of every layer (a pytree): one array per layer, not one stacked array, so that
    each layer's update ops alias their state in place inside a decode loop (a stacked array would be
    rebuilt, i.e. copied whole, every step).

    conv_states: tuple of n_layer arrays in the activation dtype, the last w-1 conv inputs (oldest
      first): [b, e, w-1] (Mamba-1) or [b, c, w-1] (Mamba-2: x, B and C).
    ssm_states: tuple of n_layer arrays, float32: [b, e, n] (Mamba-1) or [b, h, p, n] (Mamba-2).
    """

    conv_states: tuple
    ssm_states: tuple


def as_cache_dtype(cache: MambaCache, dtype) -> MambaCache:
    """`cache` with its conv states in the activation dtype `dtype` (SSM states stay float32)."""
    return MambaCache(conv_states=tuple(c.astype(dtype) for c in cache.conv_states),
                      ssm_states=tuple(s.astype(f32) for s in cache.ssm_states))


class MambaBlock(nnx.Module):
    """h -> residual + mixer(norm(h)), with the residual kept in float32 when residual_in_fp32. The mixer is
    a `MambaMixer` for a `MambaConfig`, a `Mamba2Mixer` for a `Mamba2Config`."""

    def __init__(self, cfg: Union[MambaConfig, Mamba2Config], *, dtype=f32, param_dtype=f32, precision=None,
                 implementation: Optional[str] = None, rngs: nnx.Rngs):
        self.residual_dtype = f32 if cfg.residual_in_fp32 else dtype
        self.norm = RMSNorm(cfg.d_model, eps=cfg.rms_norm_eps, dtype=dtype, param_dtype=param_dtype)
        mixer = Mamba2Mixer if isinstance(cfg, Mamba2Config) else MambaMixer
        self.mixer = mixer(cfg.d_model, **cfg.mixer_kwargs(), dtype=dtype, param_dtype=param_dtype,
                                precision=precision, implementation=implementation, rngs=rngs)

    def rescale_out_proj(self, n_layer: int):
        """Divides out_proj's weights by sqrt(n_layer) (the reference's initialisation)."""
        k = self.mixer.out_proj.kernel
        k[...] = (k[...].astype(f32) / jnp.sqrt(f32(n_layer))).astype(k[...].dtype)

    def __call__(self, h, mask=None, *, initial_state=None, implementation=...):
        """h [b, l, d] -> (h' [b, l, d] in the residual dtype, (conv_state, ssm_state)); initial_state:
        an optional (conv_state, ssm_state) to continue from."""
        y, state = self.mixer(self.norm(h), mask, return_state=True, initial_state=initial_state,
                              implementation=implementation)
        return h.astype(self.residual_dtype) + y.astype(self.residual_dtype), state

    def step(self, h, x, conv_state, ssm_state, next_norm, *, implementation=..., constants=None,
             state_indices=None):
        """One decode step of the block, carried as (h, x = self.norm(h)) from block to block so that
        this block's residual add and the next norm run as one `add_rms_norm` call.

        h [b, d] the residual stream before the block; x [b, d] its norm (this block's input);
        next_norm: the RMSNorm that follows (the next block's, or the final one). constants:
        `mixer.step_constants()`; state_indices: slots of the b rows when the states are pools.
        Returns (h' [b, d] in the residual dtype, next_norm(h'), conv_state, ssm_state)."""
        impl = self.mixer._impl(implementation)
        y, conv_state, ssm_state = self.mixer.step(x, conv_state, ssm_state, implementation=impl,
                                                   constants=constants, state_indices=state_indices)
        h, x = next_norm.add_and_norm(h, y, self.residual_dtype, impl)
        return h, x, conv_state, ssm_state


class MambaLM(nnx.Module):
    """Mamba-1 or Mamba-2 causal language model.

    Args:
      cfg: `MambaConfig` (Mamba-1 blocks) or `Mamba2Config` (Mamba-2 blocks).
      dtype: activation dtype (float32, bfloat16 or float16).
      param_dtype: dtype of the embedding, norms, projections and conv (A_log, D, dt_bias stay float32).
      precision: matmul precision for the projections and the LM head (None: HIGHEST when dtype is
        float32, so float32 models get float32 matmuls on GPUs too, not TF32; the backend default for
        bfloat16 / float16).
      implementation: None | "ffi" | "xla", passed to every op call. Settable later:
        ``model.implementation = "xla"``.
      rngs: nnx.Rngs for the initialisation (the reference's: embedding N(0, initializer_range),
        out_proj scaled by 1/sqrt(n_layer) when rescale_prenorm_residual).

    ``model(input_ids)`` -> logits [b, l, V] float32; ``model.prefill`` also returns a `MambaCache`;
    ``model.step`` decodes one token. The layers are a python list (unrolled under jit), which is
    what a decode loop wants: a scan over layers was measured 2x slower per token.
    """

    def __init__(self, cfg: Union[MambaConfig, Mamba2Config], *, dtype=f32, param_dtype=f32, precision=None,
                 implementation: Optional[str] = None, rngs: nnx.Rngs):
        precision = default_precision(precision, dtype, param_dtype)
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
                layer.rescale_out_proj(cfg.n_layer)
        self.norm_f = RMSNorm(d, eps=cfg.rms_norm_eps, dtype=dtype, param_dtype=param_dtype)
        self.lm_head = (None if cfg.tie_embeddings else
                        nnx.Linear(d, V, use_bias=False, dtype=dtype, param_dtype=param_dtype,
                                   precision=precision, preferred_element_type=f32, rngs=rngs))
        self.tokenizer = None

    def _logits(self, h):
        """h [..., d] (residual dtype) -> float32 logits [..., V] (the matmul accumulates and returns float32)."""
        return self._head(self.norm_f(h))

    def _head(self, x):
        """x = norm_f(h) [..., d] -> float32 logits [..., V]."""
        x = x.astype(self.dtype)
        if self.lm_head is None:
            E = self.embedding.embedding[...].astype(self.dtype)
            out = jnp.einsum("...d,vd->...v", x, E, precision=self.precision, preferred_element_type=f32)
        else:
            out = self.lm_head(x)
        return out.astype(f32)

    def init_cache(self, batch: int) -> MambaCache:
        """Zero cache for `batch` sequences (the state before any token)."""
        states = [layer.mixer.init_state(batch, self.dtype) for layer in self.layers]
        return MambaCache(conv_states=tuple(c for c, _ in states), ssm_states=tuple(s for _, s in states))

    def _prefill_chunk(self, input_ids, mask, cache):
        """Runs the layers over one chunk from `cache` (None: zeros) -> (h [b, l, d], MambaCache)."""
        h = self.embedding(input_ids)
        convs, ssms = [], []
        for i, layer in enumerate(self.layers):
            init = None if cache is None else (cache.conv_states[i], cache.ssm_states[i])
            h, (conv_state, ssm_state) = layer(h, mask, initial_state=init, implementation=self.implementation)
            convs.append(conv_state.astype(self.dtype))
            ssms.append(ssm_state)
        return h, MambaCache(conv_states=tuple(convs), ssm_states=tuple(ssms))

    def prefill(self, input_ids, mask=None, *, cache: Optional[MambaCache] = None, last_only: bool = False,
                chunk_size: Optional[int] = ...):
        """Runs a prompt batch and returns its logits and the decode cache after its last position.

        Args:
          input_ids: [b, l] int32 token ids.
          mask: optional [b, l] bool, True at real tokens, for LEFT-padded ragged batches: each row then
            gets exactly the logits (at its real positions) and the cache of its unpadded prompt.
          cache: optional `MambaCache` of b rows to continue from (a previous prefill's or step's): the
            result is that of prefilling the earlier tokens and these together. With a mask, each row
            continues from its first real position (its padding leaves the state untouched; a row of
            padding only keeps its cache as it was).
          last_only: return only the logits of the last position, [b, V].
          chunk_size: prompts longer than this run as a loop (`lax.scan`) over chunks of this many
            positions with the cache carried, so activation memory is O(b * chunk_size), not O(b * l)
            (the full logits of `last_only=False` are still [b, l, V]). Default `default_chunk_size(b)`;
            None: one chunk, whatever the length.

        Returns:
          (logits [b, l, V] float32 (or [b, V]), MambaCache) with conv states from the conv's
          return_final_state and SSM states from the scan's final state.
        """
        b, l = input_ids.shape
        if chunk_size is ...:
            chunk_size = default_chunk_size(b)
        if chunk_size is None or l <= chunk_size:
            h, cache = self._prefill_chunk(input_ids, mask, cache)
            return self._logits(h[:, -1] if last_only else h), cache
        cache = self.init_cache(b) if cache is None else as_cache_dtype(cache, self.dtype)
        r, k = l % chunk_size, l // chunk_size
        parts = []
        if r:  # the first l mod chunk_size positions, then whole chunks
            h, cache = self._prefill_chunk(input_ids[:, :r], None if mask is None else mask[:, :r], cache)
            parts.append(h)

        def chunks(x):
            return None if x is None else jnp.swapaxes(x[:, r:].reshape(b, k, chunk_size), 0, 1)

        def body(cache, xs):
            ids, m = xs
            h, cache = self._prefill_chunk(ids, m, cache)
            return cache, (h[:, -1] if last_only else h)

        cache, hs = jax.lax.scan(body, cache, (chunks(input_ids), chunks(mask)))
        if last_only:
            return self._logits(hs[-1]), cache
        parts.append(jnp.swapaxes(hs, 0, 1).reshape(b, k * chunk_size, -1))
        return self._logits(jnp.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]), cache

    def __call__(self, input_ids, mask=None):
        """input_ids [b, l] int32 (mask: as in `prefill`) -> logits [b, l, V] float32."""
        return self.prefill(input_ids, mask)[0]

    def step_constants(self):
        """Per layer, the float32 values a decode step derives from the weights alone (see
        `MambaMixer.step_constants`); compute once per decode loop and pass to `step`."""
        return tuple(layer.mixer.step_constants() for layer in self.layers)

    def step(self, token_ids, cache: MambaCache, constants=None, state_indices=None):
        """One decode step: token_ids [b] int32 -> (logits [b, V] float32, the updated MambaCache).

        Uses causal_conv1d_update and selective_state_update (Mamba-2: ssd_state_update), and
        add_rms_norm for each residual add with the norm after it; the layers are unrolled. constants:
        `step_constants()`, hoisted out of a decode loop (None: derived here, each call).
        state_indices: optional [b] int32: `cache` is then a pool of n_slots rows and token b advances
        slot state_indices[b] (in place when the cache is donated); a slot outside [0, n_slots)
        leaves the pool as it was (that row's logits are junk)."""
        h = self.embedding(token_ids)
        x = self.layers[0].norm(h)
        next_norms = [layer.norm for layer in self.layers[1:]] + [self.norm_f]
        convs, ssms = [], []
        for i, (layer, next_norm) in enumerate(zip(self.layers, next_norms)):
            h, x, conv_state, ssm_state = layer.step(h, x, cache.conv_states[i], cache.ssm_states[i], next_norm,
                                                     implementation=self.implementation,
                                                     constants=None if constants is None else constants[i],
                                                     state_indices=state_indices)
            convs.append(conv_state)
            ssms.append(ssm_state)
        return self._head(x), MambaCache(conv_states=tuple(convs), ssm_states=tuple(ssms))
