"""ssd_state_update (one Mamba-2 decode step) against the float64 oracle: every implementation, odd
sizes, options, dtypes, jit, eager, vmap, gradients, in place under donation (the kernel), bad input and
the Metal allow-list. The scan == repeated steps check is in test_ssd_scan.py."""

from __future__ import annotations

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import oracle
import oracle_ssd
from conftest import assert_close, rows, tolerance
from mamba_jax.ops import ssd_state_update
from test_ssd_scan import SsdCase, assert_metal_safe, case_rng, ffi_built, implementations, scan_inputs

F32, BF16, F16 = jnp.float32, jnp.bfloat16, jnp.float16
IMPLS = implementations("ssd_state_update", with_ref=False)  # "xla" is the reference itself
NAMES = ("state", "x", "dt", "A", "B", "C", "D", "z", "dt_bias")


def update_inputs(rng, case: SsdCase) -> dict:
    """ssd_state_update's arguments: one position of the scan's inputs, and a random state."""
    one = scan_inputs(rng, dataclasses.replace(case, seqlen=1, init=False))
    at0 = lambda k: None if one[k] is None else one[k][:, 0]
    state = jnp.asarray(rng.normal(0.0, 0.5, (case.batch, case.nheads, case.headdim, case.dstate)), F32)
    return {"state": state, "x": at0("x"), "dt": at0("dt"), "A": one["A"], "B": at0("B"), "C": at0("C"),
            "D": one["D"], "z": at0("z"), "dt_bias": one["dt_bias"]}


def run(impl, inputs, case, jit=True):
    fn = functools.partial(ssd_state_update, **case.options(), implementation=impl)
    return (jax.jit(fn) if jit else fn)(**inputs)


def check(case, impl, inputs, y, new_state, what=""):
    y_ref, state_ref = oracle_ssd.ssd_state_update(**inputs, **case.options())
    assert y.dtype == case.dtype and new_state.dtype == F32
    assert_close(y, y_ref, case.dtype, "out", f"{impl} {what}y")
    assert_close(new_state, state_ref, case.dtype, "state", f"{impl} {what}new_state")


BASE = SsdCase(seqlen=0)  # B2-H4-P16-N16-G1, D per head, z, dt_bias, softplus
CASES = rows(
    BASE,
    {},
    {"nheads": 1}, {"nheads": 3}, {"nheads": 80, "ngroups": 8},
    {"headdim": 64}, {"dstate": 128}, {"dstate": 256},
    {"ngroups": 2}, {"nheads": 8, "ngroups": 8}, {"nheads": 6, "ngroups": 2},
    {"D": "channel"}, {"D": None}, {"z": False}, {"bias": False}, {"softplus": False},
    {"D": None, "z": False, "bias": False, "softplus": False}, {"limit": True}, {"limit": True, "softplus": False},
    {"batch": 1}, {"batch": 7, "nheads": 3},
    {"dtype": BF16}, {"dtype": F16},
    {"dtype": BF16, "ngroups": 2, "dstate": 128, "D": "channel"},
    {"dtype": F16, "nheads": 3, "headdim": 64, "z": False, "limit": True},
)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES)
def test_matches_oracle(case, impl):
    inputs = update_inputs(case_rng(case), case)
    y, new_state = run(impl, inputs, case)
    check(case, impl, inputs, y, new_state)


@pytest.mark.parametrize("impl", IMPLS)
def test_eager(impl):
    case = dataclasses.replace(BASE, dtype=BF16, ngroups=2)
    inputs = update_inputs(case_rng(case), case)
    y, new_state = run(impl, inputs, case, jit=False)
    check(case, impl, inputs, y, new_state, "eager ")


@pytest.mark.parametrize("impl", IMPLS)
def test_vmap(impl):
    case = dataclasses.replace(BASE, dtype=BF16, ngroups=2, nheads=6)
    draws = [update_inputs(case_rng(case, str(i)), case) for i in range(3)]
    stacked = [jnp.stack([d[k] for d in draws]) for k in NAMES]
    f = lambda *a: run(impl, dict(zip(NAMES, a)), case, jit=False)
    y, new_state = jax.jit(jax.vmap(f))(*stacked)
    for i, one in enumerate(draws):
        check(case, impl, one, y[i], new_state[i], f"vmap[{i}] ")


GRAD_CASE = SsdCase(batch=2, seqlen=1, nheads=4, headdim=3, dstate=5, ngroups=2, D="channel", limit=True)


@pytest.mark.parametrize("impl", IMPLS)
def test_grad_matches_oracle(impl):
    case = GRAD_CASE
    rng = case_rng(case, "grad")
    inputs = update_inputs(rng, case)
    gy = rng.normal(size=inputs["x"].shape)
    gs = rng.normal(size=inputs["state"].shape)

    def loss(*a):
        y, s = run(impl, dict(zip(NAMES, a)), case, jit=False)
        return jnp.sum(y * gy) + jnp.sum(s * gs)

    grads = jax.jit(jax.grad(loss, argnums=tuple(range(len(NAMES)))))(*(inputs[k] for k in NAMES))

    def loss_ref(**kw):
        y, s = oracle_ssd.ssd_state_update(**kw, **case.options())
        return np.sum(y * gy) + np.sum(s * gs)

    ref = oracle.numerical_grad(loss_ref, {k: inputs[k] for k in NAMES})
    for k, g in zip(NAMES, grads):
        assert_close(g, ref[k], F32, "grad", f"{impl} d/d{k}")


@pytest.mark.parametrize("impl", IMPLS)
def test_check_grads(impl):
    case = dataclasses.replace(GRAD_CASE, limit=False)
    inputs = update_inputs(case_rng(case), case)
    f = lambda *a: run(impl, dict(zip(NAMES, a)), case, jit=False)
    rtol, atol = tolerance(F32, "check_grads")
    check_grads(jax.jit(f), tuple(inputs[k] for k in NAMES), order=1, modes=["rev"], atol=atol, rtol=rtol)


def test_default_implementation():
    picked = "ffi" if ffi_built("ssd_state_update") else "xla"
    inputs = update_inputs(case_rng(BASE), BASE)
    for a, b in zip(run(None, inputs, BASE), run(picked, inputs, BASE)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.skipif(ffi_built("ssd_state_update"), reason="the ssd_state_update kernel is built here")
def test_ffi_without_kernel_raises():
    inputs = update_inputs(case_rng(BASE), BASE)
    with pytest.raises(RuntimeError, match="ssd_state_update.*implementation='ffi'"):
        ssd_state_update(**inputs, implementation="ffi")


# In place: the kernel aliases state to new_state; with the state donated the new state is written
# into the old buffer (same pointer), as tests/test_donation.py checks for the Mamba-1 ops.
@pytest.mark.skipif(not ffi_built("ssd_state_update"),
                    reason=f"no ssd_state_update FFI kernel built for the '{jax.default_backend()}' backend")
@pytest.mark.parametrize("case", rows(BASE, {}, {"dtype": BF16, "ngroups": 2, "dstate": 64}))
def test_in_place_under_donation(case):
    inputs = update_inputs(case_rng(case), case)
    y_ref, state_ref = oracle_ssd.ssd_state_update(**inputs, **case.options())  # before the donation
    fn = functools.partial(ssd_state_update, **case.options(), implementation="ffi")
    args = [inputs[k] for k in NAMES]
    compiled = jax.jit(fn, donate_argnums=0).lower(*args).compile().as_text()
    assert re.search(r"input_output_alias=\{[^\n]*\{1\}: \(0, \{\}", compiled), "state is not aliased in the HLO"
    pointer = args[0].unsafe_buffer_pointer()
    y, new_state = jax.jit(fn, donate_argnums=0)(*args)
    jax.block_until_ready(new_state)
    assert args[0].is_deleted(), "the donated state was not consumed"
    assert new_state.unsafe_buffer_pointer() == pointer, "the new state is not in the old state's buffer"
    assert_close(y, y_ref, case.dtype, "out", "in-place y")
    assert_close(new_state, state_ref, case.dtype, "state", "in-place new_state")


# Bad input
def _bad_args(**change):
    b, h, p, g, n = 2, 4, 3, 2, 5
    z = lambda *s, dtype=F32: jnp.zeros(s, dtype)
    args = dict(state=z(b, h, p, n), x=z(b, h, p), dt=z(b, h), A=-jnp.ones(h), B=z(b, g, n), C=z(b, g, n),
                D=z(h, p), z=z(b, h, p), dt_bias=z(h))
    return {**args, **change}


BAD = [
    ("state-rank", dict(state=jnp.zeros((2, 4, 15))), {}, ValueError, r"state has shape \(2, 4, 15\).*rank 4"),
    ("state-dtype", dict(state=jnp.zeros((2, 4, 3, 5), BF16)), {}, TypeError, "state has dtype bfloat16"),
    ("x-shape", dict(x=jnp.zeros((2, 4, 2))), {}, ValueError, r"x has shape \(2, 4, 2\).*\(2, 4, 3\)"),
    ("x-dtype", dict(x=jnp.zeros((2, 4, 3), jnp.int32)), {}, TypeError, "x has dtype int32"),
    ("dt-shape", dict(dt=jnp.zeros((2, 3))), {}, ValueError, r"dt has shape \(2, 3\)"),
    ("dt-dtype", dict(dt=jnp.zeros((2, 4), F16)), {}, TypeError, "dt has dtype float16"),
    ("A-shape", dict(A=-jnp.ones(3)), {}, ValueError, r"A has shape \(3,\)"),
    ("B-rank", dict(B=jnp.zeros((2, 5))), {}, ValueError, r"B has shape \(2, 5\)"),
    ("B-dstate", dict(B=jnp.zeros((2, 2, 6)), C=jnp.zeros((2, 2, 6))), {}, ValueError, "dstate = 5"),
    ("C-mismatch", dict(C=jnp.zeros((2, 1, 5))), {}, ValueError, r"C has shape \(2, 1, 5\)"),
    ("groups", dict(B=jnp.zeros((2, 3, 5)), C=jnp.zeros((2, 3, 5))), {}, ValueError,
     "ngroups = 3 must divide nheads = 4"),
    ("C-dtype", dict(C=jnp.zeros((2, 2, 5), BF16)), {}, TypeError, "C has dtype bfloat16"),
    ("D-shape", dict(D=jnp.zeros((4, 4))), {}, ValueError, r"D has shape \(4, 4\)"),
    ("z-shape", dict(z=jnp.zeros((2, 4))), {}, ValueError, r"z has shape \(2, 4\)"),
    ("dt_bias", dict(dt_bias=jnp.zeros((4, 1))), {}, ValueError, r"dt_bias has shape \(4, 1\)"),
    ("dt_limit", {}, dict(dt_limit=(1.0,)), ValueError, "dt_limit"),
    ("implementation", {}, dict(implementation="metal"), ValueError, "implementation must be"),
]


@pytest.mark.parametrize("change,options,exc,msg", [pytest.param(*b[1:], id=b[0]) for b in BAD])
def test_bad_input(change, options, exc, msg):
    with pytest.raises(exc, match=msg) as err:
        ssd_state_update(**_bad_args(**change), **options)
    assert str(err.value).startswith("ssd_state_update: ")


def test_metal_allowlist():
    case = dataclasses.replace(BASE, ngroups=2, dtype=BF16, limit=True, D="channel")
    inputs = update_inputs(case_rng(case), case)
    args = tuple(inputs[k] for k in NAMES)
    f = lambda *a: run("xla", dict(zip(NAMES, a)), case, jit=False)

    def loss(*a):
        y, s = f(*a)
        return jnp.sum(y.astype(F32)) + jnp.sum(s)

    assert_metal_safe(f, *args, what="ssd_state_update xla")
    assert_metal_safe(jax.grad(loss, argnums=tuple(range(len(NAMES)))), *args, what="ssd_state_update xla grad")
