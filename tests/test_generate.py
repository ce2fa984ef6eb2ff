"""mamba_jax.generate on a tiny random MambaLM (CPU in CI).

Oracles: greedy tokens are checked against a step-by-step recomputation that runs the model's full
forward over prompt + tokens so far, without the cache, and takes a float64 NumPy argmax; sampled
tokens are checked for membership in the top-k / nucleus set computed in float64 NumPy from those
same full-forward logits. The sampler itself is tested in test_sampling.py.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import jax
import jax.numpy as jnp
from flax import nnx

import mamba_jax
from mamba_jax.generate import Generator, generate

gen_mod = importlib.import_module("mamba_jax.generate")  # `mamba_jax.generate` names the function
from mamba_jax.nn import MambaConfig, MambaLM
from test_sampling import allowed_set

VOCAB = 50  # padded to 56 in the logits
PROMPTS = [[3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9], [2, 7], [18], [28, 18, 28, 4, 5]]
N = 10  # new tokens in most tests: one decode-loop shape to compile


def _tiny_model(implementation=None, seed=0):
    cfg = MambaConfig(vocab_size=VOCAB, d_model=24, n_layer=2, d_state=4, pad_vocab_size_multiple=8,
                      tie_embeddings=False)
    model = MambaLM(cfg, implementation=implementation, rngs=nnx.Rngs(seed))
    # Larger head and mixer outputs than the initialisation's, so the random model's logits are far
    # from uniform (greedy choices are not near-ties) and its greedy output wanders over the
    # vocabulary instead of repeating one token.
    model.lm_head.kernel[...] = model.lm_head.kernel[...] * 3.0
    for layer in model.layers:
        layer.mixer.out_proj.kernel[...] = layer.mixer.out_proj.kernel[...] * 5.0
    return model


@pytest.fixture(scope="module")
def model():
    return _tiny_model()


_ORACLE_LEN = 32  # prompts + generated tokens stay below this
_oracle_fns = {}


def _full_logits(model, ids):
    """Oracle logits after `ids`: the model's full forward over the whole sequence (no cache, no
    prefill/step), read at the last real position, in float64. The sequence is right-padded to one
    length (the model is causal, so later positions do not change earlier logits) so that one
    compiled forward serves every prefix."""
    assert len(ids) <= _ORACLE_LEN
    fwd = _oracle_fns.get(id(model))
    if fwd is None:
        fwd = _oracle_fns[id(model)] = (model, jax.jit(lambda x: model(x)))
    padded = np.zeros((1, _ORACLE_LEN), np.int32)
    padded[0, :len(ids)] = ids
    out = fwd[1](jnp.asarray(padded))
    return np.asarray(out[0, len(ids) - 1, :VOCAB], np.float64)


def _greedy_oracle(model, prompt, n):
    ids = list(prompt)
    out = []
    for _ in range(n):
        tok = int(np.argmax(_full_logits(model, ids)))
        out.append(tok)
        ids.append(tok)
    return out


@pytest.mark.parametrize("implementation", [None, "xla"], ids=["impl-default", "impl-xla"])
def test_greedy_ragged_batch_matches_oracle_and_each_prompt_alone(implementation):
    m = _tiny_model(implementation)
    n = N
    batch = generate(m, PROMPTS, n)
    assert [len(r) for r in batch] == [n] * len(PROMPTS)
    for p, row in zip(PROMPTS, batch):
        assert generate(m, [p], n)[0] == row
        assert row == _greedy_oracle(m, p, n)


def test_greedy_tokens_are_not_trivial(model):
    # Guards the tests above against a degenerate model that repeats one token everywhere.
    out = generate(model, PROMPTS, N)
    assert len({t for row in out for t in row}) >= 4


def test_prompt_as_array_and_max_new_tokens_one(model):
    arr = np.arange(44, dtype=np.int32).reshape(4, 11) % VOCAB
    assert generate(model, arr, N) == generate(model, arr.tolist(), N)
    one = generate(model, PROMPTS, 1)
    assert one == [r[:1] for r in generate(model, PROMPTS, N)]


def test_package_generate_is_the_function(model):
    # The submodule is imported above; the package's name still calls the function.
    assert mamba_jax.generate is generate
    assert mamba_jax.generate(model, [[1, 2]], N) == generate(model, [[1, 2]], N)


def test_padded_vocab_columns_never_sampled():
    m = _tiny_model(seed=1)
    # Make the padding columns of the head dominate the logits: without the mask, greedy decoding
    # would pick them.
    k = m.lm_head.kernel
    big = jnp.asarray(np.random.default_rng(0).standard_normal((k.shape[0], 56 - VOCAB)) * 50.0, k.dtype)
    k[...] = k[...].at[:, VOCAB:].set(big)
    full = np.asarray(m(jnp.asarray([PROMPTS[0]], jnp.int32))[0, -1])
    assert int(np.argmax(full)) >= VOCAB  # the test means something
    for temperature in (0.0, 2.0):
        out = generate(m, PROMPTS, N, temperature=temperature, seed=3)
        assert all(0 <= t < VOCAB for row in out for t in row)


def test_seed_reproducible_and_seeds_differ(model):
    kw = dict(temperature=1.0, top_p=0.95)
    a = generate(model, PROMPTS, N, seed=7, **kw)
    b = generate(model, PROMPTS, N, seed=7, **kw)
    c = generate(model, PROMPTS, N, seed=8, **kw)
    assert a == b
    assert a != c


@pytest.mark.parametrize("seed", [0, 1, 2**40])
def test_top_k_1_and_tiny_top_p_equal_greedy(model, seed):
    greedy = generate(model, PROMPTS, N)
    assert generate(model, PROMPTS, N, temperature=0.9, top_k=1, seed=seed) == greedy
    assert generate(model, PROMPTS, N, temperature=0.9, top_p=1e-6, seed=seed) == greedy


def test_temperature_zero_ignores_top_k_top_p(model):
    assert generate(model, PROMPTS, N, top_k=3, top_p=0.5, seed=5) == generate(model, PROMPTS, N)


@pytest.mark.parametrize("top_k,top_p", [(3, None), (None, 0.6), (5, 0.7)], ids=["k3", "p0.6", "k5-p0.7"])
def test_sampled_tokens_lie_in_the_allowed_set(model, top_k, top_p):
    temperature = 3.0  # flattens the distribution, so tokens outside the set would show up
    outs = generate(model, PROMPTS, N, temperature=temperature, top_k=top_k, top_p=top_p, seed=11)
    for prompt, row in zip(PROMPTS, outs):
        ids = list(prompt)
        for tok in row:
            z = _full_logits(model, ids) / temperature
            allowed = allowed_set(z, top_k, top_p, slack=True)
            assert allowed[tok], f"token {tok} outside the allowed set at prefix {ids}"
            ids.append(tok)


def test_eos_stops_each_row_and_the_loop(model):
    n = N
    free = generate(model, PROMPTS, n)
    # EOS = row 0's token at position 3 (the first position where it appears in row 0).
    eos = free[0][3]
    p0 = free[0].index(eos)
    g = Generator(model)
    stopped = g.generate(PROMPTS, n, eos_token_id=eos)
    for row_free, row in zip(free, stopped):
        cut = row_free.index(eos) + 1 if eos in row_free else n
        assert row == row_free[:cut]
    # A prompt alone stops the decode loop at its EOS: decode step i produces position i.
    g.generate([PROMPTS[0]], n, eos_token_id=eos)
    assert g.last_stats.decode_steps == p0
    assert g.last_stats.new_tokens == [p0 + 1]


def test_eos_on_first_token_skips_decoding(model):
    first = generate(model, [PROMPTS[1]], 1)[0][0]
    g = Generator(model)
    assert g.generate([PROMPTS[1]], N, eos_token_id=first) == [[first]]
    assert g.last_stats.decode_steps == 0


@pytest.mark.parametrize("chunk_size", [1, 3, 64])
def test_streaming_delivers_the_same_tokens_in_order(model, chunk_size):
    kw = dict(temperature=0.9, top_k=10, top_p=0.9, seed=4)
    full = generate(model, PROMPTS, N + 1, **kw)
    chunks = []
    streamed = generate(model, PROMPTS, N + 1, stream=chunks.append, chunk_size=chunk_size, **kw)
    assert streamed == full
    rebuilt = [sum((c[i] for c in chunks), []) for i in range(len(PROMPTS))]
    assert rebuilt == full
    # after the prefill's first token, every chunk holds at most chunk_size tokens per row
    assert all(len(c[0]) == 1 for c in chunks[:1])
    assert all(max(len(r) for r in c) <= chunk_size for c in chunks[1:])
    if chunk_size == 3:
        assert len(chunks) == 1 + 4  # 10 decode steps in chunks of 3


def test_stream_iterator_with_eos(model):
    free = generate(model, PROMPTS, N)
    eos = free[1][2]
    pieces = list(Generator(model).stream(PROMPTS, N, eos_token_id=eos, chunk_size=3))
    rebuilt = [sum((c[i] for c in pieces), []) for i in range(len(PROMPTS))]
    assert rebuilt == generate(model, PROMPTS, N, eos_token_id=eos)


def test_prompt_lengths_in_one_bucket_reuse_the_compiled_functions(model):
    g = Generator(model)
    g.generate([[1, 2, 3, 4, 5, 6, 7, 8, 9]], N)  # bucket 16
    g.generate([[9, 8, 7, 6, 5, 4, 3, 2, 1, 1, 2, 3]], N)  # 12 tokens: bucket 16 again
    assert g.last_stats.prompt_bucket == 16
    assert g.last_stats.compile_s == 0.0
    # a new temperature and seed are runtime values: no recompilation either
    g.generate([[1, 2, 3]], N, temperature=0.5, seed=1)
    g.generate([[3, 2, 1]], N, temperature=1.5, seed=2)
    assert g.last_stats.compile_s == 0.0


BAD = [
    (dict(prompts=[]), ValueError, "prompts is empty"),
    (dict(prompts=[[1, 2], []]), ValueError, "prompt 1 is empty"),
    (dict(prompts=[[1, VOCAB]]), ValueError, "outside the vocabulary"),
    (dict(prompts=[[-1, 2]]), ValueError, "outside the vocabulary"),
    (dict(prompts=[1, 2, 3]), TypeError, "list of token-id lists"),
    (dict(prompts=[[1.5, 2.0]]), TypeError, "integer token ids"),
    (dict(max_new_tokens=0), ValueError, "max_new_tokens"),
    (dict(max_new_tokens=2.5), ValueError, "max_new_tokens"),
    (dict(top_p=0.0, temperature=1.0), ValueError, "top_p"),
    (dict(top_p=1.5, temperature=1.0), ValueError, "top_p"),
    (dict(temperature=-0.1), ValueError, "temperature"),
    (dict(temperature=float("nan")), ValueError, "temperature"),
    (dict(top_k=0, temperature=1.0), ValueError, "top_k"),
    (dict(eos_token_id=VOCAB), ValueError, "eos_token_id"),
    (dict(chunk_size=0), ValueError, "chunk_size"),
]


@pytest.mark.parametrize("kwargs,exc,msg", BAD, ids=[f"{i}-{b[2].split()[0]}" for i, b in enumerate(BAD)])
def test_bad_input_raises_before_compiling(model, kwargs, exc, msg):
    kw = dict(prompts=[[1, 2, 3]], max_new_tokens=N)
    kw.update(kwargs)
    before = set(gen_mod._COMPILED)
    with pytest.raises(exc, match=msg):
        generate(model, **kw)
    assert set(gen_mod._COMPILED) == before


def test_not_a_model_raises():
    with pytest.raises(TypeError, match="MambaLM"):
        generate(object(), [[1]], 2)
