"""FFI binding of `ssd_state_update` (ffi/ssd_state_update/: the CPU and CUDA kernels)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .. import _ffi


def ssd_state_update_ffi(state, x, dt, A, B, C, D, z, dt_bias, state_indices=None, *, dt_softplus, dt_limit):
    """Arguments as checked by `ssd_state_update` (D already [nheads, headdim] float32; absent
    optionals None). The state operand is aliased to new_state: in place under donation."""
    e = _ffi.empty
    return _ffi.call(
        "ssd_state_update",
        results={"y": jax.ShapeDtypeStruct(x.shape, x.dtype),
                 "new_state": jax.ShapeDtypeStruct(state.shape, jnp.float32)},
        operands={"state": state, "x": x, "dt": dt, "A": A, "B": B, "C": C,
                  "D": e() if D is None else D, "z": e(x.dtype) if z is None else z,
                  "dt_bias": e() if dt_bias is None else dt_bias,
                  "state_indices": e(jnp.int32) if state_indices is None else state_indices},
        attrs={"dt_softplus": bool(dt_softplus), "dt_min": np.float32(dt_limit[0]),
               "dt_max": np.float32(dt_limit[1])},
        aliases={"state": "new_state"},
    )
