"""Slot-indexed state pools (issue 16, item 4): the decode-step ops with `state_indices` update rows of a
pool [n_slots, ...] in place. Oracle: the float64 NumPy step (tests/oracle.py, oracle_ssd.py) on the
gathered rows, scattered into a copy of the pool; the other slots must come back bit-identical.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import oracle
import oracle_ssd
from conftest import (IMPLEMENTATIONS, ConvCase, ScanCase, assert_close, conv_update_inputs, requires_ffi,
                      update_inputs)
from mamba_jax.ops import causal_conv1d_update, selective_state_update, ssd_state_update

N_SLOTS = 7
SLOTS = [5, 0, 3]
F32 = jnp.float32


def _ssd_inputs(rng, batch, dtype=F32, nheads=4, headdim=8, dstate=16, ngroups=2):
    act = lambda *s: jnp.asarray(rng.normal(0.0, 1.0, s), dtype)
    return {"state": jnp.asarray(rng.normal(0.0, 0.5, (batch, nheads, headdim, dstate)), F32),
            "x": act(batch, nheads, headdim), "dt": act(batch, nheads),
            "A": jnp.asarray(-np.exp(rng.normal(0.0, 1.0, nheads)), F32),
            "B": act(batch, ngroups, dstate), "C": act(batch, ngroups, dstate),
            "D": jnp.asarray(rng.normal(0.0, 1.0, nheads), F32), "z": act(batch, nheads, headdim),
            "dt_bias": jnp.asarray(rng.uniform(-4.0, -2.0, nheads), F32)}


def _cases(rng, dtype):
    """(name, op, keyword arguments with the pool as the state and len(SLOTS) rows, state name, oracle)."""
    b = len(SLOTS)
    ssm = update_inputs(rng, ScanCase(seqlen=0, batch=N_SLOTS, dim=40, ngroups=2, dtype=dtype))
    ssm = {k: (v[:b] if k in ("x", "dt", "B", "C", "z") else v) for k, v in ssm.items()}
    conv = conv_update_inputs(rng, ConvCase(seqlen=0, batch=N_SLOTS, dim=40, dtype=dtype))
    conv["x"] = conv["x"][:b]
    ssd = _ssd_inputs(rng, N_SLOTS, dtype)
    ssd = {k: (v[:b] if k in ("x", "dt", "B", "C", "z") else v) for k, v in ssd.items()}
    return [
        ("selective_state_update", functools.partial(selective_state_update, dt_softplus=True), ssm, "state",
         functools.partial(oracle.selective_state_update, dt_softplus=True)),
        ("causal_conv1d_update", functools.partial(causal_conv1d_update, activation="silu"), conv, "conv_state",
         functools.partial(oracle.causal_conv1d_update, activation="silu")),
        ("ssd_state_update", functools.partial(ssd_state_update, dt_softplus=True), ssd, "state",
         functools.partial(oracle_ssd.ssd_state_update, dt_softplus=True)),
    ]


ROW_ARGS = ("x", "dt", "B", "C", "z")


def _expected(ref, args, state_name, slots, rows=None):
    """The oracle's (y of the batch rows `rows`, pool) after rows[i] updates slot slots[i]."""
    rows = list(range(len(slots))) if rows is None else rows
    pool = np.asarray(args[state_name], np.float64)
    picked = {k: (None if v is None else np.asarray(v)[rows]) if k in ROW_ARGS else v for k, v in args.items()}
    y, new_rows = ref(**{**picked, state_name: pool[slots]})
    pool = pool.copy()
    pool[slots] = new_rows
    return y, pool


OPS = ["selective_state_update", "causal_conv1d_update", "ssd_state_update"]


@pytest.mark.parametrize("dtype", [F32, jnp.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("op", OPS)
def test_pool_update_matches_oracle(op, dtype, impl, rng):
    name, fn, args, state_name, ref = next(c for c in _cases(rng, dtype) if c[0] == op)
    y_ref, pool_ref = _expected(ref, args, state_name, SLOTS)
    idx = jnp.asarray(SLOTS, jnp.int32)
    y, pool = jax.jit(functools.partial(fn, implementation=impl))(**args, state_indices=idx)
    quantity = "conv_state" if state_name == "conv_state" else "state"
    assert_close(y, y_ref, dtype, "out", f"{op} y")
    assert_close(pool, pool_ref, dtype, quantity, f"{op} pool")
    others = [s for s in range(N_SLOTS) if s not in SLOTS]
    np.testing.assert_array_equal(np.asarray(pool)[others], np.asarray(args[state_name])[others])


@pytest.mark.parametrize("op", OPS)
def test_traced_out_of_range_slots_are_skipped(op, impl, rng):
    """Under jit the slot values are not known to Python: a row with slot -1 or n_slots touches no
    state (no out-of-bounds access) and gets y = 0; the valid row is updated."""
    name, fn, args, state_name, ref = next(c for c in _cases(rng, F32) if c[0] == op)
    slots = [N_SLOTS, 2, -1]
    y_ref, pool_ref = _expected(ref, args, state_name, [2], rows=[1])
    y, pool = jax.jit(functools.partial(fn, implementation=impl))(**args, state_indices=jnp.asarray(slots, jnp.int32))
    y = np.asarray(y, np.float64)
    assert np.all(y[0] == 0) and np.all(y[2] == 0)
    assert_close(y[1], y_ref[0], F32, "out", f"{op} valid row")
    quantity = "conv_state" if state_name == "conv_state" else "state"
    assert_close(pool, pool_ref, F32, quantity, f"{op} pool")


@pytest.mark.parametrize("op", OPS)
def test_concrete_bad_slots_are_rejected(op, rng):
    name, fn, args, state_name, _ = next(c for c in _cases(rng, F32) if c[0] == op)
    with pytest.raises(ValueError, match=r"state_indices\[1\] = 7 is outside the pool: .* 7 slots"):
        fn(**args, state_indices=jnp.asarray([0, 7, 1], jnp.int32))
    with pytest.raises(ValueError, match=r"slot 4 appears in state_indices more than once \(rows \[0, 2\]\)"):
        fn(**args, state_indices=np.asarray([4, 1, 4], np.int32))
    with pytest.raises(TypeError, match="state_indices has dtype int64, expected int32"):
        fn(**args, state_indices=np.asarray([4, 1, 2], np.int64))
    with pytest.raises(ValueError, match="state_indices has shape"):
        fn(**args, state_indices=jnp.asarray([4, 1], jnp.int32))


@requires_ffi
@pytest.mark.parametrize("op", OPS)
def test_empty_pool_is_rejected(op, rng):
    """A pool of 0 slots has none for the batch's rows: a clear error on every path (traced slots could
    not be checked against it, and the kernels would have no slot to read)."""
    name, fn, args, state_name, ref = next(c for c in _cases(rng, F32) if c[0] == op)
    args = dict(args, **{state_name: args[state_name][:0]})
    for impl in ("ffi", "xla"):
        with pytest.raises(ValueError, match=rf"{op}: {state_name} is a pool of 0 slots"):
            jax.jit(functools.partial(fn, implementation=impl))(**args, state_indices=jnp.asarray(SLOTS, jnp.int32))


@requires_ffi
@pytest.mark.parametrize("op", OPS)
def test_pool_update_in_place_under_donation(op, rng):
    name, fn, args, state_name, ref = next(c for c in _cases(rng, F32) if c[0] == op)
    y_ref, pool_ref = _expected(ref, args, state_name, SLOTS)
    names = list(args)
    donated = names.index(state_name)
    step = jax.jit(lambda *a: fn(*a, state_indices=jnp.asarray(SLOTS, jnp.int32), implementation="ffi"),
                   donate_argnums=donated)
    pool_in = args[state_name]
    pointer = pool_in.unsafe_buffer_pointer()
    y, pool = step(*(args[k] for k in names))
    jax.block_until_ready(pool)
    assert pool_in.is_deleted(), "the donated pool was not consumed"
    assert pool.unsafe_buffer_pointer() == pointer, "the pool was not updated in place"
    quantity = "conv_state" if state_name == "conv_state" else "state"
    assert_close(pool, pool_ref, F32, quantity, f"{op} donated pool")


@pytest.mark.parametrize("steps_per_sync", [1, 4])
@pytest.mark.parametrize("family", ["mamba1", "mamba2"])
def test_continuous_batching_equals_generating_each_request_alone(family, steps_per_sync):
    """Six requests through a pool of 3 slots: different prompt lengths and budgets, one stopping at
    EOS, two arriving while others run; freed slots are reused. Each request's tokens == generating
    it alone, with one decode step per host round trip and with blocks of 4 (requests finishing
    inside a block)."""
    import mamba_jax
    from mamba_jax.serving import ContinuousBatcher
    from test_state import _model

    model = _model(family)
    rng = np.random.default_rng(7)
    prompts = [rng.integers(0, 50, n).tolist() for n in (5, 12, 1, 9, 3, 17)]
    budgets = [6, 2, 9, 4, 7, 3]
    alone = [mamba_jax.generate(model, [p], n)[0] for p, n in zip(prompts, budgets)]
    eos = alone[2][4]  # request 2 stops at its 5th token (others too if they produce it)
    want = [a[:a.index(eos) + 1] if eos in a else a for a in alone]

    server = ContinuousBatcher(model, n_slots=3, steps_per_sync=steps_per_sync)
    ids = [server.submit(p, n, eos_token_id=eos) for p, n in zip(prompts[:4], budgets[:4])]
    server.step()
    server.step()
    ids += [server.submit(p, n, eos_token_id=eos) for p, n in zip(prompts[4:], budgets[4:])]
    out = server.run()
    assert [out[i] for i in ids] == want
    assert server.steps < sum(len(w) for w in want)  # requests shared decode steps


def test_batcher_arguments_are_checked():
    from mamba_jax.serving import ContinuousBatcher
    from test_state import _model

    model = _model("mamba1")
    for bad in (0, 3, 2.0):
        with pytest.raises(ValueError, match="steps_per_sync"):
            ContinuousBatcher(model, n_slots=2, steps_per_sync=bad)
    with pytest.raises(ValueError, match="n_slots"):
        ContinuousBatcher(model, n_slots=0)
    server = ContinuousBatcher(model, n_slots=2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        server.submit([1, 2], 0)
    with pytest.raises(ValueError, match="prompt"):
        server.submit([], 3)
