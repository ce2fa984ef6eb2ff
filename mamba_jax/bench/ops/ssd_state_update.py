"""ssd_state_update (one Mamba-2 decode step): "ffi" and "xla" at mamba2-2.7b's layer, timed as LOOP
chained steps inside one jitted program with the fp32 state donated (in place). D per head, z, dt_bias
and softplus on. The state's read and write are nearly all of the traffic (state_bytes in the rows)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

import mamba_jax as mj
from mamba_jax.shapes import MAMBA2_2_7B

from ..harness import Case, normal, size_bytes, state_first

f32 = jnp.float32


def unavailable():
    if not hasattr(mj.ops, "ssd_state_update"):
        return "mamba_jax.ops.ssd_state_update does not exist yet"
    return None


def case(model, shape, dtype) -> Case:
    b, H, P, G, N = (shape[k] for k in ("batch", "nheads", "headdim", "ngroups", "dstate"))

    def make_sets(key):
        k = jax.random.split(key, 8)
        return (normal(k[0], (b, H, P), dtype), normal(k[1], (b, H), dtype, 0.5),
                -jnp.exp(jax.random.normal(k[2], (H,)) * 0.5), normal(k[3], (b, G, N), dtype),
                normal(k[4], (b, G, N), dtype), jax.random.normal(k[5], (H,)), normal(k[6], (b, H, P), dtype),
                jax.random.normal(k[7], (H,)) * 0.5 - 4.0)

    state = size_bytes(f32, (b, H, P, N), (b, H, P, N))
    moved = state + size_bytes(dtype, *[(b, H, P)] * 3, (b, H), (b, G, N), (b, G, N)) + size_bytes(f32, *[(H,)] * 3)
    return Case("ssd_state_update", model, dict(shape), jnp.dtype(dtype).name, make_sets,
                carry0=lambda s: jax.random.normal(jax.random.PRNGKey(1), (b, H, P, N)),
                impls={i: state_first(mj.ops.ssd_state_update, i, dt_softplus=True) for i in ("ffi", "xla")},
                kind="loop", bytes_moved=moved,
                extra={"state_bytes": state})


def cases(backend, quick):
    m = MAMBA2_2_7B
    batches = (1, 64) if backend == "gpu" else ((1,) if quick else (1, 8))
    dtype = jnp.bfloat16 if backend == "gpu" else jnp.float32
    return [case(m.name, dict(batch=b, nheads=m.nheads, headdim=m.headdim, ngroups=m.ngroups, dstate=m.dstate), dtype)
            for b in batches]
