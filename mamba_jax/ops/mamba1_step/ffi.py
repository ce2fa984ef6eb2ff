"""FFI binding of `mamba1_step` (ffi/mamba1_step/: the CPU and CUDA kernels)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import _ffi

STEP_CHANNELS = 64  # kStepChannels of ffi/mamba1_step/params.h: channels per block of the kernels


def workspace_floats(batch: int, dim: int, dstate: int, dt_rank: int) -> int:
    """Float32 scratch of one call: x_proj partial sums per channel block, x_proj's output, the conv output."""
    j = dt_rank + 2 * dstate
    return batch * (-(-dim // STEP_CHANNELS) * j + j + dim)


def mamba1_step_ffi(xz, conv_state, ssm_state, conv_weight, conv_bias, x_proj, dt_proj, dt_bias, A, D,
                    state_indices=None):
    """Arguments as checked by `mamba1_step`; both state buffers are updated in place under donation."""
    batch, dim = xz.shape[0], xz.shape[1] // 2
    ws = workspace_floats(batch, dim, A.shape[1], dt_proj.shape[0])
    e = _ffi.empty
    y, conv_state, ssm_state, _ = _ffi.call(
        "mamba1_step",
        results={"y": jax.ShapeDtypeStruct((batch, dim), xz.dtype),
                 "new_conv_state": jax.ShapeDtypeStruct(conv_state.shape, conv_state.dtype),
                 "new_ssm_state": jax.ShapeDtypeStruct(ssm_state.shape, jnp.float32),
                 "workspace": jax.ShapeDtypeStruct((ws,), jnp.float32)},
        operands={"xz": xz, "conv_state": conv_state, "conv_weight": conv_weight,
                  "conv_bias": e() if conv_bias is None else conv_bias, "x_proj": x_proj, "dt_proj": dt_proj,
                  "dt_bias": dt_bias, "A": A, "D": e() if D is None else D, "ssm_state": ssm_state,
                  "state_indices": e(jnp.int32) if state_indices is None else state_indices},
        aliases={"conv_state": "new_conv_state", "ssm_state": "new_ssm_state"},
    )
    return y, conv_state, ssm_state
