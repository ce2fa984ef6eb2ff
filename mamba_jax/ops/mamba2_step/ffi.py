"""FFI binding of `mamba2_step` (ffi/mamba2_step/: the CPU and CUDA kernels)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .. import _ffi


def mamba2_step_ffi(xBC, dt, conv_state, ssm_state, conv_weight, conv_bias, A, D, dt_bias, z, state_indices=None, *,
                    dt_limit):
    """Arguments as checked by `mamba2_step` (D already [nheads, headdim]; absent optionals None); both state
    buffers are updated in place under donation. The workspace result holds the conv output [b, c]."""
    batch, (_, h, p, _) = xBC.shape[0], ssm_state.shape
    e = _ffi.empty
    y, conv_state, ssm_state, _ = _ffi.call(
        "mamba2_step",
        results={"y": jax.ShapeDtypeStruct((batch, h, p), xBC.dtype),
                 "new_conv_state": jax.ShapeDtypeStruct(conv_state.shape, conv_state.dtype),
                 "new_ssm_state": jax.ShapeDtypeStruct(ssm_state.shape, jnp.float32),
                 "workspace": jax.ShapeDtypeStruct(xBC.shape, xBC.dtype)},
        operands={"xBC": xBC, "dt": dt, "conv_state": conv_state, "ssm_state": ssm_state, "conv_weight": conv_weight,
                  "conv_bias": e() if conv_bias is None else conv_bias, "A": A, "D": e() if D is None else D,
                  "dt_bias": e() if dt_bias is None else dt_bias, "z": e(xBC.dtype) if z is None else z,
                  "state_indices": e(jnp.int32) if state_indices is None else state_indices},
        attrs={"dt_min": np.float32(dt_limit[0]), "dt_max": np.float32(dt_limit[1])},
        aliases={"conv_state": "new_conv_state", "ssm_state": "new_ssm_state"},
    )
    return y, conv_state, ssm_state
