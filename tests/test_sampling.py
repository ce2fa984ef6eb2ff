"""mamba_jax.sampling: the one sampler (greedy, temperature, top-k, top-p) that generate uses everywhere.

Oracles: float64 NumPy (argmax, sort-based top-k and nucleus sets, softmax frequencies), an int64
NumPy re-implementation of the documented hash, and the Metal allow-list (tests/metal_allowlist.py)
for every program the sampler lowers to.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metal_allowlist import check_stablehlo, format_violations
from mamba_jax import sampling

F32 = jnp.float32


def allowed_set(z, top_k, top_p, slack=False):
    """Float64 oracle: which tokens top-k then top-p may keep for scaled logits z [V]. With slack, the
    nucleus tolerates float32 rounding at its edge (one more token, and top_p - 1e-6)."""
    allowed = np.ones(z.shape[-1], bool)
    if top_k is not None:
        allowed &= z >= np.sort(z)[-top_k]
    if top_p is not None:
        zz = np.where(allowed, z, -np.inf)
        p = np.exp(zz - zz.max())
        p /= p.sum()
        order = np.argsort(-p)
        n = int(np.searchsorted(np.cumsum(p[order]), top_p - (1e-6 if slack else 0.0)) + 1)
        allowed &= np.isin(np.arange(z.shape[-1]), order[:n + int(slack)])
    return allowed


def _x_with_edge_cases(seed, V=300):
    """Rows of logits with the cases a threshold can get wrong."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(7, V)).astype(np.float32)
    x[1] = np.round(x[1])  # many ties
    x[2, :V - 5] = -np.inf  # fewer finite values than most k
    x[3, 7] = np.nan
    x[3, 9] = np.inf
    x[4] *= 1e-30  # tiny values around zero
    x[4, :3] = [0.0, -0.0, 0.0]
    x[5, [4, 11]] = np.inf  # two +inf
    x[6] = -np.inf
    return x


def test_argmax_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 37)).astype(np.float32)
    x[1, [3, 20]] = x[1].max() + 1.0  # a tie: the first one wins
    x[2, 9] = np.nan
    x[2, 30] = np.nan
    x[3] = -np.inf
    x[4, :30] = -np.inf
    np.testing.assert_array_equal(np.asarray(jax.jit(sampling.argmax)(x)), np.argmax(x, axis=-1))
    np.testing.assert_array_equal(np.asarray(sampling.argmax(x, axis=0)), np.argmax(x, axis=0))
    xi = rng.integers(-5, 5, size=(4, 11)).astype(np.int32)
    np.testing.assert_array_equal(np.asarray(sampling.argmax(xi)), np.argmax(xi, axis=-1))
    assert sampling.argmax(x).dtype == jnp.int32


@pytest.mark.parametrize("k", [1, 2, 5, 17, 299])
def test_top_k_mask_matches_sort(k):
    x = _x_with_edge_cases(k)
    got = np.asarray(jax.jit(functools.partial(sampling.top_k_mask, k=k))(x))
    clean = np.where(np.isnan(x), -np.inf, x).astype(np.float64)
    kth = -np.sort(-clean, axis=-1)[:, k - 1:k]  # the k-th largest; -inf when fewer than k finite values
    np.testing.assert_array_equal(got, (x >= kth) & ~np.isnan(x))


def test_top_k_mask_with_k_at_least_the_width_keeps_all():
    x = _x_with_edge_cases(3, V=16)
    np.testing.assert_array_equal(np.asarray(sampling.top_k_mask(x, 16)), ~np.isnan(x))


@pytest.mark.parametrize("top_p", [0.1, 0.5, 0.9, 0.99])
def test_top_p_mask_matches_sort(top_p):
    rng = np.random.default_rng(1)
    logits = (rng.normal(size=(6, 200)) * 3.0).astype(np.float32)
    logits[5, 100:] = -np.inf
    got = np.asarray(jax.jit(sampling.top_p_mask)(logits, np.float32(top_p)))
    p = np.exp(logits.astype(np.float64) - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    order = np.argsort(-p, axis=-1)
    csum = np.cumsum(np.take_along_axis(p, order, -1), -1)
    n_keep = np.argmax(csum >= top_p - 1e-6, axis=-1) + 1
    edge = np.take_along_axis(p, order, -1)[np.arange(len(p)), n_keep - 1][:, None]
    np.testing.assert_array_equal(got, p >= edge * (1 - 1e-6))


def _numpy_hash(seed, counter, n):
    """The hash documented in mamba_jax/sampling.py, re-done in int64 NumPy with its constants."""
    M = 2 ** 31

    def mix(h):
        for mult in (0x2C1B3C6D, 0x297A2D39, 0x6B3C5A65, 0x5BD1E995):
            h = (h * mult) % M
            hi = h // 2 ** 16
            h = (h + hi * hi) % M
            h = (h * 2 ** 13) % M + h // 2 ** 18
        return h

    key = mix((mix(np.int64(seed) % M) + counter * 0x3C6EF371) % M)
    return mix((np.arange(n, dtype=np.int64) + key) % M)


def test_uniform_is_the_documented_hash_and_looks_uniform():
    n = 200_000
    u = np.asarray(jax.jit(sampling.uniform, static_argnums=2)(jnp.int32(11), jnp.int32(5), (n,)))
    np.testing.assert_array_equal(u, (_numpy_hash(11, 5, n) // 2 ** 7).astype(np.float32) / 2 ** 24)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    hist = np.histogram(u, 16, (0, 1))[0]
    assert ((hist - n / 16) ** 2 / (n / 16)).sum() < 50  # chi-square, 15 dof (p ~ 1e-5)
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.01
    v = np.asarray(sampling.uniform(11, 6, (n,)))
    w = np.asarray(sampling.uniform(12, 5, (n,)))
    assert abs(np.corrcoef(u, v)[0, 1]) < 0.01 and abs(np.corrcoef(u, w)[0, 1]) < 0.01


def test_gumbel_max_samples_softmax():
    logits = np.array([0.0, 1.0, 2.0, -1.0], np.float32)
    n = 40_000
    g = np.asarray(sampling.gumbel(7, 1, (n, 4)))
    assert np.isfinite(g).all() and abs(g.mean() - np.euler_gamma) < 0.02
    counts = np.bincount(np.asarray(sampling.argmax(logits + g)), minlength=4) / n
    p = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(counts, p, atol=0.01)


@pytest.mark.parametrize("top_k,top_p", [(None, None), (3, None), (None, 0.7), (4, 0.8)],
                         ids=["full", "k3", "p0.7", "k4-p0.8"])
def test_sample_distribution_matches_softmax(top_k, top_p):
    """Frequencies of 40000 draws against float64 softmax of the allowed set; padding columns
    (the last two of the 10) are never drawn."""
    logits = np.array([1.0, 0.2, -0.5, 2.0, 0.0, -1.0, 1.5, 0.7, 9.0, 9.0], np.float32)
    vocab, temperature = 8, 0.8
    z = logits[:vocab].astype(np.float64) / temperature
    allowed = allowed_set(z, top_k, top_p)
    expected = np.where(allowed, np.exp(z - z.max()), 0.0)
    expected /= expected.sum()

    mode, t, tp = sampling.sampling_mode(temperature, top_k, top_p, vocab)
    rows = 100  # 100 rows per call, 400 (seed, step) pairs
    batch = jnp.tile(jnp.asarray(logits), (rows, 1))
    draw = jax.jit(jax.vmap(lambda seed, step: sampling.sample(batch, mode, seed, step, F32(t), F32(tp))))
    seeds = jnp.repeat(jnp.arange(20, dtype=jnp.int32), 20)
    steps = jnp.tile(jnp.arange(20, dtype=jnp.int32), 20)
    toks = np.asarray(draw(seeds, steps)).ravel()
    assert toks.size == rows * 400 and toks.max() < vocab
    freq = np.bincount(toks, minlength=vocab) / toks.size
    assert np.all(freq[~allowed] == 0)
    # 40000 draws: the standard error of each frequency is <= 0.0025; 0.012 is ~5 sigma.
    np.testing.assert_allclose(freq, expected, atol=0.012)


def test_greedy_and_top_k_1_take_the_first_maximum_of_the_vocabulary():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(5, 12)).astype(np.float32)
    logits[:, 10:] = 50.0  # padding columns: never chosen
    logits[1, [2, 6]] = 10.0  # a tie: the first one wins
    want = np.argmax(logits[:, :10], axis=-1)
    greedy, _, _ = sampling.sampling_mode(0.0, 3, 0.5, 10)  # top_k / top_p ignored when greedy
    got = sampling.sample(jnp.asarray(logits), greedy, jnp.int32(0), jnp.int32(0), F32(1.0), F32(1.0))
    np.testing.assert_array_equal(np.asarray(got), want)
    k1, t, tp = sampling.sampling_mode(0.7, 1, None, 10)
    for seed in range(3):
        got = sampling.sample(jnp.asarray(logits), k1, jnp.int32(seed), jnp.int32(5), F32(t), F32(tp))
        np.testing.assert_array_equal(np.asarray(got)[[0, 2, 3, 4]], want[[0, 2, 3, 4]])
        assert int(got[1]) in (2, 6)  # top-k keeps ties at the k-th


def test_same_seed_and_step_give_the_same_tokens():
    logits = jnp.zeros((4, 64), F32)
    mode, t, tp = sampling.sampling_mode(1.0, None, None, 64)

    def draw(seed, step):
        return np.asarray(sampling.sample(logits, mode, jnp.int32(seed), jnp.int32(step), F32(t), F32(tp)))

    np.testing.assert_array_equal(draw(3, 1), draw(3, 1))
    assert not np.array_equal(draw(3, 1), draw(3, 2)) and not np.array_equal(draw(3, 1), draw(4, 1))


def test_sampling_mode_normalises_the_settings():
    mode, t, tp = sampling.sampling_mode(0.5, 100, 1.0, 50)
    assert mode == sampling.SamplingMode(greedy=False, top_k=None, use_top_p=False, vocab_size=50)
    assert (t, tp) == (0.5, 1.0)
    mode, _, tp = sampling.sampling_mode(0.0, 5, 0.3, 50)
    assert mode.greedy and mode.top_k is None and not mode.use_top_p
    mode, _, tp = sampling.sampling_mode(2, 5, 0.3, 50)
    assert (mode.top_k, mode.use_top_p, tp) == (5, True, 0.3)


@pytest.mark.parametrize("kwargs,msg", [
    (dict(temperature=-0.1), "temperature"), (dict(temperature=float("inf")), "temperature"),
    (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"),
    (dict(top_k=0), "top_k"), (dict(top_k=2.0), "top_k"), (dict(top_k=True), "top_k"),
], ids=["t-neg", "t-inf", "p0", "p1.5", "k0", "k-float", "k-bool"])
def test_sampling_mode_rejects_bad_settings(kwargs, msg):
    kw = dict(temperature=1.0, top_k=None, top_p=None, vocab_size=50)
    kw.update(kwargs)
    with pytest.raises(ValueError, match=msg):
        sampling.sampling_mode(**kw)


def _lower_for_metal(fn, *args) -> str:
    return jax.jit(fn).trace(*args).lower(lowering_platforms=("METAL",)).as_text()


def test_sampler_is_metal_safe():
    x = jnp.ones((3, 50), F32)
    full, t, tp = sampling.sampling_mode(0.8, 5, 0.9, 48)
    greedy, _, _ = sampling.sampling_mode(0.0, None, None, 48)
    cases = {
        "argmax": (sampling.argmax, (x,)),
        "gumbel": (lambda x: sampling.gumbel(jnp.int32(3), jnp.int32(7), x.shape) + x, (x,)),
        "top_k": (lambda x: sampling.top_k_mask(x, 5), (x,)),
        "top_p": (lambda x: sampling.top_p_mask(x, F32(0.9)), (x,)),
        "sample-greedy": (lambda x, s: sampling.sample(x, greedy, s, s, F32(1.0), F32(1.0)), (x, jnp.int32(1))),
        "sample-top_k-top_p": (lambda x, s: sampling.sample(x, full, s, s + 1, F32(t), F32(tp)), (x, jnp.int32(1))),
    }
    for name, (fn, args) in cases.items():
        text = _lower_for_metal(fn, *args)
        v = check_stablehlo(text)
        assert not v, f"{name}: {len(v)} allow-list violations\n{format_violations(v, text)}"
