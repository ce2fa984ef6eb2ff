"""`causal_conv1d`: causal depthwise conv1d over a sequence.

    y_t = act(bias + sum_k weight[:, k] * x_{t - (width - 1) + k})

Inputs before t = 0 come from `initial_state` ([batch, dim, width - 1], oldest first) or are zero.
The conv state is kept in the activation dtype: it only stores past inputs, so that is exact.
"""

from __future__ import annotations

import jax.numpy as jnp

from .. import _checks as ck
from .._ffi import platform_dispatch
from .._vjp import with_reference_vjp
from .ffi import causal_conv1d_ffi
from .reference import causal_conv1d_ref, packed_final_states

__all__ = ["causal_conv1d", "causal_conv1d_ref"]

_OP = "causal_conv1d"


def _conv_dispatch(x, weight, bias, initial_state, seq_idx, *, silu_act, implementation):
    ffi_fn = lambda *a: causal_conv1d_ffi(*a, silu_act=silu_act)
    xla_fn = lambda *a: causal_conv1d_ref(*a[:3], silu_act=silu_act, initial_state=a[3], seq_idx=a[4])
    return platform_dispatch(_OP, implementation, ffi_fn, xla_fn, x, weight, bias, initial_state, seq_idx)


def _conv_ref(x, weight, bias, initial_state, seq_idx, *, silu_act, implementation):
    del implementation
    return causal_conv1d_ref(x, weight, bias, silu_act=silu_act, initial_state=initial_state, seq_idx=seq_idx)


_conv_core = with_reference_vjp(_conv_dispatch, _conv_ref)


def causal_conv1d(x, weight, bias=None, *, activation=None, initial_state=None, return_final_state=False,
                  seq_idx=None, num_sequences=None, implementation=None):
    """Causal depthwise conv1d.

    Args:
      x: [batch, seqlen, dim] float32 | bfloat16 | float16.
      weight: [dim, width] (upcast to float32), 2 <= width <= 8.
      bias: optional [dim].
      activation: None or "silu".
      initial_state: optional [batch, dim, width - 1] in x.dtype, the inputs before t = 0, oldest first.
      return_final_state: also return the last width - 1 inputs ([batch, dim, width - 1], x.dtype),
        the conv state that decode continues from.
      seq_idx: optional [batch, seqlen] int32 (any integer dtype is cast): several sequences packed in one row. A tap reads no input
        across a change of seq_idx (zero instead); the inputs before t = 0 (initial_state) belong to the
        sequence at t = 0. Per-sequence final states need seq_idx nondecreasing along seqlen.
      num_sequences: with seq_idx and return_final_state, the final state is returned per sequence:
        [batch, num_sequences, dim, width - 1], entry s the conv state sequence s ends with (zeros
        where s does not occur in the row).
      implementation: None, "ffi" or "xla" (see `selective_scan`).

    Returns:
      y [batch, seqlen, dim] in x.dtype, or (y, final_state).
    """
    ck.check_impl(_OP, implementation)
    batch, seqlen, dim = ck.check_rank(_OP, "x", x, 3, "[batch, seqlen, dim]")
    ck.check_activation_dtype(_OP, "x", x)
    silu_act = ck.check_activation(_OP, activation)
    weight, bias, width = ck.check_conv_weight(_OP, weight, bias, dim)
    if initial_state is not None:
        ck.check_array(_OP, "initial_state", initial_state, (batch, dim, width - 1), "[batch, dim, width - 1]")
        ck.check_activation_dtype(_OP, "initial_state", initial_state, x, "x")
        initial_state = jnp.asarray(initial_state)
    seq_idx = ck.check_seq_idx(_OP, seq_idx, num_sequences, return_final_state, batch, seqlen)
    x = jnp.asarray(x)
    if implementation == "xla":
        y, final = causal_conv1d_ref(x, weight, bias, silu_act=silu_act, initial_state=initial_state,
                                     seq_idx=seq_idx)
    else:
        static = (("silu_act", silu_act), ("implementation", implementation))
        y, final = _conv_core(static, x, weight, bias, initial_state, seq_idx)
    if not return_final_state:
        return y
    if seq_idx is not None:
        final = packed_final_states(x, initial_state, seq_idx, num_sequences, width)
    return y, final
