"""selective_state_update (one decode step): "ffi" and "xla", timed as LOOP chained steps inside one
jitted program with the fp32 state donated (in place), as a decode loop runs them. D, z, dt_bias and
softplus on. The state's read and write are nearly all of the traffic (state_bytes in the rows)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

import mamba_jax as mj
from mamba_jax.shapes import MAMBA_130M, MAMBA_2_8B

from ..harness import Case, normal, size_bytes, state_first

f32 = jnp.float32


def unavailable():
    return None


def case(model, shape, dtype) -> Case:
    b, d, n = shape["batch"], shape["dim"], shape["dstate"]

    def make_sets(key):
        k = jax.random.split(key, 8)
        return (normal(k[0], (b, d), dtype), normal(k[1], (b, d), dtype, 0.5),
                -jnp.exp(jax.random.normal(k[2], (d, n)) * 0.5), normal(k[3], (b, n), dtype),
                normal(k[4], (b, n), dtype), jax.random.normal(k[5], (d,)), normal(k[6], (b, d), dtype),
                jax.random.normal(k[7], (d,)) * 0.5 - 4.0)

    moved = size_bytes(dtype, *[(b, d)] * 4, (b, n), (b, n)) + size_bytes(f32, (b, d, n), (b, d, n), (d, n), (d,), (d,))
    return Case("selective_state_update", model, dict(shape), jnp.dtype(dtype).name, make_sets,
                carry0=lambda s: jax.random.normal(jax.random.PRNGKey(1), (b, d, n)),
                impls={i: state_first(mj.ops.selective_state_update, i, dt_softplus=True) for i in ("ffi", "xla")},
                kind="loop", bytes_moved=moved,
                extra={"state_bytes": size_bytes(f32, (b, d, n), (b, d, n))})


def cases(backend, quick):
    if backend == "gpu":
        m, batches, dtype = MAMBA_2_8B, ((1, 256) if quick else (1, 64, 256)), jnp.bfloat16
    else:
        m, batches, dtype = MAMBA_130M, ((1,) if quick else (1, 64)), jnp.float32
    return [case(m.name, dict(batch=b, dim=m.dim, dstate=m.dstate), dtype) for b in batches]
