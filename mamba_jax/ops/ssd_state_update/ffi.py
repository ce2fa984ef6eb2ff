"""FFI binding of `ssd_state_update` (ffi/ssd_state_update/: the CPU and CUDA kernels)."""

from __future__ import annotations

import numpy as np

from ..selective_state_update.ffi import state_update_call


def ssd_state_update_ffi(state, x, dt, A, B, C, D, z, dt_bias, state_indices=None, *, dt_softplus, dt_limit):
    """Arguments as checked by `ssd_state_update` (D already [nheads, headdim] float32; absent
    optionals None). The state operand is aliased to new_state: in place under donation."""
    return state_update_call("ssd_state_update", state, x, dt, A, B, C, D, z, dt_bias, state_indices,
                             {"dt_softplus": bool(dt_softplus), "dt_min": np.float32(dt_limit[0]),
                              "dt_max": np.float32(dt_limit[1])})
