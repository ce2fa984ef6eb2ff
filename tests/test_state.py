"""The cache as a first-class object (issue 16, items 1-3), both model families, on tiny random models:
continuing a prefill from a cache, chunked prefill, snapshots (safetensors) and forks, multi-turn
sessions. The oracle of every test is the model run over the whole sequence at once (no cache, one
chunk), which tests/test_model*.py check against transformers; logits and states compare with the f32
rows of the tolerance table, greedy tokens exactly.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import mamba_jax
from mamba_jax.nn import Mamba2Config, MambaConfig, MambaLM
from mamba_jax.state import Session, concat_caches, fork, load_cache, save_cache, take_rows

from conftest import IMPLEMENTATIONS, assert_close

VOCAB = 50
F32 = jnp.float32


def _config(family):
    if family == "mamba1":
        return MambaConfig(vocab_size=VOCAB, d_model=24, n_layer=2, d_state=4, d_conv=4,
                           pad_vocab_size_multiple=8, tie_embeddings=False)
    return Mamba2Config(vocab_size=VOCAB, d_model=32, n_layer=2, d_state=8, d_conv=4, headdim=16, ngroups=2,
                        chunk_size=4, pad_vocab_size_multiple=8, tie_embeddings=False)


@functools.lru_cache(maxsize=None)
def _model(family, impl=None):
    model = MambaLM(_config(family), implementation=impl, rngs=nnx.Rngs(3))
    # Larger head and mixer outputs than the initialisation's: logits far from uniform, so greedy
    # choices are not near-ties.
    model.lm_head.kernel[...] = model.lm_head.kernel[...] * 3.0
    for layer in model.layers:
        layer.mixer.out_proj.kernel[...] = layer.mixer.out_proj.kernel[...] * 5.0
    return model


@functools.lru_cache(maxsize=None)
def _prefill(family, impl, chunk_size=None, last_only=False):
    model = _model(family, impl)
    return jax.jit(lambda ids, mask, cache: model.prefill(ids, mask, cache=cache, chunk_size=chunk_size,
                                                          last_only=last_only))


def _ids(rng, b, l):
    return jnp.asarray(rng.integers(0, VOCAB, (b, l)), jnp.int32)


def _assert_cache_close(actual, expected, what):
    for name in ("conv_states", "ssm_states"):
        for i, (a, e) in enumerate(zip(getattr(actual, name), getattr(expected, name))):
            assert_close(a, np.asarray(e, np.float64), F32, "state", f"{what}: {name}[{i}]")


FAMILIES = ["mamba1", "mamba2"]
family_impl = pytest.mark.parametrize("family,impl", [(f, i) for f in FAMILIES for i in IMPLEMENTATIONS],
                                      ids=[f"{f}-{i}" for f in FAMILIES for i in IMPLEMENTATIONS])


@family_impl
def test_prefill_continues_from_cache(family, impl, rng):
    a, b = _ids(rng, 2, 13), _ids(rng, 2, 9)
    full_logits, full_cache = _prefill(family, impl)(jnp.concatenate([a, b], 1), None, None)
    _, cache_a = _prefill(family, impl)(a, None, None)
    logits_b, cache_b = _prefill(family, impl)(b, None, cache_a)
    assert_close(logits_b, np.asarray(full_logits[:, 13:], np.float64), F32, "out", "logits of B after A")
    _assert_cache_close(cache_b, full_cache, "cache after A then B")


@pytest.mark.parametrize("family", FAMILIES)
def test_ragged_left_padded_continuation_equals_each_row_alone(family, rng):
    """Rows continue from their own caches with different numbers of new tokens, left-padded; a row
    with no new tokens at all keeps its cache exactly. (The masking is model code, the same for every
    implementation; the ops' initial states are covered per implementation above.)"""
    impl = None
    lens_a, lens_b = [13, 5, 9], [9, 3, 0]
    a, b = _ids(rng, 3, 13), _ids(rng, 3, 9)
    mask_a = jnp.asarray([[j >= 13 - n for j in range(13)] for n in lens_a])
    mask_b = jnp.asarray([[j >= 9 - n for j in range(9)] for n in lens_b])
    _, cache_a = _prefill(family, impl)(a, mask_a, None)
    logits_b, cache_b = _prefill(family, impl)(b, mask_b, cache_a)
    for r, (na, nb) in enumerate(zip(lens_a, lens_b)):
        alone = jnp.concatenate([a[r:r + 1, 13 - na:], b[r:r + 1, 9 - nb:]], 1)
        logits, cache = _prefill(family, impl)(alone, None, None)
        if nb:
            assert_close(logits_b[r:r + 1, 9 - nb:], np.asarray(logits[:, na:], np.float64), F32, "out",
                         f"row {r}: logits")
        _assert_cache_close(take_rows(cache_b, [r]), cache, f"row {r}")
    assert all(np.array_equal(x[2], y[2]) for x, y in zip(jax.tree.leaves(cache_b), jax.tree.leaves(cache_a)))


@pytest.mark.parametrize("family", FAMILIES)
def test_chunked_prefill_equals_one_chunk(family, rng):
    """A dense batch from no cache, and a ragged one continuing from a cache; 5 whole chunks after a
    first piece of 5 positions."""
    impl, l, chunk = None, 45, 8
    ids = _ids(rng, 2, l)
    _, start = _prefill(family, impl)(_ids(rng, 2, 6), None, None)
    ragged = jnp.asarray([[True] * l, [j >= 30 for j in range(l)]])
    for mask, cache in ((None, None), (ragged, start)):
        ref_logits, ref_cache = _prefill(family, impl)(ids, mask, cache)
        logits, got_cache = _prefill(family, impl, chunk)(ids, mask, cache)
        keep = np.ones((2, l), bool) if mask is None else np.asarray(mask)
        assert_close(np.asarray(logits)[keep], np.asarray(ref_logits, np.float64)[keep], F32, "out",
                     "chunked logits")
        _assert_cache_close(got_cache, ref_cache, "chunked cache")
    last, last_cache = _prefill(family, impl, chunk, True)(ids, ragged, start)
    assert_close(last, np.asarray(ref_logits[:, -1], np.float64), F32, "out", "chunked last logits")
    _assert_cache_close(last_cache, ref_cache, "chunked cache (last_only)")


def test_default_chunk_size():
    from mamba_jax.nn.model import default_chunk_size

    assert default_chunk_size(1) == 8192 and default_chunk_size(4) == 2048 and default_chunk_size(1000) == 256


@pytest.mark.parametrize("family", FAMILIES)
def test_snapshot_round_trip_and_fork_equal_full_prefill(family, tmp_path, rng):
    impl = None
    prefix = _ids(rng, 1, 11)
    _, cache = _prefill(family, impl)(prefix, None, None)
    path = str(tmp_path / "prefix.safetensors")
    save_cache(path, cache, {"tokens": np.asarray(prefix[0]).tolist()})
    loaded, meta = load_cache(path, with_metadata=True)
    assert meta == {"tokens": np.asarray(prefix[0]).tolist()}
    for x, y in zip(jax.tree.leaves(loaded), jax.tree.leaves(cache)):
        assert x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y))
    # three continuations of one prefix, ragged (left-padded), from one prefill of the prefix
    lens = [7, 2, 5]
    suffix = _ids(rng, 3, 7)
    mask = jnp.asarray([[j >= 7 - n for j in range(7)] for n in lens])
    logits, caches = _prefill(family, impl)(suffix, mask, fork(loaded, 3))
    for r, n in enumerate(lens):
        ref_logits, ref_cache = _prefill(family, impl)(jnp.concatenate([prefix, suffix[r:r + 1, 7 - n:]], 1),
                                                       None, None)
        assert_close(logits[r, 7 - n:], np.asarray(ref_logits[0, 11:], np.float64), F32, "out", f"fork row {r}")
        _assert_cache_close(take_rows(caches, [r]), ref_cache, f"fork row {r}")
    both = concat_caches([take_rows(caches, [2]), take_rows(caches, [0])])
    assert np.array_equal(np.asarray(both.ssm_states[0][1]), np.asarray(caches.ssm_states[0][0]))


def test_load_cache_rejects_other_files(tmp_path):
    from safetensors.numpy import save_file

    path = str(tmp_path / "weights.safetensors")
    save_file({"w": np.zeros(2, np.float32)}, path)
    with pytest.raises(ValueError, match="not a mamba_jax cache"):
        load_cache(path)


@pytest.mark.parametrize("family", FAMILIES)
def test_session_turns_equal_generating_the_whole_conversation(family, tmp_path):
    model = _model(family)
    turn1, turn2, turn3 = [3, 14, 15, 9, 26], [5, 35], [8, 9, 7, 9, 11, 4]
    s = Session(model)
    out1 = s.generate(turn1, 6)
    out2 = s.generate(turn2, 5)
    s.append(turn3)
    path = str(tmp_path / "chat.safetensors")
    s.save(path)
    s = Session.load(model, path)
    out3 = s.generate([], 4)  # continue right after turn 3
    assert s.tokens == turn1 + out1 + turn2 + out2 + turn3 + out3
    assert mamba_jax.generate(model, [turn1], 6)[0] == out1
    assert mamba_jax.generate(model, [turn1 + out1 + turn2], 5)[0] == out2
    assert mamba_jax.generate(model, [turn1 + out1 + turn2 + out2 + turn3], 4)[0] == out3


def test_generate_with_forked_cache_and_returned_cache_ragged_eos():
    """A batch continuing from forks of one prefix; rows stop at EOS at different steps, and the
    returned cache of each row is the state of its own tokens (a finished row's EOS not fed)."""
    model = _model("mamba1")
    prefix, prompts = [3, 14, 15, 9, 26], [[5, 35, 8], [2], [18, 28, 18, 28]]
    _, cache = _prefill("mamba1", None)(jnp.asarray([prefix], jnp.int32), None, None)
    alone = [mamba_jax.generate(model, [prefix + p], 12)[0] for p in prompts]
    eos = alone[1][3]  # row 1 stops at its 4th token; the others when they reach it, if at all
    out, got = mamba_jax.generate(model, prompts, 12, eos_token_id=eos, cache=fork(cache, 3), return_cache=True)
    for r, p in enumerate(prompts):
        want = alone[r][:alone[r].index(eos) + 1] if eos in alone[r] else alone[r]
        assert out[r] == want
        fed = prefix + p + out[r][:-1]
        _, ref_cache = _prefill("mamba1", None)(jnp.asarray([fed], jnp.int32), None, None)
        _assert_cache_close(take_rows(got, [r]), ref_cache, f"returned cache row {r}")


def test_generate_rejects_cache_of_other_batch():
    model = _model("mamba1")
    with pytest.raises(ValueError, match="cache has 2 rows but 1 prompts"):
        mamba_jax.generate(model, [[1, 2]], 2, cache=model.init_cache(2))
