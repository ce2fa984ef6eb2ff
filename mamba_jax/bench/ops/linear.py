"""linear (decode projections, x [rows, K] @ w [K, N]): "ffi" (mamba_jax's GEMV where it applies: CUDA,
at most 8 rows) and "xla" (XLA's dot); on CPU linear is XLA's dot, so only "xla" is timed there. Every
call of a chain has its own x and w (nsets), so no call finds its weights in cache and XLA cannot merge
repeated calls."""

from __future__ import annotations

import jax
import jax.numpy as jnp

import mamba_jax as mj
from mamba_jax.shapes import MAMBA_130M, MAMBA_2_8B

from ..harness import CHAIN_K, Case, normal, size_bytes

CHAIN_CALLS = CHAIN_K[1]  # the longest chain harness.time_impl runs


def unavailable():
    return None


def _lib(impl):
    def call(c, x, w):
        return c, mj.ops.linear(x, w, implementation=impl)
    return call


def case(model, shape, dtype, what="") -> Case:
    rows, K, N = shape["batch"], shape["K"], shape["N"]

    def make_sets(key):
        k = jax.random.split(key)
        return normal(k[0], (rows, K), dtype), normal(k[1], (K, N), dtype, K ** -0.5)

    return Case("linear", model, dict(shape), jnp.dtype(dtype).name, make_sets,
                carry0=lambda s: jnp.zeros((), jnp.float32), impls={"ffi": _lib("ffi"), "xla": _lib("xla")},
                nsets=CHAIN_CALLS, bytes_moved=size_bytes(dtype, (rows, K), (K, N), (rows, N)),
                flops=2 * rows * K * N, note=what or None)


def _projections(m):
    """(name, K, N) of a Mamba-1 layer's in_proj and out_proj."""
    return [("in_proj", m.d_model, 2 * m.d_inner), ("out_proj", m.d_inner, m.d_model)]


def cases(backend, quick):
    if backend == "gpu":
        models, rows, dtype = ([MAMBA_130M] if quick else [MAMBA_130M, MAMBA_2_8B]), (1, 8), jnp.bfloat16
    else:
        models, rows, dtype = [MAMBA_130M], ((1,) if quick else (1, 8)), jnp.float32
    out = [case(m.name, dict(batch=r, K=K, N=N), dtype, what) for m in models
           for what, K, N in _projections(m) for r in rows]
    if backend != "gpu":  # no CPU kernel: "ffi" would time XLA's dot a second time
        for c in out:
            del c.impls["ffi"]
    return out
