"""mamba1_step (the Mamba-1 decode step between in_proj and out_proj): "ffi" (the fused kernels) and "xla"
(the unfused step in pure JAX: XLA's fusions of the conv update, x_proj, dt_proj and state update), timed as
LOOP chained steps inside one jitted program with both states donated (in place), as a decode loop runs
them. The weights (x_proj, dt_proj: ~3.6 MB at mamba-2.8b) are most of the traffic at batch 1."""

from __future__ import annotations

import jax
import jax.numpy as jnp

import mamba_jax as mj
from mamba_jax.shapes import MAMBA_130M, MAMBA_2_8B

from ..harness import Case, normal, size_bytes

f32 = jnp.float32


def unavailable():
    return None


def _lib(impl):
    def call(states, xz, conv_weight, conv_bias, x_proj, dt_proj, dt_bias, A, D):
        conv_state, ssm_state = states
        y, conv_state, ssm_state = mj.ops.mamba1_step(xz, conv_state, ssm_state, conv_weight, conv_bias, x_proj,
                                                      dt_proj, dt_bias, A, D, implementation=impl)
        return (conv_state, ssm_state), y
    return call


def case(model, shape, dtype) -> Case:
    b, e, n, r, w = shape["batch"], shape["dim"], shape["dstate"], shape["dt_rank"], shape["width"]
    j = r + 2 * n

    def make_sets(key):
        k = jax.random.split(key, 8)
        return (normal(k[0], (b, 2 * e), dtype), jax.random.normal(k[1], (e, w)) * 0.5,
                jax.random.normal(k[2], (e,)) * 0.1, normal(k[3], (e, j), dtype, e ** -0.5),
                normal(k[4], (r, e), dtype, r ** -0.5), jax.random.normal(k[5], (e,)) * 0.5 - 4.0,
                -jnp.exp(jax.random.normal(k[6], (e, n)) * 0.5), jax.random.normal(k[7], (e,)))

    def carry0(s):
        k = jax.random.split(jax.random.PRNGKey(1))
        return normal(k[0], (b, e, w - 1), dtype), jax.random.normal(k[1], (b, e, n), f32)

    moved = (size_bytes(dtype, (b, 2 * e), (b, e), (e, j), (r, e), (b, e, w - 1), (b, e, w - 1))
             + size_bytes(f32, (b, e, n), (b, e, n), (e, n), (e, w), (e,), (e,), (e,)))
    return Case("mamba1_step", model, dict(shape), jnp.dtype(dtype).name, make_sets, carry0=carry0,
                impls={"ffi": _lib("ffi"), "xla": _lib("xla")}, kind="loop", bytes_moved=moved)


def cases(backend, quick):
    if backend == "gpu":
        m, batches, dtype = MAMBA_2_8B, ((1, 16) if quick else (1, 4, 16, 64)), jnp.bfloat16
    else:
        m, batches, dtype = MAMBA_130M, ((1,) if quick else (1, 4)), jnp.float32
    return [case(m.name, dict(batch=b, dim=m.dim, dstate=m.dstate, dt_rank=m.dt_rank, width=m.d_conv), dtype)
            for b in batches]
