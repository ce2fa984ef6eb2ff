"""`ssd_scan`: the Mamba-2 (state space duality) scan over a sequence, with packed sequences.

    dt_t = clip(softplus?(dt_t + dt_bias), dt_min, dt_max)                     (per head)
    h_t  = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T      (per head: h [headdim, dstate], A a scalar)
    y_t  = h_t C_t + D x_t;   y_t *= silu(z_t) when z is given
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from .. import _checks as ck
from .._ffi import platform_dispatch
from .._vjp import with_reference_vjp
from .checks import check_bc, check_dt_limit, check_params
from .ffi import ssd_scan_ffi
from .reference import ssd_scan_ref
from .xla import ssd_scan_xla

__all__ = ["ssd_scan", "ssd_scan_ref", "ssd_scan_xla"]

_OP = "ssd_scan"
_ARRAYS = ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_state", "seq_idx")


def _xla(x, dt, A, B, C, D, z, dt_bias, initial_state, seq_idx, *, dt_softplus, dt_limit, chunk_size,
         num_sequences):
    # Always returns (y, final_state), like the kernel (num_sequences 0: no per-sequence states).
    return ssd_scan_xla(x, dt, A, B, C, chunk_size=chunk_size, D=D, z=z, dt_bias=dt_bias,
                        dt_softplus=dt_softplus, dt_limit=dt_limit, initial_state=initial_state,
                        return_final_state=True, seq_idx=seq_idx, num_sequences=num_sequences)


def _dispatch(*arrays, implementation, **static):
    return platform_dispatch(_OP, implementation, lambda *a: ssd_scan_ffi(*a, **static),
                             lambda *a: _xla(*a, **static), *arrays)


def _backward_path(*arrays, implementation, **static):
    # Gradients of the FFI forward come from the chunked pure-JAX path (exact fp32 math, and about
    # seqlen / chunk_size sequential steps instead of seqlen).
    del implementation
    return _xla(*arrays, **static)


_core = with_reference_vjp(_dispatch, _backward_path)


def ssd_scan(x, dt, A, B, C, *, chunk_size=256, D=None, z=None, dt_bias=None, dt_softplus=False,
             dt_limit=(0.0, math.inf), initial_state=None, return_final_state=False, seq_idx=None,
             num_sequences=None, implementation=None):
    """Mamba-2 SSD scan.

    Args:
      x: [batch, seqlen, nheads, headdim] float32 | bfloat16 | float16, the input.
      dt: [batch, seqlen, nheads], same dtype as x, the step size before bias/softplus/clip.
      A: [nheads] float32 (any float dtype is upcast), one decay rate per head, usually negative.
      B, C: [batch, seqlen, ngroups, dstate], same dtype as x; ngroups divides nheads and head i
        reads group i // (nheads // ngroups); 1 <= dstate <= 256.
      chunk_size: positions per chunk of the chunked algorithms (a speed knob: the results are the
        same up to rounding for any value >= 1).
      D: optional [nheads] or [nheads, headdim] (any float dtype, used as float32), skip weight.
      z: optional [batch, seqlen, nheads, headdim], same dtype as x; the output is gated by silu(z).
      dt_bias: optional [nheads] (used as float32), added to dt before the softplus.
      dt_softplus: apply softplus to dt + dt_bias.
      dt_limit: (dt_min, dt_max): the step is clipped to this range after the softplus.
      initial_state: optional [batch, nheads, headdim, dstate] float32, the state before t = 0.
      return_final_state: also return the final state(s), float32.
      seq_idx: optional [batch, seqlen] int32 (any integer dtype is cast), packed sequences: the state
        restarts from zero wherever seq_idx[t] != seq_idx[t - 1], so sequences packed into one row
        never see each other. Expected nondecreasing; initial_state applies before t = 0 only.
      num_sequences: with seq_idx and return_final_state, a static int S: the final state is then
        [batch, S, nheads, headdim, dstate], entry [b, s] the state after the last position whose
        seq_idx == s (zeros where s does not occur; ids outside [0, S) are not returned).
      implementation: None (the FFI kernel where one is built for the platform, else pure JAX),
        "ffi" or "xla".

    Returns:
      y [batch, seqlen, nheads, headdim] in x.dtype, or (y, final_state) when return_final_state:
      final_state [batch, nheads, headdim, dstate] float32 (after the last step) without seq_idx,
      [batch, num_sequences, nheads, headdim, dstate] with it.
    """
    op = _OP
    ck.check_impl(op, implementation)
    labels = "[batch, seqlen, nheads, headdim]"
    batch, seqlen, nheads, headdim = ck.check_rank(op, "x", x, 4, labels)
    ck.check_activation_dtype(op, "x", x)
    if seqlen < 1 or nheads < 1 or headdim < 1:
        raise ValueError(f"{op}: x has shape {np.shape(x)}, expected seqlen, nheads and headdim >= 1")
    ck.check_array(op, "dt", dt, (batch, seqlen, nheads), "[batch, seqlen, nheads]")
    ck.check_activation_dtype(op, "dt", dt, x, "x")
    ngroups, dstate = check_bc(op, B, C, x, (batch, seqlen), "batch, seqlen", nheads)
    A, D, dt_bias = check_params(op, A, D, dt_bias, nheads, headdim)
    if z is not None:
        ck.check_array(op, "z", z, (batch, seqlen, nheads, headdim), labels)
        ck.check_activation_dtype(op, "z", z, x, "x")
    if initial_state is not None:
        ck.check_array(op, "initial_state", initial_state, (batch, nheads, headdim, dstate),
                       "[batch, nheads, headdim, dstate]")
        ck.check_float32(op, "initial_state", initial_state)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"{op}: chunk_size must be an int >= 1, got {chunk_size!r}")
    dt_limit = check_dt_limit(op, dt_limit)
    seq_idx = ck.check_seq_idx(op, seq_idx, num_sequences, return_final_state, batch, seqlen)
    # Without a requested final state, no per-sequence states are computed (0 slots).
    n_seq = int(num_sequences) if (seq_idx is not None and return_final_state) else 0

    x, dt, B, C = map(jnp.asarray, (x, dt, B, C))
    z = None if z is None else jnp.asarray(z)
    initial_state = None if initial_state is None else jnp.asarray(initial_state)
    arrays = (x, dt, A, B, C, D, z, dt_bias, initial_state, seq_idx)
    static = {"dt_softplus": bool(dt_softplus), "dt_limit": dt_limit, "chunk_size": int(chunk_size),
              "num_sequences": n_seq}
    if implementation == "xla":
        # The chunked pure-JAX path (Metal-safe); its gradients come from its own autodiff.
        y, final = _xla(*arrays, **static)
    else:
        y, final = _core(tuple(static.items()) + (("implementation", implementation),), *arrays)
    return (y, final) if return_final_state else y
