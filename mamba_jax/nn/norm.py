"""RMSNorm, optionally per group of channels and gated by silu(z) (Mamba-2's norm before out_proj)."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from .. import ops
from ..ops.elementwise import rms_normalize, silu

f32 = jnp.float32


class RMSNorm(nnx.Module):
    """y = x / sqrt(mean(x^2) + eps) * scale, computed in float32, returned in `dtype` (default x.dtype).

    With `group_size`, the mean runs over each group of `group_size` consecutive channels (Mamba-2 with
    ngroups > 1). With a gate z (same shape as x): y = norm(x * silu(z)) * scale, or, when
    `norm_before_gate`, norm(x) * scale * silu(z).

    Args:
      features: channels F (the last axis of x); the parameter is `scale` [F], initialised to ones.
      eps: added to the mean square.
      group_size: channels per group (must divide F); None: one group of F.
      norm_before_gate: where the gate applies, as above.
      dtype: output dtype (None: x's dtype).
      param_dtype: dtype of `scale`.
    """

    # Set by mamba_jax.sharding on the per-device copy of a tensor-parallel Mamba-2 model whose norm
    # groups straddle devices: each group then spans `shards_per_group` consecutive devices of mesh axis
    # `tp_axis`, and this device holds one part of one group.
    tp_axis = None
    shards_per_group = 1

    def __init__(self, features: int, *, eps: float = 1e-5, group_size: Optional[int] = None,
                 norm_before_gate: bool = False, dtype=None, param_dtype=f32):
        group_size = features if group_size is None else group_size
        if features % group_size:
            raise ValueError(f"RMSNorm: group_size {group_size} does not divide features {features}")
        self.eps = eps
        self.group_size = group_size
        self.norm_before_gate = norm_before_gate
        self.dtype = dtype
        self.scale = nnx.Param(jnp.ones((features,), param_dtype))

    def __call__(self, x, gate=None):
        """x [..., F] (gate: [..., F] or None) -> [..., F]."""
        out_dtype = self.dtype or x.dtype
        x32 = x.astype(f32)
        if gate is not None and not self.norm_before_gate:
            x32 = x32 * silu(gate.astype(f32))
        hook = self._group_mean_across_shards if self.shards_per_group > 1 else None
        y = rms_normalize(x32, self.eps, self.group_size, hook) * self.scale[...].astype(f32)
        if gate is not None and self.norm_before_gate:
            y = y * silu(gate.astype(f32))
        return y.astype(out_dtype)

    def add_and_norm(self, h, y, residual_dtype, implementation=None):
        """(h' = h.astype(residual_dtype) + y.astype(residual_dtype), self(h')): a block's residual add
        and this norm, as one `ops.add_rms_norm` call where that op applies (one group, not split
        across devices, y of an activation dtype, h' and the output float32 or y's dtype); its "xla"
        path gives exactly what the unfused code below does."""
        h = h.astype(residual_dtype)
        out_dtype = jnp.dtype(self.dtype or h.dtype)
        act = jnp.dtype(y.dtype)
        fusable = (self.group_size == h.shape[-1] and self.shards_per_group == 1
                   and act in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
                   and h.dtype in (jnp.dtype(f32), act) and out_dtype in (jnp.dtype(f32), act))
        if fusable:
            return ops.add_rms_norm(h, y, self.scale[...], eps=self.eps, out_dtype=out_dtype,
                                    implementation=implementation)
        h = h + y.astype(residual_dtype)
        return h, self(h)

    def _group_mean_across_shards(self, ms):
        """ms [..., 1, 1], this device's mean square of its part of its group -> the whole group's
        (the parts are equal in size): one all-reduce of (groups) values per row, each device adding
        its value into its group's slot."""
        k = jax.lax.axis_index(self.tp_axis) // self.shards_per_group
        groups = jax.lax.axis_size(self.tp_axis) // self.shards_per_group
        slots = ms * jax.nn.one_hot(k, groups, dtype=ms.dtype)
        total = jax.lax.psum(slots, self.tp_axis)
        return jax.lax.dynamic_index_in_dim(total, k, axis=-1) / self.shards_per_group
