"""`selective_state_update`: one step of the Mamba-1 selective-scan recurrence (decode).

    dt = dt + dt_bias, softplus'd if asked;  h' = exp(dt A) * h + dt B x;  y = <h', C> + D x (* silu(z))
"""

from __future__ import annotations

import numpy as np
import jax.numpy as jnp

from .. import _checks as ck
from .._pool import check_state_indices, pool_rows, pooled
from .._ffi import platform_dispatch
from .._vjp import with_reference_vjp
from .ffi import selective_state_update_ffi
from .reference import selective_state_update_ref

__all__ = ["selective_state_update", "selective_state_update_ref"]

_OP = "selective_state_update"


def _xla(state, x, dt, A, B, C, D, z, dt_bias, state_indices, *, dt_softplus):
    step = lambda s: selective_state_update_ref(s, x, dt, A, B, C, D, z, dt_bias, dt_softplus=dt_softplus)
    return step(state) if state_indices is None else pooled(step, state, state_indices)


def _update_dispatch(*arrays, dt_softplus, implementation):
    ffi_fn = lambda *a: selective_state_update_ffi(*a, dt_softplus=dt_softplus)
    xla_fn = lambda *a: _xla(*a, dt_softplus=dt_softplus)
    return platform_dispatch(_OP, implementation, ffi_fn, xla_fn, *arrays)


def _update_ref(*arrays, dt_softplus, implementation):
    del implementation
    return _xla(*arrays, dt_softplus=dt_softplus)


_update_core = with_reference_vjp(_update_dispatch, _update_ref)


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, *, dt_softplus=False,
                           state_indices=None, implementation=None):
    """One step of the selective-scan recurrence (decode).

    Args:
      state: [batch, dim, dstate] float32, the state before this step. With the FFI kernel under
        ``jax.jit(..., donate_argnums=...)`` of the state, the update happens in place.
      x, dt: [batch, dim] float32 | bfloat16 | float16 (same dtype).
      A: [dim, dstate]; B, C: [batch, dstate] or [batch, ngroups, dstate] (dtype of x);
      D, dt_bias: optional [dim]; z: optional [batch, dim]; dt_softplus as in `selective_scan`.
      state_indices: optional [batch] int32: `state` is then a pool [n_slots, dim, dstate] and row b
        updates slot state_indices[b] (in place under donation; the other slots are kept). Slots
        must be distinct and in range: checked when the values are known before the call (a
        ValueError), else a row with an out-of-range slot writes no state and gets y = 0.

    Returns:
      (y [batch, dim] in x.dtype, new_state [batch, dim, dstate] (or the pool) float32).
    """
    op = _OP
    ck.check_impl(op, implementation)
    _, dim, dstate = ck.check_rank(op, "state", state, 3, "[batch, dim, dstate]")
    batch, n_slots = pool_rows(op, state, x, state_indices)
    ck.check_float32(op, "state", state)
    ck.check_dstate(op, dstate, "state", np.shape(state))
    ck.check_array(op, "x", x, (batch, dim), "[batch, dim]")
    ck.check_activation_dtype(op, "x", x)
    ck.check_array(op, "dt", dt, (batch, dim), "[batch, dim]")
    ck.check_activation_dtype(op, "dt", dt, x, "x")
    A = ck.as_param_f32(op, "A", A)
    ck.check_array(op, "A", A, (dim, dstate), "[dim, dstate]")
    B, C = ck.check_bc(op, B, C, batch, (), dim, dstate)
    ck.check_activation_dtype(op, "B", B, x, "x")
    ck.check_activation_dtype(op, "C", C, x, "x")
    D, dt_bias, z = ck.check_skip_bias_gate(op, dim, D, "dt_bias", dt_bias, z, (batch, dim), "[batch, dim]", x, "x")
    state_indices = check_state_indices(op, state_indices, batch, n_slots)
    state, x, dt, B, C = map(jnp.asarray, (state, x, dt, B, C))
    args = (state, x, dt, A, B, C, D, z, dt_bias, state_indices)
    if implementation == "xla":
        return _xla(*args, dt_softplus=bool(dt_softplus))
    static = (("dt_softplus", bool(dt_softplus)), ("implementation", implementation))
    return _update_core(static, *args)
