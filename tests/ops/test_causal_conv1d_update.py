"""causal_conv1d_update against the float64 oracle: every implementation, widths 2..8, odd sizes,
options, dtypes, jit and eager, vmap and gradients. (Its hand-off from causal_conv1d's final state is
tested in test_causal_conv1d.py; in-place updates under donation in test_donation.py.)"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import oracle
from conftest import ConvCase, assert_close, conv_update_inputs, ffi_available, rows, tolerance, vmap_stack
from mamba_jax.ops import causal_conv1d_update

BF16, F16 = jnp.bfloat16, jnp.float16
NAMES = ("x", "conv_state", "weight", "bias")

BASE = ConvCase(seqlen=1)
CASES = rows(
    BASE,
    {},
    {"dim": 40}, {"dim": 200}, {"dim": 5},
    {"width": 2}, {"width": 3}, {"width": 8},
    {"bias": False}, {"silu": False}, {"bias": False, "silu": False},
    {"batch": 1}, {"batch": 7},
    {"dtype": BF16}, {"dtype": F16},
    {"dtype": BF16, "width": 2, "dim": 40}, {"dtype": F16, "width": 8, "silu": False},
)


def _act(case):
    return "silu" if case.silu else None


def run(impl, inputs, activation, jit=True):
    fn = functools.partial(causal_conv1d_update, activation=activation, implementation=impl)
    return (jax.jit(fn) if jit else fn)(**inputs)


def check(case, impl, inputs, y, new_state):
    y_ref, state_ref = oracle.causal_conv1d_update(**inputs, activation=_act(case))
    assert y.dtype == case.dtype and new_state.dtype == case.dtype
    assert_close(y, y_ref, case.dtype, "out", f"{impl} y")
    assert_close(new_state, state_ref, case.dtype, "conv_state", f"{impl} new_conv_state")


@pytest.mark.parametrize("case", CASES)
def test_update_matches_oracle(case, impl, rng):
    inputs = conv_update_inputs(rng, case)
    check(case, impl, inputs, *run(impl, inputs, _act(case)))


@pytest.mark.parametrize("case", rows(ConvCase(seqlen=1, init=True), {}, {"dtype": BF16, "width": 3}))
def test_eager(case, impl, rng):
    inputs = conv_update_inputs(rng, case)
    check(case, impl, inputs, *run(impl, inputs, _act(case), jit=False))


@pytest.mark.parametrize("batched_params", [False, True], ids=["acts", "acts+weight"])
@pytest.mark.parametrize("case", rows(ConvCase(seqlen=9, dim=40, init=True), {}, {"dtype": BF16, "width": 3}))
def test_vmap(case, impl, batched_params, rng):
    act = _act(case)
    stacked, in_axes, slices = vmap_stack(lambda: conv_update_inputs(rng, case), NAMES, 3,
                                          () if batched_params else ("weight", "bias"))
    g = functools.partial(causal_conv1d_update, activation=act, implementation=impl)
    y, new_state = jax.jit(jax.vmap(g, in_axes=in_axes))(*(stacked[k] for k in NAMES))
    for i, one in enumerate(slices):
        y_ref, state_ref = oracle.causal_conv1d_update(**one, activation=act)
        assert_close(y[i], y_ref, case.dtype, "out", f"{impl} vmap[{i}] y")
        assert_close(new_state[i], state_ref, case.dtype, "conv_state", f"{impl} vmap[{i}] state")


GRAD_CASE = ConvCase(batch=2, seqlen=6, dim=5, width=4, init=True)


def test_check_grads(impl, rng):
    rtol, atol = tolerance(jnp.float32, "check_grads")
    inputs = conv_update_inputs(rng, GRAD_CASE)
    g = functools.partial(causal_conv1d_update, activation="silu", implementation=impl)
    check_grads(jax.jit(g), tuple(inputs[k] for k in NAMES), order=1, modes=["rev"], atol=atol, rtol=rtol)


@pytest.mark.parametrize("activation", ["silu", None], ids=["silu", "linear"])
def test_grad_matches_oracle(impl, activation, rng):
    inputs = conv_update_inputs(rng, GRAD_CASE)
    gy = rng.normal(size=inputs["x"].shape)
    gs = rng.normal(size=inputs["conv_state"].shape)

    def loss(*a):
        y, s = causal_conv1d_update(*a, activation=activation, implementation=impl)
        return jnp.sum(y * gy) + jnp.sum(s * gs)

    def loss_ref(**kw):
        y, s = oracle.causal_conv1d_update(**kw, activation=activation)
        return np.sum(y * gy) + np.sum(s * gs)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(*(inputs[k] for k in NAMES))
    ref = oracle.numerical_grad(loss_ref, inputs)
    for k, g in zip(NAMES, grads):
        assert_close(g, ref[k], jnp.float32, "grad", f"{impl} update d/d{k}")


def test_default_implementation(rng):
    """implementation=None runs the FFI kernel where one is built for this backend, else pure JAX."""
    picked = "ffi" if ffi_available() else "xla"
    inputs = conv_update_inputs(rng, ConvCase(seqlen=17, init=True))
    for a, b in zip(run(None, inputs, "silu"), run(picked, inputs, "silu")):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
