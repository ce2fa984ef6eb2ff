"""FFI binding of `linear` (ffi/linear/: the CUDA GEMV kernel; there is no CPU kernel)."""

from __future__ import annotations

import jax

from .. import _ffi


def linear_ffi(x2, w):
    """x2 [rows, K] @ w [K, N] -> [rows, N] in x2's dtype."""
    (y,) = _ffi.call("linear", results={"y": jax.ShapeDtypeStruct((x2.shape[0], w.shape[1]), x2.dtype)},
                     operands={"x": x2, "w": w}, vmap_method="sequential")
    return y
