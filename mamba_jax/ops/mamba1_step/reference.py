"""Pure-JAX path of `mamba1_step`: the unfused decode step (conv update, x_proj, dt_proj, state update)
composed from the ops' own pure-JAX paths, rounding where the model's unfused step rounds.
Shape legend: b batch, e d_inner, n dstate, r dt_rank, j = r + 2n.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..causal_conv1d_update import causal_conv1d_update
from ..elementwise import f32
from ..selective_state_update import selective_state_update


def mamba1_step_ref(xz, conv_state, ssm_state, conv_weight, conv_bias, x_proj, dt_proj, dt_bias, A, D,
                    state_indices=None):
    """xz [b, 2e] -> (y [b, e] gated, new_conv_state, new_ssm_state); see `mamba1_step`."""
    e = xz.shape[-1] // 2
    r, n = dt_proj.shape[0], A.shape[1]
    act = xz.dtype
    hi = jax.lax.Precision.HIGHEST
    xc, conv_state = causal_conv1d_update(xz[:, :e], conv_state, conv_weight, conv_bias, activation="silu",
                                          state_indices=state_indices, implementation="xla")
    x_dbl = jnp.matmul(xc, x_proj.astype(act), precision=hi, preferred_element_type=f32).astype(act)
    dt = jnp.matmul(x_dbl[:, :r], dt_proj.astype(act), precision=hi, preferred_element_type=f32).astype(act)
    y, ssm_state = selective_state_update(ssm_state, xc, dt, A, x_dbl[:, r:r + n], x_dbl[:, r + n:], D, xz[:, e:],
                                          dt_bias, dt_softplus=True, state_indices=state_indices,
                                          implementation="xla")
    return y, conv_state, ssm_state
