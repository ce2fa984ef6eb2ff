"""causal_conv1d against the float64 oracle: every implementation, widths 2..8, odd sizes, options,
dtypes, jit, the prefill -> decode hand-off to causal_conv1d_update, vmap and gradients."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import oracle
from conftest import ConvCase, assert_close, conv_inputs, ffi_available, rows, tolerance, vmap_stack
from mamba_jax.ops import causal_conv1d, causal_conv1d_update

BASE = ConvCase()  # B2-L63-D96-W4-f32 with bias and silu
BF16, F16 = jnp.bfloat16, jnp.float16
CONV_NAMES = ("x", "weight", "bias", "initial_state")

CONV_CASES = rows(
    BASE,
    {},
    {"seqlen": 1}, {"seqlen": 2}, {"seqlen": 113},
    {"dim": 40}, {"dim": 200}, {"dim": 5},
    {"width": 2}, {"width": 3}, {"width": 8},
    {"bias": False}, {"silu": False}, {"bias": False, "silu": False}, {"init": True},
    # seqlen shorter than width - 1: the final state reaches back into the initial state
    {"init": True, "seqlen": 1}, {"init": True, "seqlen": 2}, {"init": True, "seqlen": 5, "width": 8},
    {"batch": 1}, {"batch": 3, "init": True, "width": 3},
    {"dtype": BF16}, {"dtype": F16},
    {"dtype": BF16, "init": True, "width": 2, "seqlen": 113},
    {"dtype": F16, "init": True, "seqlen": 2, "dim": 40, "width": 8},
    {"dtype": BF16, "silu": False, "bias": False, "seqlen": 1},
)
CONV_LONG = rows(ConvCase(batch=1, seqlen=2048, dim=40), {}, {"dtype": BF16, "init": True})

def _act(case):
    return "silu" if case.silu else None


def run_conv(impl, inputs, activation, jit=True):
    fn = functools.partial(causal_conv1d, activation=activation, return_final_state=True, implementation=impl)
    return (jax.jit(fn) if jit else fn)(**inputs)


def check_conv(case, impl, inputs, y, final):
    y_ref, final_ref = oracle.causal_conv1d(**inputs, activation=_act(case))
    assert y.dtype == case.dtype and final.dtype == case.dtype
    assert_close(y, y_ref, case.dtype, "out", f"{impl} y")
    assert_close(final, final_ref, case.dtype, "conv_state", f"{impl} final_state")


@pytest.mark.parametrize("case", CONV_CASES + CONV_LONG)
def test_conv_matches_oracle(case, impl, rng):
    inputs = conv_inputs(rng, case)
    y, final = run_conv(impl, inputs, _act(case))
    check_conv(case, impl, inputs, y, final)


@pytest.mark.parametrize("case", rows(BASE, {"init": True}, {"dtype": BF16, "width": 3}))
def test_eager(case, impl, rng):
    inputs = conv_inputs(rng, case)
    y, final = run_conv(impl, inputs, _act(case), jit=False)
    check_conv(case, impl, inputs, y, final)
    y_only = causal_conv1d(**inputs, activation=_act(case), implementation=impl)
    np.testing.assert_array_equal(np.asarray(y_only, np.float32), np.asarray(y, np.float32))


def test_swish_is_silu(impl, rng):
    case = ConvCase(seqlen=7, dim=40)
    inputs = conv_inputs(rng, case)
    y = causal_conv1d(**inputs, activation="swish", implementation=impl)
    assert_close(y, oracle.causal_conv1d(**inputs, activation="silu")[0], case.dtype, "out", f"{impl} swish")


@pytest.mark.parametrize("case", rows(ConvCase(seqlen=12, dim=40, init=True), {}, {"dtype": BF16, "width": 2}))
def test_prefill_then_decode(case, impl, rng):
    """causal_conv1d on the first steps, then causal_conv1d_update from its final state, step by
    step in a jitted lax.scan, reproduce the oracle's conv over the whole sequence."""
    inputs = conv_inputs(rng, case)
    split = 5
    act = _act(case)

    @jax.jit
    def prefill_decode(x, weight, bias, initial_state):
        y0, state = causal_conv1d(x[:, :split], weight, bias, activation=act, initial_state=initial_state,
                                  return_final_state=True, implementation=impl)

        def step(s, x_t):
            y_t, s = causal_conv1d_update(x_t, s, weight, bias, activation=act, implementation=impl)
            return s, y_t

        state, ys = jax.lax.scan(step, state, jnp.swapaxes(x[:, split:], 0, 1))
        return jnp.concatenate([y0, jnp.swapaxes(ys, 0, 1)], axis=1), state

    y, final = prefill_decode(*(inputs[k] for k in CONV_NAMES))
    check_conv(case, impl, inputs, y, final)


# vmap: a leading axis on the activations (and states), then on the weight too.
VMAP_CASES = rows(ConvCase(seqlen=9, dim=40, init=True), {}, {"dtype": BF16, "width": 3})


@pytest.mark.parametrize("batched_params", [False, True], ids=["acts", "acts+weight"])
@pytest.mark.parametrize("case", VMAP_CASES)
def test_vmap(case, impl, batched_params, rng):
    nv = 3
    act = _act(case)
    stacked, in_axes, slices = vmap_stack(lambda: conv_inputs(rng, case), CONV_NAMES, nv,
                                          () if batched_params else ("weight", "bias"))
    f = lambda x, w, b, s: causal_conv1d(x, w, b, activation=act, initial_state=s, return_final_state=True,
                                         implementation=impl)
    y, final = jax.jit(jax.vmap(f, in_axes=in_axes))(*(stacked[k] for k in CONV_NAMES))
    for i, one in enumerate(slices):
        y_ref, final_ref = oracle.causal_conv1d(**one, activation=act)
        assert_close(y[i], y_ref, case.dtype, "out", f"{impl} vmap[{i}] y")
        assert_close(final[i], final_ref, case.dtype, "conv_state", f"{impl} vmap[{i}] final_state")



# Gradients (float32, small sizes).
GRAD_CASE = ConvCase(batch=2, seqlen=6, dim=5, width=4, init=True)


def test_check_grads(impl, rng):
    rtol, atol = tolerance(jnp.float32, "check_grads")
    inputs = conv_inputs(rng, GRAD_CASE)
    f = lambda x, w, b, s: causal_conv1d(x, w, b, activation="silu", initial_state=s, return_final_state=True,
                                         implementation=impl)
    check_grads(jax.jit(f), tuple(inputs[k] for k in CONV_NAMES), order=1, modes=["rev"], atol=atol, rtol=rtol)


@pytest.mark.parametrize("activation", ["silu", None], ids=["silu", "linear"])
def test_grad_matches_oracle(impl, activation, rng):
    inputs = conv_inputs(rng, GRAD_CASE)
    gy = rng.normal(size=inputs["x"].shape)
    gs = rng.normal(size=inputs["initial_state"].shape)

    def loss(*a):
        y, final = causal_conv1d(*a[:3], activation=activation, initial_state=a[3], return_final_state=True,
                                 implementation=impl)
        return jnp.sum(y * gy) + jnp.sum(final * gs)

    def loss_ref(**kw):
        y, final = oracle.causal_conv1d(**kw, activation=activation)
        return np.sum(y * gy) + np.sum(final * gs)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(*(inputs[k] for k in CONV_NAMES))
    ref = oracle.numerical_grad(loss_ref, inputs)
    for k, g in zip(CONV_NAMES, grads):
        assert_close(g, ref[k], jnp.float32, "grad", f"{impl} conv d/d{k}")



def test_default_implementation(rng):
    """implementation=None runs the FFI kernel where one is built for this backend, else pure JAX."""
    picked = "ffi" if ffi_available() else "xla"
    case = ConvCase(seqlen=17, init=True)
    inputs = conv_inputs(rng, case)
    for a, b in zip(run_conv(None, inputs, "silu"), run_conv(picked, inputs, "silu")):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _packed_seq_idx(rng, batch, seqlen, num_sequences):
    """Nondecreasing ids per row, some ids skipped, the first id not always 0."""
    rows_ = []
    for _ in range(batch):
        cuts = np.sort(rng.choice(np.arange(1, seqlen), size=min(num_sequences - 2, seqlen - 1), replace=False))
        ids = np.searchsorted(cuts, np.arange(seqlen), side="right") + rng.integers(0, 2)
        rows_.append(np.minimum(ids, num_sequences - 1))
    return jnp.asarray(np.stack(rows_), jnp.int32)


@pytest.mark.parametrize("case", rows(ConvCase(seqlen=40, dim=40, init=True), {}, {"init": False},
                                      {"width": 2}, {"width": 8, "seqlen": 9}, {"dtype": BF16, "silu": False},
                                      {"seqlen": 1}))
def test_packed_equals_separate(case, impl, rng):
    """seq_idx: y and every sequence's final conv state equal convolving each sequence alone."""
    inputs = conv_inputs(rng, case)
    nseq = 5
    seq_idx = _packed_seq_idx(rng, case.batch, case.seqlen, nseq)
    fn = functools.partial(causal_conv1d, activation=_act(case), return_final_state=True, seq_idx=seq_idx,
                           num_sequences=nseq, implementation=impl)
    y, finals = jax.jit(fn)(**inputs)
    y_ref, finals_ref = oracle.causal_conv1d_packed(**inputs, activation=_act(case), seq_idx=np.asarray(seq_idx),
                                                    num_sequences=nseq)
    assert finals.shape == (case.batch, nseq, case.dim, case.width - 1) and finals.dtype == case.dtype
    assert_close(y, y_ref, case.dtype, "out", f"{impl} packed y")
    assert_close(finals, finals_ref, case.dtype, "conv_state", f"{impl} packed final states")


def test_seq_idx_of_any_integer_dtype(impl, rng):
    """seq_idx as int64 NumPy or int16 ids gives what int32 ids give (they are cast to int32)."""
    case = ConvCase(seqlen=24, dim=24)
    inputs = conv_inputs(rng, case)
    seq_idx = np.asarray(_packed_seq_idx(rng, case.batch, case.seqlen, 3))
    run = lambda ids: causal_conv1d(**inputs, activation=_act(case), return_final_state=True, seq_idx=ids,
                                    num_sequences=3, implementation=impl)
    want = run(jnp.asarray(seq_idx, jnp.int32))
    for ids in (seq_idx.astype(np.int64), jnp.asarray(seq_idx, jnp.int16)):
        for g, w in zip(run(ids), want):
            np.testing.assert_array_equal(np.asarray(g, np.float32), np.asarray(w, np.float32))


def test_packed_grad_matches_oracle(impl, rng):
    inputs = conv_inputs(rng, GRAD_CASE)
    seq_idx = jnp.asarray([[0, 0, 1, 1, 1, 2], [3, 3, 3, 3, 4, 4]], jnp.int32)
    gy = rng.normal(size=inputs["x"].shape)

    def loss(*a):
        y = causal_conv1d(*a[:3], activation="silu", initial_state=a[3], seq_idx=seq_idx, implementation=impl)
        return jnp.sum(y * gy)

    def loss_ref(**kw):
        return np.sum(oracle.causal_conv1d_packed(**kw, activation="silu", seq_idx=np.asarray(seq_idx),
                                                  num_sequences=5)[0] * gy)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(*(inputs[k] for k in CONV_NAMES))
    ref = oracle.numerical_grad(loss_ref, inputs)
    for k, g in zip(CONV_NAMES, grads):
        assert_close(g, ref[k], jnp.float32, "grad", f"{impl} packed conv d/d{k}")
