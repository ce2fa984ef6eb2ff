"""The chunked pure-JAX selective scan (the "xla" path of `selective_scan`, and the Metal path)
against the float64 oracle: chunk sizes, odd lengths, long sequences with large steps, unrolling,
and its autodiff gradients."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import oracle
from conftest import ScanCase, assert_close, rows, scan_inputs
from mamba_jax.ops.selective_scan.reference import selective_scan_ref
from mamba_jax.ops.selective_scan.xla import default_chunk_size, selective_scan_chunked

F32, BF16, F16 = jnp.float32, jnp.bfloat16, jnp.float16

BASE = ScanCase(batch=2, seqlen=113, dim=40, dstate=16, ngroups=2, init=True)
CHUNK_CASES = rows(
    BASE,
    {}, {"seqlen": 1}, {"seqlen": 63}, {"seqlen": 2048, "batch": 1},
    {"dstate": 1}, {"ngroups": 0}, {"init": False},
    {"D": False, "z": False, "bias": False, "softplus": False},
    {"dtype": BF16}, {"dtype": F16}, {"dtype": BF16, "seqlen": 2048, "batch": 1, "ngroups": 0},
)
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


def _as_groups(inp):
    """The public ops accept B/C without a group axis; the chunked core takes [b, l, g, n]."""
    out = dict(inp)
    for k in ("B", "C"):
        if out[k].ndim == 3:
            out[k] = out[k][:, :, None, :]
    return out


def run_chunked(inp, softplus, chunk_size, unroll=1):
    g = _as_groups(inp)
    fn = functools.partial(selective_scan_chunked, delta_softplus=softplus, chunk_size=chunk_size, unroll=unroll)
    return jax.jit(fn)(*(g[k] for k in NAMES[:8]), initial_state=g["initial_state"])


@pytest.mark.parametrize("chunk", ["default", 7], ids=["T-default", "T7"])
@pytest.mark.parametrize("case", CHUNK_CASES)
def test_chunked_matches_oracle(case, chunk, rng):
    inp = scan_inputs(rng, case)
    T = default_chunk_size(case.seqlen) if chunk == "default" else chunk
    y, last = run_chunked(inp, case.softplus, T)
    y_ref, last_ref = oracle.selective_scan(**inp, delta_softplus=case.softplus)
    assert y.dtype == case.dtype and last.dtype == F32
    assert_close(y, y_ref, case.dtype, "out", f"chunked T={T} y")
    assert_close(last, last_ref, case.dtype, "state", f"chunked T={T} last_state")


def test_chunked_unrolled_equals_rolled(rng):
    inp = scan_inputs(rng, dataclasses.replace(BASE, seqlen=50, dim=24))
    for a, b in zip(run_chunked(inp, True, 8), run_chunked(inp, True, 8, unroll=4)):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=1e-6, atol=1e-6)


def test_chunked_long_sequence_is_stable(rng):
    """Large steps (dt up to ~5) and fast decays over 4096 tokens: per-chunk exponents reach
    thousands below zero; nothing overflows, and the result still matches the oracle."""
    case = ScanCase(batch=1, seqlen=4096, dim=40, dstate=16, ngroups=0, init=True, bias=False)
    inp = scan_inputs(rng, case)
    inp["delta"] = jnp.asarray(rng.uniform(-3.0, 5.0, inp["u"].shape), F32)
    inp["A"] = inp["A"] * 4.0
    y, last = run_chunked(inp, True, default_chunk_size(case.seqlen))
    assert np.isfinite(np.asarray(y)).all() and np.isfinite(np.asarray(last)).all()
    y_ref, last_ref = oracle.selective_scan(**inp, delta_softplus=True)
    assert_close(y, y_ref, F32, "out", "long y")
    assert_close(last, last_ref, F32, "state", "long last_state")


GRAD_CASE = ScanCase(batch=2, seqlen=11, dim=6, dstate=3, ngroups=2, init=True)


@pytest.mark.parametrize("softplus", [True, False], ids=["softplus", "no-softplus"])
def test_chunked_grad_matches_oracle(softplus, rng):
    """Autodiff of the multi-chunk form (3 chunks of 4, the last one padded) against float64
    central differences of the oracle, for every input."""
    case = dataclasses.replace(GRAD_CASE, softplus=softplus)
    inp = _as_groups(scan_inputs(rng, case))
    gy = rng.normal(size=inp["u"].shape)
    gs = rng.normal(size=inp["initial_state"].shape)

    def loss(*a):
        y, last = selective_scan_chunked(*a[:8], delta_softplus=softplus, initial_state=a[8], chunk_size=4)
        return jnp.sum(y * gy) + jnp.sum(last * gs)

    grads = jax.jit(jax.grad(loss, argnums=tuple(range(9))))(*(inp[k] for k in NAMES))

    def loss_ref(**kw):
        y, last = oracle.selective_scan(**kw, delta_softplus=softplus)
        return np.sum(y * gy) + np.sum(last * gs)

    ref = oracle.numerical_grad(loss_ref, {k: inp[k] for k in NAMES})
    for k, g in zip(NAMES, grads):
        assert_close(g, ref[k], F32, "grad", f"chunked d/d{k}")


def test_chunked_grad_matches_reference_vjp(rng):
    """At a size too large for finite differences: the chunked form's gradients equal those of the
    lax.scan reference (the FFI ops' gradient source)."""
    inp = _as_groups(scan_inputs(rng, ScanCase(batch=2, seqlen=45, dim=24, dstate=8, ngroups=2, init=True)))
    args = tuple(inp[k] for k in NAMES)
    gy = jnp.asarray(rng.normal(size=inp["u"].shape), F32)

    def loss(f, *a):
        y, last = f(*a[:8], delta_softplus=True, initial_state=a[8])
        return jnp.sum(y * gy) + jnp.sum(last)

    chunked = functools.partial(selective_scan_chunked, chunk_size=8)
    g1 = jax.jit(jax.grad(functools.partial(loss, chunked), argnums=tuple(range(9))))(*args)
    g2 = jax.jit(jax.grad(functools.partial(loss, selective_scan_ref), argnums=tuple(range(9))))(*args)
    for k, a, b in zip(NAMES, g1, g2):
        b = np.asarray(b, np.float64)
        assert_close(a, b, F32, "grad", f"chunked vs reference d/d{k}")


def test_default_chunk_size():
    assert [default_chunk_size(l) for l in (1, 5, 8, 9, 63, 113, 2048, 10 ** 6)] == [1, 5, 8, 8, 8, 8, 64, 128]
