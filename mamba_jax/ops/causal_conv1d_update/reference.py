"""Pure-JAX reference of `causal_conv1d_update`: fp32 math; also the op's "xla" (Metal-safe) path."""

from __future__ import annotations

import jax.numpy as jnp

from ..elementwise import f32, silu


def causal_conv1d_update_ref(x, conv_state, weight, bias=None, *, silu_act=False):
    """x [b, d]; conv_state [b, d, w-1] in x.dtype; weight [d, w]. Returns (y [b, d], new_conv_state)."""
    window = jnp.concatenate([conv_state.astype(x.dtype), x[..., None]], axis=-1)  # [b, d, w]
    y = jnp.sum(window.astype(f32) * weight.astype(f32), axis=-1)
    if bias is not None:
        y = y + bias.astype(f32)
    return (silu(y) if silu_act else y).astype(x.dtype), window[..., 1:]
