"""`mamba1_step`: the Mamba-1 decode step between in_proj and out_proj, fused.

    xi, z = split(xz);  u = silu(conv_update(xi));  dt_low, B, C = split(u @ x_proj);  dt = dt_low @ dt_proj
    h' = exp(softplus(dt + dt_bias) A) h + softplus(..) B u;  y = (<h', C> + D u) * silu(z)

On a GPU it is three kernel launches (ffi/mamba1_step/) where the unfused step runs a conv update, two
projections, a state update and the casts and slices between them; on a CPU one kernel call; elsewhere
(and with implementation="xla") that unfused step in pure JAX. Both states are updated in place under
donation and may be slot pools (`state_indices`).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .. import _checks as ck
from .._ffi import platform_dispatch
from .._pool import check_state_indices
from .._vjp import with_reference_vjp
from .ffi import STEP_CHANNELS, mamba1_step_ffi
from .reference import mamba1_step_ref

__all__ = ["mamba1_step", "mamba1_step_ref", "fits_kernel"]

_OP = "mamba1_step"
_MAX_STAGED_BYTES = 160 * 1024  # kStepMaxStagedBytes of ffi/mamba1_step/args.h


def fits_kernel(dt_rank: int, dstate: int, dtype) -> bool:
    """Whether the CUDA kernel takes this x_proj width (a block of its rows is staged in shared memory)."""
    return STEP_CHANNELS * (dt_rank + 2 * dstate) * np.dtype(dtype).itemsize <= _MAX_STAGED_BYTES


def _dispatch(*arrays, implementation):
    return platform_dispatch(_OP, implementation, mamba1_step_ffi, mamba1_step_ref, *arrays)


def _ref(*arrays, implementation):
    del implementation
    return mamba1_step_ref(*arrays)


_core = with_reference_vjp(_dispatch, _ref)


def mamba1_step(xz, conv_state, ssm_state, conv_weight, conv_bias, x_proj, dt_proj, dt_bias, A, D=None, *,
                state_indices=None, implementation=None):
    """One Mamba-1 decode step from in_proj's output to out_proj's input.

    Args:
      xz: [batch, 2 * d_inner] float32 | bfloat16 | float16: in_proj's output (conv input, then gate z).
      conv_state: [batch, d_inner, width - 1] in xz.dtype; ssm_state: [batch, d_inner, dstate] float32.
      conv_weight: [d_inner, width]; conv_bias: optional [d_inner].
      x_proj: [d_inner, dt_rank + 2 * dstate] (x_proj's kernel); dt_proj: [dt_rank, d_inner] (dt_proj's
        kernel); both are used in xz.dtype.
      dt_bias: [d_inner]; A: [d_inner, dstate] (= -exp(A_log)); D: optional [d_inner].
      state_indices: optional [batch] int32: both states are then pools [n_slots, ...] and row b updates
        slot state_indices[b] (see `selective_state_update`).

    Returns:
      (y [batch, d_inner] in xz.dtype, new_conv_state, new_ssm_state).
    """
    op = _OP
    ck.check_impl(op, implementation)
    batch, two_e = ck.check_rank(op, "xz", xz, 2, "[batch, 2 * d_inner]")
    ck.check_activation_dtype(op, "xz", xz)
    if two_e % 2:
        raise ValueError(f"{op}: xz has shape {np.shape(xz)}: its last axis must be 2 * d_inner (even)")
    e = two_e // 2
    A = ck.as_param_f32(op, "A", A)
    _, n = ck.check_rank(op, "A", A, 2, "[d_inner, dstate]")
    ck.check_array(op, "A", A, (e, n), "[d_inner, dstate]")
    ck.check_dstate(op, n, "A", np.shape(A))
    r, _ = ck.check_rank(op, "dt_proj", dt_proj, 2, "[dt_rank, d_inner]")
    ck.check_array(op, "dt_proj", dt_proj, (r, e), "[dt_rank, d_inner]")
    ck.check_array(op, "x_proj", x_proj, (e, r + 2 * n), "[d_inner, dt_rank + 2 * dstate]")
    for name, w in (("x_proj", x_proj), ("dt_proj", dt_proj)):
        if not jnp.issubdtype(jnp.result_type(w), jnp.floating):
            raise TypeError(f"{op}: {name} has dtype {jnp.result_type(w)}, expected a floating dtype")
    conv_weight, conv_bias, width = ck.check_conv_weight(op, conv_weight, conv_bias, e)
    n_slots = batch if state_indices is None or np.ndim(conv_state) != 3 else int(np.shape(conv_state)[0])
    ck.check_array(op, "conv_state", conv_state, (n_slots, e, width - 1), "[batch, d_inner, width - 1]")
    ck.check_activation_dtype(op, "conv_state", conv_state, xz, "xz")
    ck.check_array(op, "ssm_state", ssm_state, (n_slots, e, n), "[batch, d_inner, dstate]")
    ck.check_float32(op, "ssm_state", ssm_state)
    D, dt_bias, _ = ck.check_skip_bias_gate(op, e, D, "dt_bias", dt_bias, None, (), "", xz, "xz")
    if dt_bias is None:
        raise ValueError(f"{op}: dt_bias is required, expected [d_inner] = ({e},)")
    state_indices = check_state_indices(op, state_indices, batch, n_slots, "conv_state")
    act = jnp.result_type(xz)
    args = (jnp.asarray(xz), jnp.asarray(conv_state), jnp.asarray(ssm_state), conv_weight, conv_bias,
            jnp.asarray(x_proj, act), jnp.asarray(dt_proj, act), dt_bias, A, D, state_indices)
    if not fits_kernel(r, n, act):
        if implementation == "ffi":
            raise ValueError(f"{op}: x_proj has {r + 2 * n} columns, over the CUDA kernel's "
                             f"{_MAX_STAGED_BYTES // (STEP_CHANNELS * np.dtype(act).itemsize)} in {np.dtype(act)}; "
                             "use implementation=None or 'xla'")
        implementation = "xla"
    if implementation == "xla":
        return mamba1_step_ref(*args)
    return _core((("implementation", implementation),), *args)
