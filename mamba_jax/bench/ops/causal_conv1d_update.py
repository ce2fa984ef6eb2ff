"""causal_conv1d_update (one decode step): "ffi" and "xla", timed as LOOP chained steps inside one
jitted program with the conv state donated (in place), as a decode loop runs them. Bias and silu on."""

from __future__ import annotations

import jax
import jax.numpy as jnp

import mamba_jax as mj
from mamba_jax.shapes import MAMBA_130M, MAMBA_2_8B

from ..harness import Case, normal, size_bytes


def unavailable():
    return None


def _lib(impl):
    def call(st, x, w, b):
        y, st = mj.ops.causal_conv1d_update(x, st, w, b, activation="silu", implementation=impl)
        return st, y
    return call


def case(model, shape, dtype) -> Case:
    b, d, w = shape["batch"], shape["dim"], shape["width"]

    def make_sets(key):
        k = jax.random.split(key, 3)
        return (normal(k[0], (b, d), dtype), jax.random.normal(k[1], (d, w)) * 0.5, jax.random.normal(k[2], (d,)))

    moved = size_bytes(dtype, (b, d), (b, d), (b, d, w - 1), (b, d, w - 1)) + size_bytes(jnp.float32, (d, w), (d,))
    return Case("causal_conv1d_update", model, dict(shape), jnp.dtype(dtype).name, make_sets,
                carry0=lambda s: normal(jax.random.PRNGKey(1), (b, d, w - 1), dtype),
                impls={"ffi": _lib("ffi"), "xla": _lib("xla")}, kind="loop", bytes_moved=moved)


def cases(backend, quick):
    if backend == "gpu":
        m, batches, dtype = MAMBA_2_8B, ((1, 256) if quick else (1, 64, 256)), jnp.bfloat16
    else:
        m, batches, dtype = MAMBA_130M, ((1,) if quick else (1, 64)), jnp.float32
    return [case(m.name, dict(batch=b, dim=m.dim, width=m.d_conv), dtype) for b in batches]
