"""selective_scan against the float64 oracle: every implementation, odd sizes, options, dtypes,
jit, eager, vmap and gradients."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import oracle
from conftest import ScanCase, assert_close, ffi_available, rows, scan_inputs, tolerance, vmap_stack
from mamba_jax.nn.mixer import PAD_DT
from mamba_jax.ops import selective_scan, selective_state_update

BASE = ScanCase()  # B2-L63-D96-N16-G1-f32, with D, z, delta_bias, softplus
BF16, F16 = jnp.bfloat16, jnp.float16

CASES = rows(
    BASE,
    {},
    # seqlen
    {"seqlen": 1}, {"seqlen": 2}, {"seqlen": 113},
    # dim not a multiple of 32, and one that is not a multiple of 8
    {"dim": 40}, {"dim": 200}, {"dim": 36, "ngroups": 2},
    # dstate, up to the limit
    {"dstate": 1}, {"dstate": 64}, {"dstate": 256, "seqlen": 17},
    # B/C layouts: no group axis (the Mamba-1 form), 2 and 4 groups
    {"ngroups": 0}, {"ngroups": 2}, {"ngroups": 4},
    # each option off in turn, then all off; initial state on
    {"D": False}, {"z": False}, {"bias": False}, {"softplus": False},
    {"D": False, "z": False, "bias": False, "softplus": False}, {"init": True},
    {"batch": 1}, {"batch": 3, "init": True, "ngroups": 2},
    # every activation dtype, on the base case and on rows with the other features
    {"dtype": BF16}, {"dtype": F16},
    {"dtype": BF16, "seqlen": 113, "ngroups": 2, "init": True},
    {"dtype": F16, "seqlen": 2, "dim": 40, "dstate": 64, "init": True},
    {"dtype": BF16, "seqlen": 1, "ngroups": 0, "z": False},
    {"dtype": F16, "softplus": False, "bias": False, "ngroups": 0},
)

LONG = rows(
    ScanCase(batch=1, seqlen=2048, dim=40),
    {}, {"dtype": BF16, "ngroups": 2, "init": True},
    # dim a multiple of 16 and few channel blocks (the lane kernel would split the sequence; the checker
    # covers that path, the time-parallel kernel takes these)
    {"dim": 64, "dtype": BF16}, {"dim": 32, "init": True},
)


def run_scan(impl, inputs, softplus, jit=True):
    fn = functools.partial(selective_scan, delta_softplus=softplus, return_last_state=True,
                           implementation=impl)
    return (jax.jit(fn) if jit else fn)(**inputs)


def oracle_scan(inputs, softplus):
    return oracle.selective_scan(**inputs, delta_softplus=softplus)


def check_against_oracle(case, impl, inputs, y, last):
    y_ref, last_ref = oracle_scan(inputs, case.softplus)
    assert y.dtype == case.dtype and last.dtype == jnp.float32
    assert_close(y, y_ref, case.dtype, "out", f"{impl} y")
    assert_close(last, last_ref, case.dtype, "state", f"{impl} last_state")


@pytest.mark.parametrize("case", CASES + LONG)
def test_matches_oracle(case, impl, rng):
    inputs = scan_inputs(rng, case)
    y, last = run_scan(impl, inputs, case.softplus)
    check_against_oracle(case, impl, inputs, y, last)


@pytest.mark.parametrize("case", rows(BASE, {"dtype": BF16, "ngroups": 2, "init": True}))
def test_eager(case, impl, rng):
    inputs = scan_inputs(rng, case)
    y, last = run_scan(impl, inputs, case.softplus, jit=False)
    check_against_oracle(case, impl, inputs, y, last)
    # Without return_last_state only y comes back.
    y_only = selective_scan(**inputs, delta_softplus=case.softplus, implementation=impl)
    np.testing.assert_array_equal(np.asarray(y_only, np.float32), np.asarray(y, np.float32))


def test_softplus_both_branches(impl, rng):
    """delta + delta_bias spread over [-30, 30]: the kernels switch to dt = x above 20."""
    case = ScanCase(batch=1, seqlen=24, dim=40, dstate=8)
    inputs = scan_inputs(rng, case)
    inputs["delta"] = jnp.asarray(rng.uniform(-30.0, 30.0, inputs["u"].shape), jnp.float32)
    inputs["A"] = inputs["A"] * 0.01  # keep exp(dt * A) away from 0 so that every step counts
    y, last = run_scan(impl, inputs, True)
    check_against_oracle(case, impl, inputs, y, last)


@pytest.mark.parametrize("dtype", [jnp.float32, BF16, F16], ids=["f32", "bf16", "f16"])
@pytest.mark.parametrize("low", ["pad_dt", "lowest"])
def test_very_negative_delta_is_a_skipped_step(impl, dtype, low, rng):
    """delta = the mixer's PAD_DT (or the dtype's lowest value) makes softplus(delta + bias) exactly 0,
    so the step leaves the state as it was (a masked prefill's padded positions rely on it): with every
    step at that value the last state is the initial state bit for bit, and with a left-padded prefix of
    a different length in each row the result matches the oracle (which gets dt = 0 there)."""
    case = ScanCase(batch=3, seqlen=37, dim=40, dstate=8, ngroups=2, init=True, dtype=dtype)
    inputs = scan_inputs(rng, case)
    low_dt = PAD_DT if low == "pad_dt" else jnp.finfo(dtype).min
    all_low = {**inputs, "delta": jnp.full_like(inputs["delta"], low_dt)}
    for h0 in (inputs["initial_state"], jnp.zeros_like(inputs["initial_state"])):
        _, last = run_scan(impl, {**all_low, "initial_state": h0}, True)
        np.testing.assert_array_equal(np.asarray(last), np.asarray(h0))
    pads = np.array([0, 5, 36])[:, None]
    padded = np.arange(case.seqlen)[None, :] < pads  # [batch, seqlen]
    inputs["delta"] = jnp.where(jnp.asarray(padded)[..., None], low_dt, inputs["delta"])
    y, last = run_scan(impl, inputs, True)
    check_against_oracle(case, impl, inputs, y, last)


def test_prefill_state_feeds_decode(impl, rng):
    """Scanning L - 1 steps, then one selective_state_update from the returned state, gives the
    same last output and state as the oracle on the whole sequence."""
    case = ScanCase(seqlen=9, ngroups=2, init=True)
    inputs = scan_inputs(rng, case)
    head = {k: (v[:, :-1] if k in ("u", "delta", "B", "C", "z") else v) for k, v in inputs.items()}
    _, state = run_scan(impl, head, True)
    y_last, new_state = jax.jit(functools.partial(selective_state_update, dt_softplus=True,
                                                  implementation=impl))(
        state, inputs["u"][:, -1], inputs["delta"][:, -1], inputs["A"], inputs["B"][:, -1],
        inputs["C"][:, -1], inputs["D"], inputs["z"][:, -1], inputs["delta_bias"])
    y_ref, last_ref = oracle_scan(inputs, True)
    assert_close(y_last, y_ref[:, -1], case.dtype, "out", f"{impl} decode y")
    assert_close(new_state, last_ref, case.dtype, "state", f"{impl} decode state")


# vmap: a leading axis on the activations, then on a parameter (A) too.
VMAP_CASES = rows(ScanCase(batch=2, seqlen=13, dim=40, dstate=8, init=True),
                  {}, {"dtype": BF16, "ngroups": 2})
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


@pytest.mark.parametrize("batched_params", [False, True], ids=["acts", "acts+A"])
@pytest.mark.parametrize("case", VMAP_CASES)
def test_vmap(case, impl, batched_params, rng):
    nv = 3
    stacked, in_axes, slices = vmap_stack(lambda: scan_inputs(rng, case), NAMES, nv,
                                          () if batched_params else ("A", "D", "delta_bias"))

    def f(*args):
        return selective_scan(*args[:8], delta_softplus=True, initial_state=args[8],
                              return_last_state=True, implementation=impl)

    y, last = jax.jit(jax.vmap(f, in_axes=in_axes))(*(stacked[k] for k in NAMES))
    assert y.shape == (nv,) + stacked["u"].shape[1:]
    for i, one in enumerate(slices):
        y_ref, last_ref = oracle_scan(one, True)
        assert_close(y[i], y_ref, case.dtype, "out", f"{impl} vmap[{i}] y")
        assert_close(last[i], last_ref, case.dtype, "state", f"{impl} vmap[{i}] last_state")


# Gradients (float32, small sizes): check_grads, and every input's gradient against float64
# central differences of the oracle.
GRAD_CASE = ScanCase(batch=2, seqlen=5, dim=6, dstate=3, ngroups=2, init=True)


def test_check_grads(impl, rng):
    inputs = scan_inputs(rng, GRAD_CASE)
    args = tuple(inputs[k] for k in NAMES)

    def f(*a):
        return selective_scan(*a[:8], delta_softplus=True, initial_state=a[8], return_last_state=True,
                              implementation=impl)

    rtol, atol = tolerance(jnp.float32, "check_grads")
    check_grads(jax.jit(f), args, order=1, modes=["rev"], atol=atol, rtol=rtol)


@pytest.mark.parametrize("softplus", [True, False], ids=["softplus", "no-softplus"])
def test_grad_matches_oracle(impl, softplus, rng):
    case = dataclasses.replace(GRAD_CASE, softplus=softplus)
    inputs = scan_inputs(rng, case)
    gy = rng.normal(size=inputs["u"].shape)
    gs = rng.normal(size=inputs["initial_state"].shape)

    def loss(*a):
        y, last = selective_scan(*a[:8], delta_softplus=softplus, initial_state=a[8],
                                 return_last_state=True, implementation=impl)
        return jnp.sum(y * gy) + jnp.sum(last * gs)

    grads = jax.jit(jax.grad(loss, argnums=tuple(range(len(NAMES)))))(*(inputs[k] for k in NAMES))

    def loss_ref(**kw):
        y, last = oracle_scan(kw, softplus)
        return np.sum(y * gy) + np.sum(last * gs)

    ref = oracle.numerical_grad(loss_ref, {k: inputs[k] for k in NAMES})
    for k, g in zip(NAMES, grads):
        assert_close(g, ref[k], jnp.float32, "grad", f"{impl} d/d{k}")


def test_default_implementation(rng):
    """implementation=None runs the FFI kernel where one is built for this backend, else pure JAX:
    its results are the same arrays as the one it picks."""
    picked = "ffi" if ffi_available() else "xla"
    case = ScanCase(seqlen=17, ngroups=2, init=True)
    inputs = scan_inputs(rng, case)
    for a, b in zip(run_scan(None, inputs, True), run_scan(picked, inputs, True)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    upd = {"state": inputs["initial_state"], "x": inputs["u"][:, 0], "dt": inputs["delta"][:, 0], "A": inputs["A"],
           "B": inputs["B"][:, 0], "C": inputs["C"][:, 0], "D": inputs["D"], "z": inputs["z"][:, 0],
           "dt_bias": inputs["delta_bias"]}
    run = lambda impl: jax.jit(functools.partial(selective_state_update, dt_softplus=True, implementation=impl))(**upd)
    for a, b in zip(run(None), run(picked)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
