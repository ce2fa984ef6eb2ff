"""Causal depthwise conv1d over a sequence, and its one-step update (decode).

    y_t = act(bias + sum_k weight[:, k] * x_{t - (width - 1) + k})

Inputs before t = 0 come from `initial_state` ([batch, dim, width - 1], oldest first) or are zero.
The conv state is kept in the activation dtype: it only stores past inputs, so that is exact.
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp

from . import _checks as ck
from ._ffi import platform_dispatch
from ._vjp import with_reference_vjp
from .reference import causal_conv1d_ref, causal_conv1d_update_ref

_OP = "causal_conv1d"
_OP_UPDATE = "causal_conv1d_update"


def _or_empty(x, dtype):
    return jnp.zeros((0,), dtype) if x is None else x


def _conv_ffi(x, weight, bias, initial_state, *, silu_act):
    batch, _, dim = x.shape
    width = weight.shape[1]
    call = jax.ffi.ffi_call(
        "mamba_jax_causal_conv1d",
        (jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct((batch, dim, width - 1), x.dtype)),
        vmap_method="broadcast_all",
    )
    return tuple(call(x, weight, _or_empty(bias, jnp.float32), _or_empty(initial_state, x.dtype),
                      silu=bool(silu_act)))


def _conv_dispatch(x, weight, bias, initial_state, *, silu_act, implementation):
    ffi_fn = lambda *a: _conv_ffi(*a, silu_act=silu_act)
    xla_fn = lambda *a: causal_conv1d_ref(*a[:3], silu_act=silu_act, initial_state=a[3])
    return platform_dispatch(implementation, ffi_fn, xla_fn, x, weight, bias, initial_state)


def _conv_ref(x, weight, bias, initial_state, *, silu_act, implementation):
    del implementation
    return causal_conv1d_ref(x, weight, bias, silu_act=silu_act, initial_state=initial_state)


_conv_core = with_reference_vjp(_conv_dispatch, _conv_ref)


def _check_weight(op, weight, bias, dim):
    weight = ck.as_param_f32(op, "weight", weight)
    if weight is None or np.ndim(weight) != 2 or np.shape(weight)[0] != dim:
        raise ValueError(f"{op}: weight has shape {None if weight is None else np.shape(weight)}, "
                         f"expected [dim, width] with dim = {dim}")
    width = np.shape(weight)[1]
    ck.check_width(op, width, np.shape(weight))
    bias = ck.as_param_f32(op, "bias", bias)
    if bias is not None:
        ck.check_array(op, "bias", bias, (dim,), "[dim]")
    return weight, bias, width


def causal_conv1d(x, weight, bias=None, *, activation=None, initial_state=None, return_final_state=False,
                  implementation=None):
    """Causal depthwise conv1d.

    Args:
      x: [batch, seqlen, dim] float32 | bfloat16 | float16.
      weight: [dim, width] (upcast to float32), 2 <= width <= 8.
      bias: optional [dim].
      activation: None or "silu".
      initial_state: optional [batch, dim, width - 1] in x.dtype, the inputs before t = 0, oldest first.
      return_final_state: also return the last width - 1 inputs ([batch, dim, width - 1], x.dtype),
        the conv state that decode continues from.
      implementation: None, "ffi" or "xla" (see `selective_scan`).

    Returns:
      y [batch, seqlen, dim] in x.dtype, or (y, final_state).
    """
    ck.check_impl(_OP, implementation)
    batch, seqlen, dim = ck.check_rank(_OP, "x", x, 3, "[batch, seqlen, dim]")
    ck.check_activation_dtype(_OP, "x", x)
    silu_act = ck.check_activation(_OP, activation)
    weight, bias, width = _check_weight(_OP, weight, bias, dim)
    if initial_state is not None:
        ck.check_array(_OP, "initial_state", initial_state, (batch, dim, width - 1), "[batch, dim, width - 1]")
        ck.check_activation_dtype(_OP, "initial_state", initial_state, x, "x")
        initial_state = jnp.asarray(initial_state)
    x = jnp.asarray(x)
    if implementation == "xla":
        y, final = causal_conv1d_ref(x, weight, bias, silu_act=silu_act, initial_state=initial_state)
    else:
        static = (("silu_act", silu_act), ("implementation", implementation))
        y, final = _conv_core(static, x, weight, bias, initial_state)
    return (y, final) if return_final_state else y


def _update_ffi(x, conv_state, weight, bias, *, silu_act):
    call = jax.ffi.ffi_call(
        "mamba_jax_causal_conv1d_update",
        (jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct(conv_state.shape, conv_state.dtype)),
        vmap_method="broadcast_all",
        input_output_aliases={1: 1},
    )
    return tuple(call(x, conv_state, weight, _or_empty(bias, jnp.float32), silu=bool(silu_act)))


def _update_dispatch(x, conv_state, weight, bias, *, silu_act, implementation):
    ffi_fn = lambda *a: _update_ffi(*a, silu_act=silu_act)
    xla_fn = lambda *a: causal_conv1d_update_ref(*a, silu_act=silu_act)
    return platform_dispatch(implementation, ffi_fn, xla_fn, x, conv_state, weight, bias)


def _update_ref(x, conv_state, weight, bias, *, silu_act, implementation):
    del implementation
    return causal_conv1d_update_ref(x, conv_state, weight, bias, silu_act=silu_act)


_update_core = with_reference_vjp(_update_dispatch, _update_ref)


def causal_conv1d_update(x, conv_state, weight, bias=None, *, activation=None, implementation=None):
    """One step of the causal conv1d (decode).

    Args:
      x: [batch, dim] float32 | bfloat16 | float16, the new input.
      conv_state: [batch, dim, width - 1] in x.dtype, the previous inputs, oldest first. With the
        FFI kernel under jit with conv_state donated, the update happens in place.
      weight: [dim, width]; bias: optional [dim]; activation: None or "silu".

    Returns:
      (y [batch, dim] in x.dtype, new_conv_state [batch, dim, width - 1]).
    """
    op = _OP_UPDATE
    ck.check_impl(op, implementation)
    batch, dim = ck.check_rank(op, "x", x, 2, "[batch, dim]")
    ck.check_activation_dtype(op, "x", x)
    silu_act = ck.check_activation(op, activation)
    weight, bias, width = _check_weight(op, weight, bias, dim)
    ck.check_array(op, "conv_state", conv_state, (batch, dim, width - 1), "[batch, dim, width - 1]")
    ck.check_activation_dtype(op, "conv_state", conv_state, x, "x")
    x, conv_state = jnp.asarray(x), jnp.asarray(conv_state)
    if implementation == "xla":
        return causal_conv1d_update_ref(x, conv_state, weight, bias, silu_act=silu_act)
    static = (("silu_act", silu_act), ("implementation", implementation))
    return _update_core(static, x, conv_state, weight, bias)
