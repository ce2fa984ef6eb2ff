"""FFI binding of `causal_conv1d_update` (ffi/causal_conv1d_update/: the CPU and CUDA kernels)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import _ffi


def causal_conv1d_update_ffi(x, conv_state, weight, bias, state_indices=None, *, silu_act):
    """Arguments as checked by `causal_conv1d_update`; the conv_state buffer becomes new_conv_state."""
    return _ffi.call(
        "causal_conv1d_update",
        results={"y": jax.ShapeDtypeStruct(x.shape, x.dtype),
                 "new_conv_state": jax.ShapeDtypeStruct(conv_state.shape, conv_state.dtype)},
        operands={"x": x, "conv_state": conv_state, "weight": weight,
                  "bias": _ffi.empty(jnp.float32) if bias is None else bias,
                  "state_indices": _ffi.empty(jnp.int32) if state_indices is None else state_indices},
        attrs={"silu": bool(silu_act)},
        aliases={"conv_state": "new_conv_state"},
    )
