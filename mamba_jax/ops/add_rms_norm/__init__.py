"""`add_rms_norm`: a block's residual add fused with the next block's RMSNorm (decode)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .. import _checks as ck
from .._ffi import platform_dispatch
from .._vjp import with_reference_vjp
from .ffi import add_rms_norm_ffi
from .reference import add_rms_norm_ref

__all__ = ["add_rms_norm", "add_rms_norm_ref"]

_OP = "add_rms_norm"


def _dispatch(h, y, scale, *, eps, out_dtype, implementation):
    ffi_fn = lambda *a: add_rms_norm_ffi(*a, eps=eps, out_dtype=out_dtype)
    xla_fn = lambda *a: add_rms_norm_ref(*a, eps=eps, out_dtype=out_dtype)
    return platform_dispatch(_OP, implementation, ffi_fn, xla_fn, h, y, scale)


def _ref(h, y, scale, *, eps, out_dtype, implementation):
    del implementation
    return add_rms_norm_ref(h, y, scale, eps=eps, out_dtype=out_dtype)


_core = with_reference_vjp(_dispatch, _ref)


def add_rms_norm(h, y, scale, *, eps, out_dtype=None, implementation=None):
    """The residual add of a block and the RMSNorm of the next, in one kernel.

    Args:
      h: [..., F] the residual stream, float32 or y's dtype.
      y: [..., F] float32 | bfloat16 | float16, the mixer's output.
      scale: [F] the norm's scale, float32 or y's dtype (another float dtype is used as float32).
      eps: added to the mean square (a Python float).
      out_dtype: dtype of x, float32 or y's dtype (None: y's dtype).
      implementation: None | "ffi" | "xla".

    Returns:
      (h_new = h + y.astype(h.dtype) in h's dtype,
       x = h_new * rsqrt(mean(h_new^2) + eps) * scale in out_dtype), float32 math, the mean over
      the last axis of h_new as stored in h's dtype: what `h + y` then `RMSNorm` give unfused.
    """
    op = _OP
    ck.check_impl(op, implementation)
    shape = np.shape(y)
    if len(shape) < 1:
        raise ValueError(f"{op}: y has shape {shape} (rank 0), expected rank >= 1: [..., features]")
    ck.check_activation_dtype(op, "y", y)
    act = np.dtype(ck._dtype(y))
    f32 = np.dtype(jnp.float32)
    ck.check_array(op, "h", h, shape, "[..., features] (the shape of y)")
    ck.check_float32_or(op, "h", h, act, "y")
    ck.check_array(op, "scale", scale, (shape[-1],), "[features]")
    if ck._dtype(scale) not in (f32, act):
        scale = ck.as_param_f32(op, "scale", scale)
    out_dtype = act if out_dtype is None else jnp.dtype(out_dtype)
    if out_dtype not in (f32, act):
        raise TypeError(f"{op}: out_dtype is {out_dtype}, expected float32 or {act} (the dtype of y)")
    h, y, scale = jnp.asarray(h), jnp.asarray(y), jnp.asarray(scale)
    if implementation == "xla":
        return add_rms_norm_ref(h, y, scale, eps=float(eps), out_dtype=out_dtype)
    static = (("eps", float(eps)), ("out_dtype", out_dtype), ("implementation", implementation))
    return _core(static, h, y, scale)
