"""Pure-JAX reference of `causal_conv1d`: fp32 math; also the op's "xla" (Metal-safe) path.

Shape legend: b batch, l seqlen, d dim, w width.
"""

from __future__ import annotations

import jax.numpy as jnp

from ..elementwise import f32, silu


def causal_conv1d_ref(x, weight, bias=None, *, silu_act=False, initial_state=None):
    """x [b, l, d]; weight [d, w] f32; bias [d]; initial_state [b, d, w-1] in x.dtype (oldest first).
    Returns (y [b, l, d] in x.dtype, final_state [b, d, w-1] in x.dtype)."""
    batch, seqlen, dim = x.shape
    width = weight.shape[1]
    if initial_state is None:
        prev = jnp.zeros((batch, width - 1, dim), x.dtype)
    else:
        prev = jnp.swapaxes(initial_state.astype(x.dtype), 1, 2)
    xpad = jnp.concatenate([prev, x], axis=1)  # [b, l + w - 1, d]
    xp32 = xpad.astype(f32)
    w = weight.astype(f32)
    y = jnp.zeros((batch, seqlen, dim), f32) if bias is None else jnp.broadcast_to(bias.astype(f32), (batch, seqlen, dim))
    for k in range(width):
        y = y + xp32[:, k:k + seqlen, :] * w[:, k]
    final = jnp.swapaxes(xpad[:, seqlen:, :], 1, 2)
    return (silu(y) if silu_act else y).astype(x.dtype), final
