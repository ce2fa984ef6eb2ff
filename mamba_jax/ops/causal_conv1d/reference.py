"""Pure-JAX reference of `causal_conv1d`: fp32 math; also the op's "xla" (Metal-safe) path.

Shape legend: b batch, l seqlen, d dim, w width, s sequences packed in a row.
"""

from __future__ import annotations

import jax.numpy as jnp

from ..elementwise import f32, silu


def _history(x, initial_state, width):
    """[b, w - 1 + l, d]: the inputs before t = 0 (initial_state or zeros), then x."""
    batch, _, dim = x.shape
    if initial_state is None:
        prev = jnp.zeros((batch, width - 1, dim), x.dtype)
    else:
        prev = jnp.swapaxes(initial_state.astype(x.dtype), 1, 2)
    return jnp.concatenate([prev, x], axis=1)


def causal_conv1d_ref(x, weight, bias=None, *, silu_act=False, initial_state=None, seq_idx=None):
    """x [b, l, d]; weight [d, w] f32; bias [d]; initial_state [b, d, w-1] in x.dtype (oldest first);
    seq_idx [b, l] int32: a tap reads only inputs of its own sequence: none across a change of seq_idx
    (the inputs before t = 0 belong to the sequence at t = 0). Returns (y [b, l, d] in x.dtype, final_state [b, d, w-1] in x.dtype)."""
    batch, seqlen, dim = x.shape
    width = weight.shape[1]
    xpad = _history(x, initial_state, width)  # [b, l + w - 1, d]
    xp32 = xpad.astype(f32)
    w = weight.astype(f32)
    if seq_idx is not None:
        seq = seq_idx.astype(jnp.int32)
        seq_pad = jnp.concatenate([jnp.broadcast_to(seq[:, :1], (batch, width - 1)), seq], axis=1)
    y = jnp.zeros((batch, seqlen, dim), f32) if bias is None else jnp.broadcast_to(bias.astype(f32), (batch, seqlen, dim))
    keep = None  # keep[b, t]: seq_idx does not change between the tap's step and t
    for k in reversed(range(width)):
        tap = xp32[:, k:k + seqlen, :] * w[:, k]
        if seq_idx is not None and k < width - 1:
            same = seq_pad[:, k:k + seqlen] == seq_pad[:, k + 1:k + 1 + seqlen]
            keep = same if keep is None else keep & same
            tap = jnp.where(keep[..., None], tap, 0.0)
        y = y + tap
    final = jnp.swapaxes(xpad[:, seqlen:, :], 1, 2)
    return (silu(y) if silu_act else y).astype(x.dtype), final


def packed_final_states(x, initial_state, seq_idx, num_sequences: int, width: int):
    """The conv state each packed sequence ends with: [b, num_sequences, d, w - 1] in x.dtype.

    For sequence s, the last w - 1 inputs up to its last position (inputs of other sequences read as
    zero; the inputs before t = 0 belong to the sequence at t = 0); all zeros where s does not occur.
    Needs seq_idx nondecreasing along l: the last position of s is then (number of positions <= s) - 1.
    """
    batch, seqlen, dim = x.shape
    hist = _history(x, initial_state, width)  # [b, w - 1 + l, d]
    seq = seq_idx.astype(jnp.int32)
    seq_pad = jnp.concatenate([jnp.broadcast_to(seq[:, :1], (batch, width - 1)), seq], axis=1)
    ids = jnp.arange(num_sequences, dtype=jnp.int32)
    # last[b, s]: index into hist of the last position of s (w - 2 when s never occurs: harmless).
    last = jnp.sum((seq[:, None, :] <= ids[None, :, None]).astype(jnp.int32), axis=-1) + (width - 2)
    pos = last[..., None] - (width - 2) + jnp.arange(width - 1, dtype=jnp.int32)  # [b, s, w - 1]
    pos = jnp.clip(pos, 0, seqlen + width - 2)
    rows = jnp.arange(batch)[:, None, None]
    taps = hist[rows, pos]  # [b, s, w - 1, d]
    keep = seq_pad[rows, pos] == ids[None, :, None]
    taps = jnp.where(keep[..., None], taps, jnp.zeros((), x.dtype))
    return jnp.swapaxes(taps, 2, 3)
