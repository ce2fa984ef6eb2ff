"""FFI binding of `selective_state_update` (ffi/selective_state_update/: the CPU and CUDA kernels)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import _ffi


def state_update_call(op, state, x, dt, A, B, C, D, z, dt_bias, state_indices, attrs):
    """The FFI call of a one-step SSM update (selective_state_update, ssd_state_update: the same
    operands); the state buffer becomes new_state, in place under donation."""
    e = _ffi.empty
    return _ffi.call(
        op,
        results={"y": jax.ShapeDtypeStruct(x.shape, x.dtype),
                 "new_state": jax.ShapeDtypeStruct(state.shape, jnp.float32)},
        operands={"state": state, "x": x, "dt": dt, "A": A, "B": B, "C": C,
                  "D": e() if D is None else D, "z": e(x.dtype) if z is None else z,
                  "dt_bias": e() if dt_bias is None else dt_bias,
                  "state_indices": e(jnp.int32) if state_indices is None else state_indices},
        attrs=attrs,
        aliases={"state": "new_state"},
    )


def selective_state_update_ffi(state, x, dt, A, B, C, D, z, dt_bias, state_indices=None, *, dt_softplus):
    """Arguments as checked by `selective_state_update`; the state buffer becomes new_state."""
    return state_update_call("selective_state_update", state, x, dt, A, B, C, D, z, dt_bias, state_indices,
                             {"dt_softplus": bool(dt_softplus)})
