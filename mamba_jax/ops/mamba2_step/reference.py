"""Pure-JAX path of `mamba2_step`: the unfused Mamba-2 decode step (conv update, split, SSD state update)
composed from the two ops' own pure-JAX paths, so it equals the unfused step bit for bit.
Shape legend: b batch, c = h p + 2 g n conv channels, h nheads, p headdim, g ngroups, n dstate, w width.
"""

from __future__ import annotations

import math

from ..causal_conv1d_update import causal_conv1d_update
from ..ssd_state_update import ssd_state_update


def split_xbc(xBC, nheads: int, headdim: int, dstate: int):
    """The conv output [b, c] -> (x [b, h, p], B [b, g, n], C [b, g, n]), as Mamba2Mixer splits it."""
    e = nheads * headdim
    gn = (xBC.shape[-1] - e) // 2
    lead = xBC.shape[:-1]
    return (xBC[..., :e].reshape(*lead, nheads, headdim), xBC[..., e:e + gn].reshape(*lead, gn // dstate, dstate),
            xBC[..., e + gn:].reshape(*lead, gn // dstate, dstate))


def mamba2_step_ref(xBC, dt, conv_state, ssm_state, conv_weight, conv_bias, A, D, dt_bias, z, state_indices=None, *,
                    dt_limit=(0.0, math.inf)):
    """xBC [b, c], dt [b, h] -> (y [b, h, p], new_conv_state, new_ssm_state); see `mamba2_step`."""
    _, h, p, n = ssm_state.shape
    xBC, conv_state = causal_conv1d_update(xBC, conv_state, conv_weight, conv_bias, activation="silu",
                                           state_indices=state_indices, implementation="xla")
    x, B, C = split_xbc(xBC, h, p, n)
    y, ssm_state = ssd_state_update(ssm_state, x, dt, A, B, C, D, z, dt_bias, dt_softplus=True, dt_limit=dt_limit,
                                    state_indices=state_indices, implementation="xla")
    return y, conv_state, ssm_state
