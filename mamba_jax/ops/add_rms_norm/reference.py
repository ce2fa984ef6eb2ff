"""Pure-JAX path of `add_rms_norm`: the unfused model code's numerics; also the op's "xla" (Metal-safe) path."""

from __future__ import annotations

from ..elementwise import f32, rms_normalize


def add_rms_norm_ref(h, y, scale, *, eps, out_dtype):
    """h, y [..., F]; scale [F]. Returns (h_new = h + y in h's dtype, RMSNorm(h_new) * scale in out_dtype),
    as the model's block computes them: the add in h's dtype, the norm in float32 on h_new as stored."""
    h_new = h + y.astype(h.dtype)
    x = rms_normalize(h_new.astype(f32), eps) * scale.astype(f32)
    return h_new, x.astype(out_dtype)
