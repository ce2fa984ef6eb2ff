"""One step of the Mamba-2 recurrence in pure JAX: the "xla" path (also the Metal path) and the
reference of `ssd_state_update`; a handful of elementwise ops and two reductions over dstate."""

from __future__ import annotations

import math

import jax.numpy as jnp

from ..elementwise import skip_and_gate
from ..ssd_scan.xla import per_channel_D, prep_dt_limited

f32 = jnp.float32


def ssd_state_update_ref(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, *, dt_softplus=False,
                         dt_limit=(0.0, math.inf)):
    """Same arguments and results as `mamba_jax.ops.ssd_state_update`; no argument checks.

    state [b, h, p, n] float32; x, z [b, h, p]; dt [b, h]; A, dt_bias [h]; B, C [b, g, n];
    D [h] or [h, p]. Returns (y [b, h, p] in x.dtype, new_state [b, h, p, n] float32).
    """
    nheads, headdim = x.shape[1], x.shape[2]
    k = nheads // B.shape[1]
    x32 = x.astype(f32)
    step = prep_dt_limited(dt, dt_bias, dt_softplus, dt_limit)  # [b, h]
    Bh = jnp.repeat(B.astype(f32), k, axis=1)[:, :, None, :]  # [b, h, 1, n]
    Ch = jnp.repeat(C.astype(f32), k, axis=1)[:, :, None, :]
    decay = jnp.exp(step * A.astype(f32))[..., None, None]
    new_state = decay * state.astype(f32) + (step[..., None] * x32)[..., None] * Bh
    y = jnp.sum(new_state * Ch, axis=-1)
    y = skip_and_gate(y, x32, per_channel_D(D, nheads, headdim), z)
    return y.astype(x.dtype), new_state


ssd_state_update_xla = ssd_state_update_ref
