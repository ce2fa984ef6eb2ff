"""`mamba2_step`: the Mamba-2 decode step between in_proj and the gated norm, fused.

    xBC' = silu(conv_update(xBC));  x, B, C = split(xBC')          (xBC' rounded to the activation dtype)
    dt' = clip(softplus(dt + dt_bias), *dt_limit);  h' = exp(dt' A) h + dt' x B^T  (per head)
    y = h' C + D x;  y *= silu(z) when z is given

Exactly `causal_conv1d_update(..., activation="silu")` followed by `ssd_state_update(..., dt_softplus=True)`
on the split, as Mamba2Mixer.step runs them unfused. On a GPU it is one custom call of two kernels (the
state update a programmatic dependent of the conv); on a CPU one custom call running the two ops' CPU
kernels in turn; elsewhere (and with implementation="xla") the two ops' pure-JAX paths. Both states are
updated in place under donation and may be slot pools (`state_indices`).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from .. import _checks as ck
from .._ffi import platform_dispatch
from .._pool import check_state_indices
from .._vjp import with_reference_vjp
from ..ssd_scan.checks import check_dt_limit, check_params
from .ffi import mamba2_step_ffi
from .reference import mamba2_step_ref, split_xbc

__all__ = ["mamba2_step", "mamba2_step_ref", "split_xbc"]

_OP = "mamba2_step"


def _dispatch(*arrays, implementation, dt_limit):
    return platform_dispatch(_OP, implementation, lambda *a: mamba2_step_ffi(*a, dt_limit=dt_limit),
                             lambda *a: mamba2_step_ref(*a, dt_limit=dt_limit), *arrays)


def _ref(*arrays, implementation, dt_limit):
    del implementation
    return mamba2_step_ref(*arrays, dt_limit=dt_limit)


_core = with_reference_vjp(_dispatch, _ref)


def _check_groups(op, xBC, nheads, headdim, dstate) -> int:
    """ngroups from xBC's channels c = nheads * headdim + 2 * ngroups * dstate."""
    c = np.shape(xBC)[-1]
    rest = c - nheads * headdim
    ngroups = rest // (2 * dstate) if rest > 0 and rest % (2 * dstate) == 0 else 0
    if ngroups < 1 or nheads % ngroups:
        raise ValueError(f"{op}: xBC has shape {tuple(np.shape(xBC))}, expected [batch, nheads * headdim + 2 * ngroups "
                         f"* dstate] with nheads * headdim = {nheads * headdim} and dstate = {dstate} (from ssm_state) "
                         f"and ngroups >= 1 dividing nheads = {nheads}")
    return ngroups


def mamba2_step(xBC, dt, conv_state, ssm_state, conv_weight, conv_bias, A, D=None, dt_bias=None, z=None, *,
                dt_limit=(0.0, math.inf), state_indices=None, implementation=None):
    """One Mamba-2 decode step from in_proj's output to the gated norm's input.

    Args:
      xBC: [batch, conv_dim] float32 | bfloat16 | float16: in_proj's x, B, C columns, conv_dim =
        nheads * headdim + 2 * ngroups * dstate (ngroups follows from it; head i reads group
        i // (nheads // ngroups)).
      dt: [batch, nheads] in xBC.dtype: in_proj's dt columns (before dt_bias and the softplus).
      conv_state: [batch, conv_dim, width - 1] in xBC.dtype (previous conv inputs, oldest first).
      ssm_state: [batch, nheads, headdim, dstate] float32.
      conv_weight: [conv_dim, width]; conv_bias: [conv_dim] or None.
      A: [nheads] (= -exp(A_log)); D: optional [nheads] or [nheads, headdim]; dt_bias: optional [nheads];
        all used as float32.
      z: optional [batch, nheads, headdim] in xBC.dtype: the gate y * silu(z) (the model passes it only
        without a gated norm).
      dt_limit: (dt_min, dt_max), the clip of dt after the softplus.
      state_indices: optional [batch] int32: both states are then pools [n_slots, ...] and row b updates
        slot state_indices[b] (see `selective_state_update`).
      implementation: None (the FFI kernel where one is built for the platform, else pure JAX), "ffi", "xla".

    Returns:
      (y [batch, nheads, headdim] in xBC.dtype, new_conv_state, new_ssm_state).
    """
    op = _OP
    ck.check_impl(op, implementation)
    batch, c = ck.check_rank(op, "xBC", xBC, 2, "[batch, conv_dim]")
    ck.check_activation_dtype(op, "xBC", xBC)
    n_slots, nheads, headdim, dstate = ck.check_rank(op, "ssm_state", ssm_state, 4, "[batch, nheads, headdim, dstate]")
    if state_indices is None:
        ck.check_array(op, "ssm_state", ssm_state, (batch, None, None, None), "[batch, nheads, headdim, dstate]")
    if nheads < 1 or headdim < 1:
        raise ValueError(f"{op}: ssm_state has shape {tuple(np.shape(ssm_state))}: nheads and headdim must be >= 1")
    ck.check_float32(op, "ssm_state", ssm_state)
    ck.check_dstate(op, dstate, "ssm_state", np.shape(ssm_state))
    _check_groups(op, xBC, nheads, headdim, dstate)
    ck.check_array(op, "dt", dt, (batch, nheads), "[batch, nheads]")
    ck.check_activation_dtype(op, "dt", dt, xBC, "xBC")
    conv_weight = ck.as_param_f32(op, "conv_weight", conv_weight)
    conv_bias = ck.as_param_f32(op, "conv_bias", conv_bias)
    ck.check_rank(op, "conv_weight", conv_weight, 2, "[conv_dim, width]")
    ck.check_array(op, "conv_weight", conv_weight, (c, None), "[conv_dim, width]")
    if conv_bias is not None:
        ck.check_array(op, "conv_bias", conv_bias, (c,), "[conv_dim]")
    conv_weight, conv_bias, width = ck.check_conv_weight(op, conv_weight, conv_bias, c)
    ck.check_array(op, "conv_state", conv_state, (n_slots, c, width - 1), "[batch, conv_dim, width - 1]")
    ck.check_activation_dtype(op, "conv_state", conv_state, xBC, "xBC")
    A, D, dt_bias = check_params(op, A, D, dt_bias, nheads, headdim)
    if z is not None:
        ck.check_array(op, "z", z, (batch, nheads, headdim), "[batch, nheads, headdim]")
        ck.check_activation_dtype(op, "z", z, xBC, "xBC")
        z = jnp.asarray(z)
    dt_limit = check_dt_limit(op, dt_limit)
    state_indices = check_state_indices(op, state_indices, batch, n_slots, "ssm_state")
    args = (jnp.asarray(xBC), jnp.asarray(dt), jnp.asarray(conv_state), jnp.asarray(ssm_state), conv_weight, conv_bias,
            A, D, dt_bias, z, state_indices)
    if implementation == "xla":
        return mamba2_step_ref(*args, dt_limit=dt_limit)
    return _core((("dt_limit", dt_limit), ("implementation", implementation)), *args)
