"""selective_state_update (one decode step) against the float64 oracle: every implementation, odd
sizes, options, dtypes, jit, a multi-step decode loop, vmap and gradients."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import oracle
from conftest import ScanCase, assert_close, rows, scan_inputs, tolerance, update_inputs, vmap_stack
from mamba_jax.ops import selective_state_update

BASE = ScanCase(seqlen=0)  # B2-D96-N16-G1-f32 with D, z, dt_bias, softplus
BF16, F16 = jnp.bfloat16, jnp.float16
NAMES = ("state", "x", "dt", "A", "B", "C", "D", "z", "dt_bias")

CASES = rows(
    BASE,
    {},
    {"dim": 40}, {"dim": 200}, {"dim": 36, "ngroups": 2},
    {"dstate": 1}, {"dstate": 64}, {"dstate": 256},
    {"ngroups": 0}, {"ngroups": 2}, {"ngroups": 4},
    {"D": False}, {"z": False}, {"bias": False}, {"softplus": False},
    {"D": False, "z": False, "bias": False, "softplus": False},
    {"batch": 1}, {"batch": 7, "dim": 40},
    {"dtype": BF16}, {"dtype": F16},
    {"dtype": BF16, "ngroups": 2, "dstate": 64},
    {"dtype": F16, "ngroups": 0, "dim": 40, "z": False},
    {"dtype": BF16, "softplus": False, "bias": False, "dstate": 1},
)


def run_update(impl, inputs, softplus, jit=True):
    fn = functools.partial(selective_state_update, dt_softplus=softplus, implementation=impl)
    return (jax.jit(fn) if jit else fn)(**inputs)


def check_against_oracle(case, impl, inputs, y, new_state):
    y_ref, state_ref = oracle.selective_state_update(**inputs, dt_softplus=case.softplus)
    assert y.dtype == case.dtype and new_state.dtype == jnp.float32
    assert_close(y, y_ref, case.dtype, "out", f"{impl} y")
    assert_close(new_state, state_ref, case.dtype, "state", f"{impl} new_state")


@pytest.mark.parametrize("case", CASES)
def test_matches_oracle(case, impl, rng):
    inputs = update_inputs(rng, case)
    y, new_state = run_update(impl, inputs, case.softplus)
    check_against_oracle(case, impl, inputs, y, new_state)


@pytest.mark.parametrize("case", rows(BASE, {}, {"dtype": BF16, "ngroups": 2}))
def test_eager(case, impl, rng):
    inputs = update_inputs(rng, case)
    kept = np.array(inputs["state"])
    y, new_state = run_update(impl, inputs, case.softplus, jit=False)
    check_against_oracle(case, impl, inputs, y, new_state)
    # Not donated: the caller's state is left as it was.
    np.testing.assert_array_equal(np.asarray(inputs["state"]), kept)


@pytest.mark.parametrize("case", rows(ScanCase(seqlen=11, dim=40, ngroups=2, init=True),
                                      {}, {"dtype": BF16}))
def test_decode_loop_matches_scan_oracle(case, impl, rng):
    """seqlen steps of the update inside one jitted lax.scan reproduce the oracle's full scan."""
    s = scan_inputs(rng, case)

    @jax.jit
    def decode(state, u, delta, B, C, z):
        def step(h, xs):
            u_t, d_t, B_t, C_t, z_t = xs
            y_t, h = selective_state_update(h, u_t, d_t, s["A"], B_t, C_t, s["D"], z_t, s["delta_bias"],
                                            dt_softplus=True, implementation=impl)
            return h, y_t

        xs = tuple(jnp.swapaxes(a, 0, 1) for a in (u, delta, B, C, z))
        h, ys = jax.lax.scan(step, state, xs)
        return jnp.swapaxes(ys, 0, 1), h

    y, last = decode(s["initial_state"], s["u"], s["delta"], s["B"], s["C"], s["z"])
    y_ref, last_ref = oracle.selective_scan(**s, delta_softplus=True)
    assert_close(y, y_ref, case.dtype, "out", f"{impl} decoded y")
    assert_close(last, last_ref, case.dtype, "state", f"{impl} decoded state")


# vmap: a leading axis on the activations and the state, then on A too.
@pytest.mark.parametrize("batched_params", [False, True], ids=["acts", "acts+A"])
@pytest.mark.parametrize("case", rows(ScanCase(seqlen=0, dim=40, dstate=8), {}, {"dtype": F16, "ngroups": 2}))
def test_vmap(case, impl, batched_params, rng):
    nv = 3
    stacked, in_axes, slices = vmap_stack(lambda: update_inputs(rng, case), NAMES, nv,
                                          () if batched_params else ("A", "D", "dt_bias"))
    f = functools.partial(selective_state_update, dt_softplus=True, implementation=impl)
    y, new_state = jax.jit(jax.vmap(f, in_axes=in_axes))(*(stacked[k] for k in NAMES))
    for i, one in enumerate(slices):
        y_ref, state_ref = oracle.selective_state_update(**one, dt_softplus=True)
        assert_close(y[i], y_ref, case.dtype, "out", f"{impl} vmap[{i}] y")
        assert_close(new_state[i], state_ref, case.dtype, "state", f"{impl} vmap[{i}] new_state")


# Gradients (float32, small sizes).
GRAD_CASE = ScanCase(batch=2, seqlen=0, dim=6, dstate=3, ngroups=2)


def test_check_grads(impl, rng):
    inputs = update_inputs(rng, GRAD_CASE)
    f = functools.partial(selective_state_update, dt_softplus=True, implementation=impl)
    rtol, atol = tolerance(jnp.float32, "check_grads")
    check_grads(jax.jit(f), tuple(inputs[k] for k in NAMES), order=1, modes=["rev"], atol=atol, rtol=rtol)


@pytest.mark.parametrize("softplus", [True, False], ids=["softplus", "no-softplus"])
def test_grad_matches_oracle(impl, softplus, rng):
    case = dataclasses.replace(GRAD_CASE, softplus=softplus)
    inputs = update_inputs(rng, case)
    gy = rng.normal(size=inputs["x"].shape)
    gs = rng.normal(size=inputs["state"].shape)

    def loss(*a):
        y, new_state = selective_state_update(*a, dt_softplus=softplus, implementation=impl)
        return jnp.sum(y * gy) + jnp.sum(new_state * gs)

    grads = jax.jit(jax.grad(loss, argnums=tuple(range(len(NAMES)))))(*(inputs[k] for k in NAMES))

    def loss_ref(**kw):
        y, new_state = oracle.selective_state_update(**kw, dt_softplus=softplus)
        return np.sum(y * gy) + np.sum(new_state * gs)

    ref = oracle.numerical_grad(loss_ref, inputs)
    for k, g in zip(NAMES, grads):
        assert_close(g, ref[k], jnp.float32, "grad", f"{impl} d/d{k}")
