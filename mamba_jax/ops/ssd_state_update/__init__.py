"""`ssd_state_update`: one step of the Mamba-2 recurrence (decode), in place under donation.

    dt = clip(softplus?(dt + dt_bias), dt_min, dt_max)           (per head)
    h' = exp(dt A) h + dt x B^T;   y = h' C + D x;   y *= silu(z) when z is given
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from .. import _checks as ck
from .._pool import check_state_indices, pool_rows, pooled
from .._ffi import platform_dispatch
from .._vjp import with_reference_vjp
from ..ssd_scan.checks import check_bc, check_dt_limit, check_params
from .ffi import ssd_state_update_ffi
from .xla import ssd_state_update_ref, ssd_state_update_xla

__all__ = ["ssd_state_update", "ssd_state_update_ref", "ssd_state_update_xla"]

_OP = "ssd_state_update"


def _xla(state, *arrays, **static):
    *arrays, state_indices = arrays
    step = lambda s: ssd_state_update_xla(s, *arrays, **static)
    return step(state) if state_indices is None else pooled(step, state, state_indices)


def _dispatch(*arrays, implementation, **static):
    return platform_dispatch(_OP, implementation, lambda *a: ssd_state_update_ffi(*a, **static),
                             lambda *a: _xla(*a, **static), *arrays)


def _backward_path(*arrays, implementation, **static):
    del implementation
    return _xla(*arrays, **static)


_core = with_reference_vjp(_dispatch, _backward_path)


def ssd_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, *, dt_softplus=False,
                     dt_limit=(0.0, math.inf), state_indices=None, implementation=None):
    """One step of the `ssd_scan` recurrence (decode).

    Args:
      state: [batch, nheads, headdim, dstate] float32, the state before this step. With the FFI
        kernel under ``jax.jit(..., donate_argnums=...)`` of the state, the update happens in place.
      x: [batch, nheads, headdim] float32 | bfloat16 | float16.
      dt: [batch, nheads], same dtype as x.
      A: [nheads] (any float dtype, used as float32).
      B, C: [batch, ngroups, dstate], same dtype as x; head i reads group i // (nheads // ngroups).
      D: optional [nheads] or [nheads, headdim]; z: optional [batch, nheads, headdim] (dtype of x);
      dt_bias: optional [nheads]; dt_softplus, dt_limit as in `ssd_scan`.
      state_indices: optional [batch] int32: `state` is then a pool [n_slots, nheads, headdim, dstate]
        and row b updates slot state_indices[b] (see `selective_state_update`).
      implementation: None (the FFI kernel where one is built for the platform, else pure JAX),
        "ffi" or "xla".

    Returns:
      (y [batch, nheads, headdim] in x.dtype, new_state [batch, nheads, headdim, dstate] float32).
    """
    op = _OP
    ck.check_impl(op, implementation)
    _, nheads, headdim, dstate = ck.check_rank(op, "state", state, 4, "[batch, nheads, headdim, dstate]")
    batch, n_slots = pool_rows(op, state, x, state_indices)
    ck.check_float32(op, "state", state)
    labels = "[batch, nheads, headdim]"
    ck.check_array(op, "x", x, (batch, nheads, headdim), labels)
    ck.check_activation_dtype(op, "x", x)
    ck.check_array(op, "dt", dt, (batch, nheads), "[batch, nheads]")
    ck.check_activation_dtype(op, "dt", dt, x, "x")
    ngroups, b_dstate = check_bc(op, B, C, x, (batch,), "batch", nheads)
    if b_dstate != dstate:
        raise ValueError(f"{op}: B has shape {tuple(np.shape(B))}, expected [batch, ngroups, dstate] with "
                         f"dstate = {dstate} (the state's last axis)")
    A, D, dt_bias = check_params(op, A, D, dt_bias, nheads, headdim)
    if z is not None:
        ck.check_array(op, "z", z, (batch, nheads, headdim), labels)
        ck.check_activation_dtype(op, "z", z, x, "x")
    dt_limit = check_dt_limit(op, dt_limit)
    state_indices = check_state_indices(op, state_indices, batch, n_slots)
    state, x, dt, B, C = map(jnp.asarray, (state, x, dt, B, C))
    z = None if z is None else jnp.asarray(z)
    arrays = (state, x, dt, A, B, C, D, z, dt_bias, state_indices)
    static = {"dt_softplus": bool(dt_softplus), "dt_limit": dt_limit}
    if implementation == "xla":
        return _xla(*arrays, **static)
    return _core(tuple(static.items()) + (("implementation", implementation),), *arrays)
