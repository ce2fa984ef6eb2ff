"""In-place decode updates: the FFI selective_state_update and causal_conv1d_update alias their state
input to their state output, so under jax.jit with the state donated the new state is written into
the old state's buffer (same pointer), the donated array is deleted, and the values are right.

Checked on CPU with jax 0.10.2: the CPU client honours donation (the pointers match), so the test
checks the pointers there as on a GPU, and the compiled HLO's input_output_alias as well."""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import oracle
from conftest import ConvCase, ScanCase, assert_close, conv_update_inputs, requires_ffi, rows, update_inputs
from mamba_jax.ops import causal_conv1d_update, selective_state_update

pytestmark = requires_ffi

SSM_NAMES = ("state", "x", "dt", "A", "B", "C", "D", "z", "dt_bias")
CONV_NAMES = ("x", "conv_state", "weight", "bias")


def _alias_re(output_index: int, param: int) -> str:
    # e.g. "input_output_alias={ {1}: (0, {}, may-alias) }" in the compiled module's header
    return r"input_output_alias=\{[^\n]*\{" + str(output_index) + r"\}: \(" + str(param) + r", \{\}"


def _check_in_place(fn, args, donated: int, state_out: int):
    compiled = jax.jit(fn, donate_argnums=donated).lower(*args).compile()
    assert re.search(_alias_re(state_out, donated), compiled.as_text()), "state is not aliased in the HLO"
    before = args[donated]
    pointer = before.unsafe_buffer_pointer()
    out = jax.jit(fn, donate_argnums=donated)(*args)
    jax.block_until_ready(out)
    assert before.is_deleted(), "the donated state was not consumed"
    assert out[state_out].unsafe_buffer_pointer() == pointer, "the new state is not in the old state's buffer"
    return out


@pytest.mark.parametrize("case", rows(ScanCase(seqlen=0), {}, {"dtype": jnp.bfloat16, "ngroups": 2, "dstate": 64}))
def test_selective_state_update_in_place(case, rng):
    inputs = update_inputs(rng, case)
    y_ref, state_ref = oracle.selective_state_update(**inputs, dt_softplus=True)  # before the state is donated
    fn = functools.partial(selective_state_update, dt_softplus=True, implementation="ffi")
    y, new_state = _check_in_place(fn, [inputs[k] for k in SSM_NAMES], donated=0, state_out=1)
    assert_close(y, y_ref, case.dtype, "out", "in-place y")
    assert_close(new_state, state_ref, case.dtype, "state", "in-place new_state")


@pytest.mark.parametrize("case", rows(ConvCase(seqlen=0), {}, {"dtype": jnp.float16, "width": 2}, {"width": 8}))
def test_causal_conv1d_update_in_place(case, rng):
    inputs = conv_update_inputs(rng, case)
    y_ref, state_ref = oracle.causal_conv1d_update(**inputs, activation="silu")
    fn = functools.partial(causal_conv1d_update, activation="silu", implementation="ffi")
    y, new_state = _check_in_place(fn, [inputs[k] for k in CONV_NAMES], donated=1, state_out=1)
    assert_close(y, y_ref, case.dtype, "out", "in-place y")
    assert_close(new_state, state_ref, case.dtype, "conv_state", "in-place new_conv_state")


def test_without_donation_the_state_is_kept(rng):
    """No donation: XLA copies, the caller's state stays alive and unchanged."""
    inputs = update_inputs(rng, ScanCase(seqlen=0))
    kept = np.array(inputs["state"])
    fn = jax.jit(functools.partial(selective_state_update, dt_softplus=True, implementation="ffi"))
    _, new_state = fn(*(inputs[k] for k in SSM_NAMES))
    assert not inputs["state"].is_deleted()
    assert new_state.unsafe_buffer_pointer() != inputs["state"].unsafe_buffer_pointer()
    np.testing.assert_array_equal(np.asarray(inputs["state"]), kept)
    _, state_ref = oracle.selective_state_update(**inputs, dt_softplus=True)
    assert_close(new_state, state_ref, jnp.float32, "state", "new_state")


def test_repeated_donated_steps(rng):
    """Five donated decode steps in a row keep reusing one buffer and match the oracle's five steps."""
    case = ScanCase(seqlen=0, dim=40)
    inputs = update_inputs(rng, case)
    step = jax.jit(functools.partial(selective_state_update, dt_softplus=True, implementation="ffi"),
                   donate_argnums=0)
    state = inputs["state"]
    state_ref = np.asarray(state, np.float64)
    pointer = state.unsafe_buffer_pointer()
    rest = [inputs[k] for k in SSM_NAMES[1:]]
    for _ in range(5):
        _, state = step(state, *rest)
        _, state_ref = oracle.selective_state_update(state_ref, *rest, dt_softplus=True)
        assert state.unsafe_buffer_pointer() == pointer
    assert_close(state, state_ref, jnp.float32, "state", "after 5 donated steps")
