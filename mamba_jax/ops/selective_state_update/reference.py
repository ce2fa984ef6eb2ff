"""Pure-JAX reference of `selective_state_update`: one recurrence step, fp32 math.

It is also the op's "xla" path (Metal-safe: elementwise math and a single-operand reduce) and the
step that `selective_scan.reference` repeats over a sequence.
Shape legend: b batch, d dim, n dstate, g ngroups, p = d // g.
"""

from __future__ import annotations

import jax.numpy as jnp

from ..elementwise import f32, prep_dt, skip_and_gate


def recurrence_step(h, A_g, dt, u, Bt, Ct):
    """h [b, g, p, n]; A_g [g, p, n]; dt, u [b, g, p]; Bt, Ct [b, g, n]. Returns (h', y [b, g, p])."""
    dA = jnp.exp(dt[..., None] * A_g)
    h = dA * h + (dt * u)[..., None] * Bt[:, :, None, :]
    y = jnp.sum(h * Ct[:, :, None, :], axis=-1)
    return h, y


def selective_state_update_ref(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, *, dt_softplus=False):
    """state [b, d, n] f32; x, dt, z [b, d]; A [d, n]; B, C [b, g, n]. Returns (y [b, d], new_state)."""
    batch, dim, n = state.shape
    g = B.shape[1]
    p = dim // g
    x32 = x.astype(f32)
    dt32 = prep_dt(dt, dt_bias, dt_softplus)
    h, y = recurrence_step(state.astype(f32).reshape(batch, g, p, n), A.astype(f32).reshape(g, p, n),
                           dt32.reshape(batch, g, p), x32.reshape(batch, g, p), B.astype(f32), C.astype(f32))
    y = skip_and_gate(y.reshape(batch, dim), x32, D, z)
    return y.astype(x.dtype), h.reshape(batch, dim, n)
