"""`selective_scan`: the Mamba-1 selective scan over a sequence.

    dt_t = delta_t + delta_bias, softplus'd if asked
    h_t  = exp(dt_t A) * h_{t-1} + dt_t B_t u_t           (per channel d and state n)
    y_t  = <h_t, C_t> + D u_t;   y_t *= silu(z_t) when z is given
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp

from .. import _checks as ck
from .._ffi import platform_dispatch
from .._vjp import with_reference_vjp
from .ffi import selective_scan_ffi
from .reference import selective_scan_ref
from .xla import selective_scan_xla

__all__ = ["selective_scan", "selective_scan_ref", "selective_scan_xla"]

_OP = "selective_scan"


def _scan_dispatch(u, delta, A, B, C, D, z, delta_bias, initial_state, *, delta_softplus, implementation):
    ffi_fn = lambda *a: selective_scan_ffi(*a, delta_softplus=delta_softplus)
    xla_fn = lambda *a: selective_scan_xla(*a[:8], delta_softplus=delta_softplus, initial_state=a[8])
    return platform_dispatch(_OP, implementation, ffi_fn, xla_fn, u, delta, A, B, C, D, z, delta_bias, initial_state)


def _scan_ref(u, delta, A, B, C, D, z, delta_bias, initial_state, *, delta_softplus, implementation):
    # The backward of the FFI scan is the VJP of the pure-JAX "xla" path (the chunked scan): the same
    # exact fp32 math as selective_scan_ref, but ~T + L/T sequential steps instead of L,
    # which on a GPU is the difference between ~1.4 ms and ~28 ms per forward (B1 L2048 D5120).
    del implementation
    return selective_scan_xla(u, delta, A, B, C, D, z, delta_bias, delta_softplus=delta_softplus,
                              initial_state=initial_state)


_scan_core = with_reference_vjp(_scan_dispatch, _scan_ref)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, *, delta_softplus=False,
                   initial_state=None, return_last_state=False, implementation=None):
    """Mamba-1 selective scan.

    Args:
      u: [batch, seqlen, dim] float32 | bfloat16 | float16, the input.
      delta: [batch, seqlen, dim], same dtype as u, the step size before bias/softplus.
      A: [dim, dstate] float32 (any float dtype is upcast), usually negative.
      B, C: [batch, seqlen, dstate] or [batch, seqlen, ngroups, dstate], same dtype as u;
        channel d reads group d // (dim // ngroups).
      D: optional [dim], skip connection weight.
      z: optional [batch, seqlen, dim], same dtype as u; the output is gated by silu(z).
      delta_bias: optional [dim], added to delta before the softplus.
      delta_softplus: apply softplus to delta + delta_bias.
      initial_state: optional [batch, dim, dstate] float32, the state before t = 0 (default zeros).
      return_last_state: also return the state after the last step ([batch, dim, dstate] float32).
      implementation: None (the FFI kernel where one is built for the platform, else pure JAX),
        "ffi" or "xla".

    Returns:
      y [batch, seqlen, dim] in u.dtype, or (y, last_state) when return_last_state.
    """
    ck.check_impl(_OP, implementation)
    batch, seqlen, dim = ck.check_rank(_OP, "u", u, 3, "[batch, seqlen, dim]")
    ck.check_activation_dtype(_OP, "u", u)
    ck.check_array(_OP, "delta", delta, (batch, seqlen, dim), "[batch, seqlen, dim]")
    ck.check_activation_dtype(_OP, "delta", delta, u, "u")
    A = ck.as_param_f32(_OP, "A", A)
    if A is None or np.ndim(A) != 2 or np.shape(A)[0] != dim:
        raise ValueError(f"{_OP}: A has shape {np.shape(A) if A is not None else None}, expected [dim, dstate] with dim = {dim}")
    dstate = np.shape(A)[1]
    ck.check_dstate(_OP, dstate, "A", np.shape(A))
    B, C = ck.check_bc(_OP, B, C, batch, (seqlen,), dim, dstate)
    ck.check_activation_dtype(_OP, "B", B, u, "u")
    ck.check_activation_dtype(_OP, "C", C, u, "u")
    D, delta_bias, z = ck.check_skip_bias_gate(_OP, dim, D, "delta_bias", delta_bias, z, (batch, seqlen, dim),
                                               "[batch, seqlen, dim]", u, "u")
    if initial_state is not None:
        ck.check_array(_OP, "initial_state", initial_state, (batch, dim, dstate), "[batch, dim, dstate]")
        ck.check_float32(_OP, "initial_state", initial_state)
    u, delta, B, C = map(jnp.asarray, (u, delta, B, C))
    initial_state = None if initial_state is None else jnp.asarray(initial_state)
    args = (u, delta, A, B, C, D, z, delta_bias, initial_state)
    if implementation == "xla":
        # The chunked pure-JAX scan (Metal-safe); its gradients come from its own autodiff.
        y, last = selective_scan_xla(*args[:8], delta_softplus=bool(delta_softplus), initial_state=initial_state)
    else:
        static = (("delta_softplus", bool(delta_softplus)), ("implementation", implementation))
        y, last = _scan_core(static, *args)
    return (y, last) if return_last_state else y
