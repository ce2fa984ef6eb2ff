"""causal_conv1d (prefill): "ffi", "xla", and "copy", y = -x: one read of x and one write of y, the
traffic floor of the conv (its GB/s is the ceiling to compare the conv's GB/s with). Bias and silu on,
the conv state chained from call to call as initial_state, the final state returned."""

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
        y, st = mj.ops.causal_conv1d(x, w, b, activation="silu", initial_state=st, return_final_state=True,
                                     implementation=impl)
        return st, y
    return call


def _copy(st, x, w, b):
    return st, -x


def case(model, shape, dtype) -> Case:
    b, l, d, w = shape["batch"], shape["seqlen"], shape["dim"], shape["width"]

    def make_sets(key):
        k = jax.random.split(key, 3)
        return (normal(k[0], (b, l, d), dtype), jax.random.normal(k[1], (d, w)) * 0.5, jax.random.normal(k[2], (d,)))

    moved = size_bytes(dtype, (b, l, d), (b, l, d), (b, d, w - 1), (b, d, w - 1)) + size_bytes(jnp.float32, (d, w), (d,))
    return Case("causal_conv1d", model, dict(shape), jnp.dtype(dtype).name, make_sets,
                carry0=lambda s: jnp.full((b, d, w - 1), 0.1, dtype),
                impls={"ffi": _lib("ffi"), "xla": _lib("xla"), "copy": _copy}, floors=("copy",), bytes_moved=moved)


def cases(backend, quick):
    if backend == "gpu":
        sizes, dtype = [(4, 2048, MAMBA_2_8B)] + ([] if quick else [(1, 2048, MAMBA_130M)]), jnp.bfloat16
    else:
        sizes, dtype = ([(1, 256, MAMBA_130M)] if quick else [(1, 2048, MAMBA_130M)]), jnp.float32
    return [case(m.name, dict(batch=b, seqlen=l, dim=m.dim, width=m.d_conv), dtype) for b, l, m in sizes]
