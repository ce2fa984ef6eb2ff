"""ssd_scan (Mamba-2 prefill): "ffi" and "xla" (the library's chunked pure-JAX path) at mamba2-2.7b's
layer (nheads 80, headdim 64, dstate 128, ngroups 1). D, z, dt_bias and softplus on, chunk_size 256,
the state chained from call to call as initial_state, the final state returned.

flops: the chunked algorithm's matmuls at chunk size Q (C B^T per group, its masked product with x and
the two state matmuls per head): batch * chunks * (G 2Q^2 N + H (2Q^2 P + 4 Q P N))."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

import mamba_jax as mj
from mamba_jax.shapes import MAMBA2_2_7B

from ..harness import Case, normal, size_bytes

f32 = jnp.float32
CHUNK = 256


def unavailable():
    if not hasattr(mj.ops, "ssd_scan"):
        return "mamba_jax.ops.ssd_scan does not exist yet"
    return None


def _lib(impl):
    def call(h, x, dt, A, B, C, D, z, db):
        y, h = mj.ops.ssd_scan(x, dt, A, B, C, chunk_size=CHUNK, D=D, z=z, dt_bias=db, dt_softplus=True,
                               initial_state=h, return_final_state=True, implementation=impl)
        return h, y
    return call


def case(model, shape, dtype) -> Case:
    b, l, H, P, G, N = (shape[k] for k in ("batch", "seqlen", "nheads", "headdim", "ngroups", "dstate"))

    def make_sets(key):
        k = jax.random.split(key, 8)
        return (normal(k[0], (b, l, H, P), dtype), normal(k[1], (b, l, H), dtype, 0.5),
                -jnp.exp(jax.random.normal(k[2], (H,)) * 0.5), normal(k[3], (b, l, G, N), dtype),
                normal(k[4], (b, l, G, N), dtype), jax.random.normal(k[5], (H,)), normal(k[6], (b, l, H, P), dtype),
                jax.random.normal(k[7], (H,)) * 0.5 - 4.0)

    moved = (size_bytes(dtype, *[(b, l, H, P)] * 3, (b, l, H), (b, l, G, N), (b, l, G, N))
             + size_bytes(f32, (H,), (H,), (H,), (b, H, P, N), (b, H, P, N)))
    Q = CHUNK
    flops = b * math.ceil(l / Q) * (G * 2 * Q * Q * N + H * (2 * Q * Q * P + 4 * Q * P * N))
    return Case("ssd_scan", model, dict(shape), jnp.dtype(dtype).name, make_sets,
                carry0=lambda s: jnp.full((b, H, P, N), 0.1, f32),
                impls={"ffi": _lib("ffi"), "xla": _lib("xla")}, bytes_moved=moved, flops=flops,
                extra={"chunk_size": CHUNK})


def cases(backend, quick):
    m = MAMBA2_2_7B
    if backend == "gpu":
        sizes = [(1, 2048)] if quick else [(1, 2048), (8, 2048), (1, 8192)]
        dtype = jnp.bfloat16
    else:
        sizes, dtype = ([(1, 256)] if quick else [(1, 2048)]), jnp.float32
    return [case(m.name, dict(batch=b, seqlen=l, nheads=m.nheads, headdim=m.headdim, ngroups=m.ngroups,
                              dstate=m.dstate), dtype) for b, l in sizes]
