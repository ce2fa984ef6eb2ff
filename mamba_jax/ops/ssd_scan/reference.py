"""The plain fp32 reference of `ssd_scan`: one `lax.scan` step per position, the recurrence as written.

    h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T  (per head, h [headdim, dstate]);  y_t = h_t C_t + D x_t

With seq_idx, h_{t-1} is replaced by zeros where seq_idx[t] != seq_idx[t-1], and the state after each
position is written into its sequence's final-state slot (so each slot ends up holding the state after
the sequence's last position). Slow (seqlen sequential steps); for tests and as a readable definition.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import lax

from ..elementwise import skip_and_gate
from .xla import per_channel_D, prep_dt_limited

f32 = jnp.float32


def ssd_scan_ref(x, dt, A, B, C, *, chunk_size=256, D=None, z=None, dt_bias=None, dt_softplus=False,
                 dt_limit=(0.0, math.inf), initial_state=None, return_final_state=False, seq_idx=None,
                 num_sequences=None):
    """Same arguments and results as `mamba_jax.ops.ssd_scan` (chunk_size is ignored); no argument checks."""
    del chunk_size
    batch, seqlen, nheads, headdim = x.shape
    g, n = B.shape[2], B.shape[3]
    x32 = x.astype(f32)
    dt32 = prep_dt_limited(dt, dt_bias, dt_softplus, dt_limit)  # [b, l, h]
    Bh = jnp.repeat(B.astype(f32), nheads // g, axis=2)  # [b, l, h, n]
    Ch = jnp.repeat(C.astype(f32), nheads // g, axis=2)
    A = A.astype(f32)
    h0 = jnp.zeros((batch, nheads, headdim, n), f32) if initial_state is None else initial_state.astype(f32)
    packed = seq_idx is not None
    keep_finals = packed and return_final_state
    S = int(num_sequences) if keep_finals else 0
    sid = seq_idx.astype(jnp.int32) if packed else jnp.zeros((batch, seqlen), jnp.int32)

    def step(carry, xs):
        h, prev, finals = carry
        dt_t, x_t, B_t, C_t, id_t = xs  # [b, h], [b, h, p], [b, h, n], [b, h, n], [b]
        if packed:
            h = jnp.where((id_t != prev)[:, None, None, None], 0.0, h)
        h = jnp.exp(dt_t * A)[..., None, None] * h + (dt_t[..., None] * x_t)[..., None] * B_t[:, :, None, :]
        y_t = jnp.sum(h * C_t[:, :, None, :], axis=-1)
        if keep_finals:
            slot = id_t[:, None] == jnp.arange(S, dtype=jnp.int32)  # [b, S]
            finals = jnp.where(slot[..., None, None, None], h[:, None], finals)
        return (h, id_t, finals), y_t

    finals0 = jnp.zeros((batch, S, nheads, headdim, n), f32)
    xs = tuple(jnp.moveaxis(v, 1, 0) for v in (dt32, x32, Bh, Ch, sid))
    (last, _, finals), y = lax.scan(step, (h0, sid[:, 0], finals0), xs)
    y = skip_and_gate(jnp.moveaxis(y, 0, 1), x32, per_channel_D(D, nheads, headdim), z).astype(x.dtype)
    if not return_final_state:
        return y
    return y, (finals if packed else last)
