"""FFI binding of `causal_conv1d` (ffi/causal_conv1d/: the CPU and CUDA kernels)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import _ffi


def causal_conv1d_ffi(x, weight, bias, initial_state, seq_idx, *, silu_act):
    """Arguments as checked by `causal_conv1d`. Returns (y, final_state)."""
    batch, _, dim = x.shape
    width = weight.shape[1]
    return _ffi.call(
        "causal_conv1d",
        results={"y": jax.ShapeDtypeStruct(x.shape, x.dtype),
                 "final_state": jax.ShapeDtypeStruct((batch, dim, width - 1), x.dtype)},
        operands={"x": x, "weight": weight, "bias": _ffi.empty(jnp.float32) if bias is None else bias,
                  "initial_state": _ffi.empty(x.dtype) if initial_state is None else initial_state,
                  "seq_idx": _ffi.empty(jnp.int32) if seq_idx is None else seq_idx},
        attrs={"silu": bool(silu_act)},
    )
