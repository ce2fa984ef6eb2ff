"""Pure-JAX reference of `selective_scan`: a token-by-token `lax.scan` of the recurrence, fp32 math.

Metal-safe (`lax.scan` with a static length, elementwise math, single-operand reductions).
Shape legend: b batch, l seqlen, d dim, n dstate, g ngroups (B/C are [b, l, g, n] here), p = d // g.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from ..elementwise import f32, prep_dt, skip_and_gate
from ..selective_state_update.reference import recurrence_step


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, *, delta_softplus=False,
                       initial_state=None):
    """u, delta, z [b, l, d]; A [d, n] f32; B, C [b, l, g, n]; D, delta_bias [d];
    initial_state [b, d, n] f32. Returns (y [b, l, d] in u.dtype, last_state [b, d, n] f32)."""
    batch, seqlen, dim = u.shape
    g, n = B.shape[2], B.shape[3]
    p = dim // g
    u32 = u.astype(f32)
    dt = prep_dt(delta, delta_bias, delta_softplus)
    A_g = A.astype(f32).reshape(g, p, n)
    h0 = (jnp.zeros((batch, dim, n), f32) if initial_state is None else initial_state.astype(f32))
    h0 = h0.reshape(batch, g, p, n)

    def body(h, xs):
        dt_t, u_t, B_t, C_t = xs
        return recurrence_step(h, A_g, dt_t.reshape(batch, g, p), u_t.reshape(batch, g, p), B_t, C_t)

    xs = (jnp.swapaxes(dt, 0, 1), jnp.swapaxes(u32, 0, 1),
          jnp.swapaxes(B.astype(f32), 0, 1), jnp.swapaxes(C.astype(f32), 0, 1))
    h, ys = lax.scan(body, h0, xs)
    y = jnp.swapaxes(ys, 0, 1).reshape(batch, seqlen, dim)
    y = skip_and_gate(y, u32, D, z)
    return y.astype(u.dtype), h.reshape(batch, dim, n)
