"""mamba2_step (the Mamba-2 decode step between in_proj and the gated norm) at mamba2-2.7b's layer: "ffi" (the
fused op: one custom call, two kernels), "unfused" (causal_conv1d_update's and ssd_state_update's kernels
with XLA's split of the conv output between them, as Mamba2Mixer.step runs without the fused op) and "xla"
(the same unfused step in pure JAX), timed as LOOP chained steps inside one jitted program with both states
donated (in place), as a decode loop runs them. D per head, no z (the model gates in its norm), dt_bias.
The float32 state's read and write are nearly all of the traffic (state_bytes in the rows)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

import mamba_jax as mj
from mamba_jax.ops.mamba2_step import split_xbc
from mamba_jax.shapes import MAMBA2_2_7B

from ..harness import Case, normal, size_bytes

f32 = jnp.float32


def unavailable():
    return None


def _fused(impl):
    def call(states, xBC, dt, conv_weight, conv_bias, A, D, dt_bias):
        conv_state, ssm_state = states
        y, conv_state, ssm_state = mj.ops.mamba2_step(xBC, dt, conv_state, ssm_state, conv_weight, conv_bias, A, D,
                                                      dt_bias, implementation=impl)
        return (conv_state, ssm_state), y
    return call


def _unfused(states, xBC, dt, conv_weight, conv_bias, A, D, dt_bias):
    conv_state, ssm_state = states
    _, h, p, n = ssm_state.shape
    xBC, conv_state = mj.ops.causal_conv1d_update(xBC, conv_state, conv_weight, conv_bias, activation="silu",
                                                  implementation="ffi")
    x, B, C = split_xbc(xBC, h, p, n)
    y, ssm_state = mj.ops.ssd_state_update(ssm_state, x, dt, A, B, C, D, None, dt_bias, dt_softplus=True,
                                           implementation="ffi")
    return (conv_state, ssm_state), y


def case(model, shape, dtype) -> Case:
    b, H, P, G, N, W = (shape[k] for k in ("batch", "nheads", "headdim", "ngroups", "dstate", "width"))
    c = H * P + 2 * G * N

    def make_sets(key):
        k = jax.random.split(key, 7)
        return (normal(k[0], (b, c), dtype), normal(k[1], (b, H), dtype, 0.5), jax.random.normal(k[2], (c, W)) * 0.5,
                jax.random.normal(k[3], (c,)) * 0.1, -jnp.exp(jax.random.normal(k[4], (H,)) * 0.5),
                jax.random.normal(k[5], (H,)), jax.random.normal(k[6], (H,)) * 0.5 - 4.0)

    def carry0(s):
        k = jax.random.split(jax.random.PRNGKey(1))
        return normal(k[0], (b, c, W - 1), dtype), jax.random.normal(k[1], (b, H, P, N), f32)

    state = size_bytes(f32, (b, H, P, N), (b, H, P, N))
    moved = (state + size_bytes(dtype, (b, c), (b, H), (b, H, P), (b, c, W - 1), (b, c, W - 1))
             + size_bytes(f32, (c, W), (c,), (H,), (H,), (H,)))
    return Case("mamba2_step", model, dict(shape), jnp.dtype(dtype).name, make_sets, carry0=carry0,
                impls={"ffi": _fused("ffi"), "unfused": _unfused, "xla": _fused("xla")}, kind="loop",
                bytes_moved=moved, extra={"state_bytes": state})


def cases(backend, quick):
    m = MAMBA2_2_7B
    if backend == "gpu":
        batches, dtype = ((1, 16) if quick else (1, 4, 16, 64)), jnp.bfloat16
    else:
        batches, dtype = ((1,) if quick else (1, 4)), jnp.float32
    return [case(m.name, dict(batch=b, nheads=m.nheads, headdim=m.headdim, ngroups=m.ngroups, dstate=m.dstate,
                              width=m.d_conv), dtype)
            for b in batches]
