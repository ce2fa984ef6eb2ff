"""`causal_conv1d_update`: one step of the causal depthwise conv1d (decode).

The conv state [batch, dim, width - 1] holds the previous inputs, oldest first, in the activation dtype.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .. import _checks as ck
from .._pool import check_state_indices, pooled
from .._ffi import platform_dispatch
from .._vjp import with_reference_vjp
from .ffi import causal_conv1d_update_ffi
from .reference import causal_conv1d_update_ref

__all__ = ["causal_conv1d_update", "causal_conv1d_update_ref"]

_OP = "causal_conv1d_update"


def _xla(x, conv_state, weight, bias, state_indices, *, silu_act):
    step = lambda s: causal_conv1d_update_ref(x, s, weight, bias, silu_act=silu_act)
    return step(conv_state) if state_indices is None else pooled(step, conv_state, state_indices)


def _update_dispatch(*arrays, silu_act, implementation):
    ffi_fn = lambda *a: causal_conv1d_update_ffi(*a, silu_act=silu_act)
    xla_fn = lambda *a: _xla(*a, silu_act=silu_act)
    return platform_dispatch(_OP, implementation, ffi_fn, xla_fn, *arrays)


def _update_ref(*arrays, silu_act, implementation):
    del implementation
    return _xla(*arrays, silu_act=silu_act)


_update_core = with_reference_vjp(_update_dispatch, _update_ref)


def causal_conv1d_update(x, conv_state, weight, bias=None, *, activation=None, state_indices=None,
                         implementation=None):
    """One step of the causal conv1d (decode).

    Args:
      x: [batch, dim] float32 | bfloat16 | float16, the new input.
      conv_state: [batch, dim, width - 1] in x.dtype, the previous inputs, oldest first. With the
        FFI kernel under jit with conv_state donated, the update happens in place.
      weight: [dim, width]; bias: optional [dim]; activation: None or "silu".
      state_indices: optional [batch] int32: `conv_state` is then a pool [n_slots, dim, width - 1] and
        row b updates slot state_indices[b] (see `selective_state_update`).

    Returns:
      (y [batch, dim] in x.dtype, new_conv_state [batch, dim, width - 1]).
    """
    op = _OP
    ck.check_impl(op, implementation)
    batch, dim = ck.check_rank(op, "x", x, 2, "[batch, dim]")
    ck.check_activation_dtype(op, "x", x)
    silu_act = ck.check_activation(op, activation)
    weight, bias, width = ck.check_conv_weight(op, weight, bias, dim)
    n_slots = batch if state_indices is None or np.ndim(conv_state) != 3 else int(np.shape(conv_state)[0])
    ck.check_array(op, "conv_state", conv_state, (n_slots, dim, width - 1), "[batch, dim, width - 1]")
    ck.check_activation_dtype(op, "conv_state", conv_state, x, "x")
    state_indices = check_state_indices(op, state_indices, batch, n_slots, "conv_state")
    x, conv_state = jnp.asarray(x), jnp.asarray(conv_state)
    if implementation == "xla":
        return _xla(x, conv_state, weight, bias, state_indices, silu_act=silu_act)
    static = (("silu_act", silu_act), ("implementation", implementation))
    return _update_core(static, x, conv_state, weight, bias, state_indices)
