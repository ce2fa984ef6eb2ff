"""FFI binding of `selective_scan` (ffi/selective_scan/: the CPU and CUDA kernels)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import _ffi


def selective_scan_ffi(u, delta, A, B, C, D, z, delta_bias, initial_state, *, delta_softplus):
    """Arguments as checked by `selective_scan` (B, C [b, l, g, n]; absent optionals None)."""
    batch, _, dim = u.shape
    e = _ffi.empty
    return _ffi.call(
        "selective_scan",
        results={"y": jax.ShapeDtypeStruct(u.shape, u.dtype),
                 "last_state": jax.ShapeDtypeStruct((batch, dim, A.shape[1]), jnp.float32)},
        operands={"u": u, "delta": delta, "A": A, "B": B, "C": C,
                  "D": e() if D is None else D, "z": e(u.dtype) if z is None else z,
                  "delta_bias": e() if delta_bias is None else delta_bias,
                  "initial_state": e() if initial_state is None else initial_state},
        attrs={"delta_softplus": bool(delta_softplus)},
    )
