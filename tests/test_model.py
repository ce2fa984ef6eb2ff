"""MambaLM / MambaMixer against transformers' MambaForCausalLM (float64 oracle) and a float64 NumPy mixer.

Every model here goes through save_pretrained -> mamba_jax.from_pretrained, so the HF loader is exercised
by each parity case. Errors are norm-wise: max |ours - oracle| / max |oracle| (see _hf_models.rel_err).
"""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import mamba_jax
from mamba_jax.nn import MambaConfig, MambaLM, MambaMixer

from _hf_models import (CONFIGS, VOCAB, TinyNet, check_gradient_against_oracle, float64_copy, left_pad,
                        make_hf_model, oracle_logits, params64, rel_err)

# One tolerance table (norm-wise relative error of the logits against the float64 oracle). bfloat16 was
# measured at 0.5-1.3% on these models, float32 at ~3e-7.
TOL = {"float32": 1e-4, "bfloat16": 3e-2}
IMPLS = ["xla", "ffi"]

_prefill = nnx.jit(lambda m, ids, mask: m.prefill(ids, mask))
_prefill_nomask = nnx.jit(lambda m, ids: m.prefill(ids))
_forward = nnx.jit(lambda m, ids: m(ids))
_step = nnx.jit(lambda m, tok, cache: m.step(tok, cache))

# Ragged prompts shared by the parity tests (so that their jit compilations are shared too): lengths
# 7, 1, 2, 5, left-padded to 7, each followed by N_NEW tokens fed one at a time through step().
LENGTHS, N_NEW = (7, 1, 2, 5), 3
ALONE = (0, 2)  # rows also run alone: the unpadded one and one shorter than d_conv - 1


@pytest.fixture(scope="module", params=list(CONFIGS), ids=list(CONFIGS))
def case(request, tmp_path_factory):
    seed = list(CONFIGS).index(request.param)
    hf = make_hf_model(seed, **CONFIGS[request.param])
    folder = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(folder)
    oracle = float64_copy(hf)
    rng = np.random.RandomState(seed)
    seqs = [rng.randint(0, VOCAB, n + N_NEW) for n in LENGTHS]
    return types.SimpleNamespace(name=request.param, folder=str(folder), models={}, seqs=seqs,
                                 refs=[oracle_logits(oracle, s[None])[0] for s in seqs])


def _model(case, dtype, impl):
    key = jnp.dtype(dtype).name
    if key not in case.models:
        # HIGHEST: float32 matmuls on GPUs otherwise may run in TF32 (about 1e-3 relative error).
        case.models[key] = mamba_jax.from_pretrained(case.folder, dtype=dtype, precision=jax.lax.Precision.HIGHEST)
    m = case.models[key]
    m.implementation = impl
    return m


def _padded_prompts(case):
    ids, mask = left_pad([s[:-N_NEW] for s in case.seqs])
    return jnp.asarray(ids), jnp.asarray(mask)


@pytest.mark.parametrize("impl", IMPLS)
def test_forward_matches_transformers(case, impl):
    model = _model(case, jnp.float32, impl)
    for i in ALONE:
        prompt = case.seqs[i][:-N_NEW]
        logits, _ = _prefill_nomask(model, jnp.asarray(prompt[None], jnp.int32))
        assert logits.shape == (1, len(prompt), VOCAB) and logits.dtype == jnp.float32
        assert rel_err(logits[0], case.refs[i][:len(prompt)]) <= TOL["float32"], f"row {i}"


@pytest.mark.parametrize("impl", IMPLS)
def test_ragged_prefill_then_step_matches_transformers(case, impl):
    _check_ragged_prefill_then_step(case, impl, "float32")


# bfloat16 on two configs (tied + fp32 residual, untied + residual in bf16) to keep CI compile time down.
@pytest.mark.parametrize("case", [list(CONFIGS)[0], list(CONFIGS)[3]], indirect=True)
@pytest.mark.parametrize("impl", IMPLS)
def test_ragged_prefill_then_step_bfloat16(case, impl):
    _check_ragged_prefill_then_step(case, impl, "bfloat16")


def _check_ragged_prefill_then_step(case, impl, dtype):
    """Left-padded ragged prompts: prefill with a mask, then teacher-forced decode steps. Every real
    position's logits match the oracle run on that row alone, unpadded."""
    model = _model(case, getattr(jnp, dtype), impl)
    ids, mask = _padded_prompts(case)
    logits, cache = _prefill(model, ids, mask)
    assert all(c.dtype == getattr(jnp, dtype) for c in cache.conv_states)
    assert all(s.dtype == jnp.float32 for s in cache.ssm_states)
    steps = []
    for t in range(N_NEW):
        tok = jnp.asarray([s[len(s) - N_NEW + t] for s in case.seqs], jnp.int32)
        step_logits, cache = _step(model, tok, cache)
        steps.append(step_logits)
    steps = np.stack(steps, axis=1)  # [b, N_NEW, V]: the logits after each fed token
    for i, (n, ref) in enumerate(zip(LENGTHS, case.refs)):
        assert rel_err(np.asarray(logits)[i, ids.shape[1] - n:], ref[:n]) <= TOL[dtype], f"prefill row {i}"
        assert rel_err(steps[i], ref[n:]) <= TOL[dtype], f"steps row {i}"


@pytest.mark.parametrize("impl", IMPLS)
def test_left_padded_row_equals_prompt_alone(case, impl):
    """The generator's contract: a left-padded row gets the same last logits and the same cache as its
    prompt run alone (without a mask). Only float32 rounding may differ."""
    model = _model(case, jnp.float32, impl)
    logits, cache = _prefill(model, *_padded_prompts(case))
    for i in ALONE:
        prompt = case.seqs[i][:-N_NEW]
        alone_logits, alone = _prefill_nomask(model, jnp.asarray(prompt[None], jnp.int32))
        assert rel_err(logits[i, -1], alone_logits[0, -1]) <= 1e-5
        for got, want in zip(cache.conv_states + cache.ssm_states, alone.conv_states + alone.ssm_states):
            assert rel_err(got[i], want[0]) <= 1e-5


def test_step_from_empty_cache_is_first_position():
    cfg = MambaConfig(vocab_size=50, d_model=20, n_layer=2, d_state=4, pad_vocab_size_multiple=8)
    model = MambaLM(cfg, precision=jax.lax.Precision.HIGHEST, rngs=nnx.Rngs(0))
    tok = jnp.asarray([3, 41, 7], jnp.int32)
    cache = model.init_cache(3)
    assert [c.shape for c in cache.conv_states] == [(3, 40, 3)] * 2
    assert [s.shape for s in cache.ssm_states] == [(3, 40, 4)] * 2
    logits, _ = _step(model, tok, cache)
    assert logits.shape == (3, 56)  # padded vocab
    np.testing.assert_allclose(logits, _forward(model, tok[:, None])[:, 0], rtol=1e-5, atol=1e-5)


def test_step_with_hoisted_constants_is_the_same_step():
    """model.step(ids, cache, model.step_constants()) is exactly model.step(ids, cache), under jit, and the
    constants are what the mixer would derive (A = -exp(A_log), float32 conv weight/bias)."""
    cfg = MambaConfig(vocab_size=50, d_model=24, n_layer=2, d_state=4, pad_vocab_size_multiple=8)
    model = MambaLM(cfg, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(1))
    tok = jnp.asarray([5, 9], jnp.int32)
    cache = model.init_cache(2)
    graphdef, state = nnx.split(model)

    @jax.jit
    def both(state, tok, cache):
        m = nnx.merge(graphdef, state)
        return m.step(tok, cache), m.step(tok, cache, m.step_constants())

    (l0, c0), (l1, c1) = both(state, tok, cache)
    np.testing.assert_array_equal(np.asarray(l0), np.asarray(l1))
    for a, b in zip(jax.tree.leaves(c0), jax.tree.leaves(c1)):
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
    consts = model.step_constants()
    assert len(consts) == cfg.n_layer
    A, w, b = consts[0]
    mixer = model.layers[0].mixer
    np.testing.assert_allclose(np.asarray(A), -np.exp(np.asarray(mixer.A_log[...], np.float32)), rtol=1e-6)
    assert w.dtype == jnp.float32 and w.shape == (mixer.d_inner, cfg.d_conv)
    assert b is None or b.dtype == jnp.float32


def test_random_init_like_reference():
    cfg = MambaConfig(vocab_size=64, d_model=48, n_layer=4, d_state=16)  # 4 layers: the rescale is 1/2
    model = MambaLM(cfg, rngs=nnx.Rngs(1))
    mixer = model.layers[2].mixer
    np.testing.assert_allclose(mixer.A_log[...], np.log(np.broadcast_to(np.arange(1, 17), (96, 16))), rtol=1e-6)
    np.testing.assert_array_equal(mixer.D[...], np.ones(96))
    dt = np.log1p(np.exp(np.asarray(mixer.dt_bias[...], np.float64)))
    assert dt.min() >= cfg.dt_min * (1 - 1e-5) and dt.max() <= cfg.dt_max * (1 + 1e-5)
    assert np.abs(mixer.dt_proj.kernel[...]).max() <= cfg.resolved_dt_rank ** -0.5
    assert abs(float(np.std(model.embedding.embedding[...])) - 0.02) < 0.002
    # out_proj: U(+-1/sqrt(fan_in)) scaled by 1/sqrt(n_layer) like the reference's prenorm rescale
    assert np.abs(mixer.out_proj.kernel[...]).max() <= 1 / np.sqrt(96) / np.sqrt(4)


# ----------------------------------------------------------------------------- MambaMixer on its own
def _softplus(x):
    return np.logaddexp(0.0, x)


def _silu(x):
    return x / (1 + np.exp(-x))


def mixer_oracle(p, x):
    """Float64 NumPy Mamba-1 mixer. p: dict of float64 arrays in our layout; x [b, l, d] -> [b, l, d]."""
    b, l, _ = x.shape
    e, w = p["conv_weight"].shape
    n = p["A_log"].shape[1]
    r = p["dt_proj"].shape[0]
    xz = x @ p["in_proj"] + p.get("in_bias", 0.0)
    xi, z = xz[..., :e], xz[..., e:]
    xpad = np.concatenate([np.zeros((b, w - 1, e)), xi], axis=1)
    xc = sum(xpad[:, k:k + l] * p["conv_weight"][:, k] for k in range(w)) + p.get("conv_bias", 0.0)
    xc = _silu(xc)
    dbl = xc @ p["x_proj"]
    dt = _softplus(dbl[..., :r] @ p["dt_proj"] + p["dt_bias"])
    Bm, Cm = dbl[..., r:r + n], dbl[..., r + n:]
    A = -np.exp(p["A_log"])
    h = np.zeros((b, e, n))
    y = np.zeros((b, l, e))
    for t in range(l):
        h = np.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * xc[:, t])[..., None] * Bm[:, t, None, :]
        y[:, t] = np.einsum("ben,bn->be", h, Cm[:, t]) + p["D"] * xc[:, t]
    y = y * _silu(z)
    return y @ p["out_proj"] + p.get("out_bias", 0.0)


def _tiny_net(seed):
    """A user's model with a MambaMixer inside (see _hf_models.TinyNet)."""
    return TinyNet.build(lambda d, rngs: MambaMixer(d, d_state=8, d_conv=3, expand=2, dt_rank=3, bias=True,
                                                    rngs=rngs), seed)


def _net_oracle(q, x):
    """The tiny net in float64 NumPy from a `params64` dict."""
    def mixer(m, h):
        p = dict(in_proj=m[("in_proj", "kernel")], in_bias=m[("in_proj", "bias")], conv_weight=m[("conv_weight",)],
                 conv_bias=m[("conv_bias",)], x_proj=m[("x_proj", "kernel")], dt_proj=m[("dt_proj", "kernel")],
                 dt_bias=m[("dt_bias",)], A_log=m[("A_log",)], D=m[("D",)], out_proj=m[("out_proj", "kernel")],
                 out_bias=m[("out_proj", "bias")])
        return mixer_oracle(p, h)
    return TinyNet.oracle(q, x, mixer)


@pytest.mark.parametrize("impl", IMPLS)
def test_mixer_in_user_model_under_jit(impl):
    net = _tiny_net(0)
    net.mixer.implementation = impl
    x = np.random.RandomState(1).standard_normal((2, 11, 5)).astype(np.float32)
    y = nnx.jit(lambda net, x: net(x))(net, jnp.asarray(x))
    assert rel_err(y, _net_oracle(params64(net), x)) <= 1e-5


@pytest.mark.parametrize("impl", IMPLS)
def test_mixer_gradient_matches_oracle_directional_derivative(impl):
    """nnx.grad through the mixer under jit: <grad, v> equals the float64 oracle's central difference."""
    net = _tiny_net(2)
    net.mixer.implementation = impl
    x = np.random.RandomState(3).standard_normal((2, 9, 5)).astype(np.float32)
    target = np.random.RandomState(4).standard_normal((2, 9, 3))
    check_gradient_against_oracle(net, x, target, _net_oracle)


@pytest.mark.parametrize("impl", IMPLS)
def test_mixer_step_matches_full_sequence(impl):
    mixer = MambaMixer(20, d_state=4, d_conv=4, precision=jax.lax.Precision.HIGHEST, rngs=nnx.Rngs(0),
                       implementation=impl)
    x = jnp.asarray(np.random.RandomState(0).standard_normal((2, 7, 20)), jnp.float32)
    y, (conv_state, ssm_state) = nnx.jit(lambda m, x: m(x, return_state=True))(mixer, x)
    cs, ss = mixer.init_state(2)
    step = nnx.jit(lambda m, xt, cs, ss: m.step(xt, cs, ss))
    ys = []
    for t in range(7):
        yt, cs, ss = step(mixer, x[:, t], cs, ss)
        ys.append(yt)
    np.testing.assert_allclose(np.stack(ys, 1), y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cs, conv_state, rtol=1e-6, atol=0)
    np.testing.assert_allclose(ss, ssm_state, rtol=1e-5, atol=1e-6)
