"""FFI binding of `add_rms_norm` (ffi/add_rms_norm/: the CPU and CUDA kernels)."""

from __future__ import annotations

import math

import jax
import numpy as np

from .. import _ffi


def add_rms_norm_ffi(h, y, scale, *, eps, out_dtype):
    """Arguments as checked by `add_rms_norm`; the kernel sees the rows flattened to [rows, F]."""
    shape = y.shape
    flat = (math.prod(shape[:-1]), shape[-1])
    h_new, x = _ffi.call(
        "add_rms_norm",
        results={"h_new": jax.ShapeDtypeStruct(flat, h.dtype), "x": jax.ShapeDtypeStruct(flat, out_dtype)},
        operands={"h": h.reshape(flat), "y": y.reshape(flat), "scale": scale},
        attrs={"eps": np.float32(eps)},
    )
    return h_new.reshape(shape), x.reshape(shape)
