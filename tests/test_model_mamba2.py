"""Mamba-2: MambaLM with Mamba2Config / Mamba2Mixer against transformers' Mamba2ForCausalLM and a float64
NumPy mixer; loading of both folder formats; greedy generation; the Metal path.

Every parity model goes through save_pretrained -> mamba_jax.from_pretrained. transformers' reference
path runs its SSD scan in float32 even on a float64 model (it casts x, B and C to float), which is far
inside the 1e-4 tolerance; the NumPy mixer oracle is float64 throughout. Errors are norm-wise:
max |ours - oracle| / max |oracle| (see _hf_models.rel_err).
"""

from __future__ import annotations

import importlib
import json
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import mamba_jax
from mamba_jax import ops
from mamba_jax.nn import Mamba2Config, Mamba2Mixer, MambaConfig, MambaLM
from mamba_jax.nn.config import config_from_dict

from _hf_models import (CONFIGS2, VOCAB, TinyNet, check_gradient_against_oracle, float64_copy, left_pad,
                        make_hf_model, oracle_logits, params64, rel_err, require_torch,
                        transformers_norm_has_groups)

TOL = {"float32": 1e-4, "bfloat16": 3e-2}  # as in test_model.TOL


def _ffi_built():
    return all(ops.cpu_available(op) for op in ("ssd_scan", "ssd_state_update", "causal_conv1d",
                                                "causal_conv1d_update"))


IMPLS = ["xla", pytest.param("ffi", marks=pytest.mark.skipif(not _ffi_built(), reason="the C++ CPU kernels of the "
                                                                "Mamba-2 ops are not built here"))]

_prefill = nnx.jit(lambda m, ids, mask: m.prefill(ids, mask))
_prefill_nomask = nnx.jit(lambda m, ids: m.prefill(ids))
_step = nnx.jit(lambda m, tok, cache: m.step(tok, cache))

# Ragged prompts: lengths 9, 1, 2, 6 (longer than chunk_size 3 and 4, and shorter than d_conv - 1),
# left-padded to 9, each followed by N_NEW tokens fed one at a time through step().
LENGTHS, N_NEW = (9, 1, 2, 6), 3
ALONE = (0, 2)


@pytest.fixture(scope="module", params=list(CONFIGS2), ids=list(CONFIGS2))
def case(request, tmp_path_factory):
    if CONFIGS2[request.param].get("n_groups", 1) > 1 and not transformers_norm_has_groups():
        import transformers
        pytest.skip(f"transformers {transformers.__version__} normalizes Mamba2's gated RMSNorm over all of "
                    "d_inner, not per group as the Mamba-2 reference (and later transformers) do: no oracle "
                    "for ngroups > 1 here; the per-group norm is checked against the float64 NumPy mixer")
    seed = 10 + list(CONFIGS2).index(request.param)
    hf = make_hf_model(seed, mamba2=True, **CONFIGS2[request.param])
    folder = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(folder)
    oracle = float64_copy(hf)
    rng = np.random.RandomState(seed)
    seqs = [rng.randint(0, VOCAB, n + N_NEW) for n in LENGTHS]
    return types.SimpleNamespace(name=request.param, folder=str(folder), hf=hf, oracle=oracle, models={}, seqs=seqs,
                                 refs=[oracle_logits(oracle, s[None])[0] for s in seqs])


def _model(case, dtype, impl):
    key = jnp.dtype(dtype).name
    if key not in case.models:
        case.models[key] = mamba_jax.from_pretrained(case.folder, dtype=dtype)
    m = case.models[key]
    m.implementation = impl
    return m


def test_config_read_from_transformers(case):
    model = _model(case, jnp.float32, "xla")
    cfg, hf = model.config, case.hf.config
    assert isinstance(cfg, Mamba2Config)
    assert (cfg.nheads, cfg.headdim, cfg.ngroups, cfg.d_state, cfg.chunk_size, cfg.d_conv) == \
        (hf.num_heads, hf.head_dim, hf.n_groups, hf.state_size, hf.chunk_size, hf.conv_kernel)
    assert cfg.dt_limit == tuple(float(v) for v in hf.time_step_limit)
    assert cfg.tie_embeddings == hf.tie_word_embeddings and (model.lm_head is None) == hf.tie_word_embeddings
    # float32 models run their matmuls in full float32 (no TF32 on GPUs) unless told otherwise
    assert model.precision == jax.lax.Precision.HIGHEST
    assert model.layers[0].mixer.in_proj.precision == jax.lax.Precision.HIGHEST


@pytest.mark.parametrize("impl", IMPLS)
def test_forward_matches_transformers(case, impl):
    model = _model(case, jnp.float32, impl)
    for i in ALONE:
        prompt = case.seqs[i][:-N_NEW]
        logits, cache = _prefill_nomask(model, jnp.asarray(prompt[None], jnp.int32))
        assert logits.shape == (1, len(prompt), VOCAB) and logits.dtype == jnp.float32
        assert rel_err(logits[0], case.refs[i][:len(prompt)]) <= TOL["float32"], f"row {i}"


def _ragged_prefill_then_step(case, impl, dtype):
    """Left-padded ragged prompts: prefill with a mask, then teacher-forced decode steps. Every real
    position's logits match the oracle run on that row alone, unpadded."""
    model = _model(case, getattr(jnp, dtype), impl)
    cfg = model.config
    ids, mask = left_pad([s[:-N_NEW] for s in case.seqs])
    logits, cache = _prefill(model, jnp.asarray(ids), jnp.asarray(mask))
    b = len(LENGTHS)
    assert [c.shape for c in cache.conv_states] == [(b, cfg.conv_dim, cfg.d_conv - 1)] * cfg.n_layer
    assert [s.shape for s in cache.ssm_states] == [(b, cfg.nheads, cfg.headdim, cfg.d_state)] * cfg.n_layer
    assert all(c.dtype == getattr(jnp, dtype) for c in cache.conv_states)
    assert all(s.dtype == jnp.float32 for s in cache.ssm_states)
    steps = []
    for t in range(N_NEW):
        tok = jnp.asarray([s[len(s) - N_NEW + t] for s in case.seqs], jnp.int32)
        step_logits, cache = _step(model, tok, cache)
        steps.append(step_logits)
    steps = np.stack(steps, axis=1)
    for i, (n, ref) in enumerate(zip(LENGTHS, case.refs)):
        assert rel_err(np.asarray(logits)[i, ids.shape[1] - n:], ref[:n]) <= TOL[dtype], f"prefill row {i}"
        assert rel_err(steps[i], ref[n:]) <= TOL[dtype], f"steps row {i}"


@pytest.mark.parametrize("impl", IMPLS)
def test_ragged_prefill_then_step_matches_transformers(case, impl):
    _ragged_prefill_then_step(case, impl, "float32")


@pytest.mark.parametrize("case", [list(CONFIGS2)[1]], indirect=True)
def test_ragged_prefill_then_step_bfloat16(case):
    _ragged_prefill_then_step(case, "xla", "bfloat16")


def test_ragged_greedy_generation_matches_transformers(case):
    _ragged_greedy_generation(case, "xla")


# The FFI path's generation on one config (its prefill and steps are checked on all of them above).
@pytest.mark.parametrize("case", [list(CONFIGS2)[1]], indirect=True)
@pytest.mark.parametrize("impl", IMPLS[1:])
def test_ragged_greedy_generation_ffi(case, impl):
    _ragged_greedy_generation(case, impl)


def _ragged_greedy_generation(case, impl):
    """mamba_jax.generate on a ragged batch == a prompt alone == transformers' greedy generate (with its cache;
    for the dt-limit config, whose decode step transformers does not clip: each new token is the argmax of
    the oracle's full forward over the prompt and the tokens before it)."""
    torch, _ = require_torch()
    model = _model(case, jnp.float32, impl)
    prompts = [s[:-N_NEW].tolist() for s in case.seqs]
    n_new = 5
    batch = mamba_jax.generate(model, prompts, max_new_tokens=n_new)
    assert batch[2] == mamba_jax.generate(model, [prompts[2]], max_new_tokens=n_new)[0]
    default_limit = tuple(case.hf.config.time_step_limit) == (0.0, math.inf)
    for p, got in zip(prompts, batch):
        if default_limit:
            out = case.oracle.generate(torch.as_tensor([p]), max_new_tokens=n_new, do_sample=False,
                                       eos_token_id=None, pad_token_id=0)
            want = out[0, len(p):].tolist()
        else:
            logits = oracle_logits(case.oracle, np.asarray(p + got)[None])[0]
            want = np.argmax(logits[len(p) - 1:-1], axis=-1).tolist()
        assert got == want, f"prompt {p}"


# ----------------------------------------------------------------------------- state-spaces format
def test_state_spaces_folder_matches_transformers(tmp_path):
    """config.json with ssm_cfg {"layer": "Mamba2", ...} and pytorch_model.bin under mamba_ssm's names
    (backbone.embedding, tied lm_head saved too), vocab 100 padded to 104 rows."""
    torch, _ = require_torch()
    fields = dict(CONFIGS2["h6-p8-g2-N16-w3-T3-untied-bias-noconvbias"], tie_word_embeddings=True)
    if fields["n_groups"] > 1 and not transformers_norm_has_groups():  # as the `case` fixture: no oracle there
        import transformers
        pytest.skip(f"transformers {transformers.__version__} normalizes Mamba2's gated RMSNorm over all of "
                    "d_inner, not per group: no oracle for this ngroups = 2 folder here")
    hf = make_hf_model(21, vocab_size=104, mamba2=True, **fields)
    c = hf.config
    ssm_cfg = dict(layer="Mamba2", d_state=c.state_size, d_conv=c.conv_kernel, expand=c.expand, headdim=c.head_dim,
                   ngroups=c.n_groups, chunk_size=c.chunk_size, bias=True, conv_bias=False, rmsnorm=True,
                   norm_before_gate=False)
    cfg = dict(d_model=c.hidden_size, d_intermediate=0, n_layer=c.num_hidden_layers, vocab_size=100, ssm_cfg=ssm_cfg,
               attn_layer_idx=[], attn_cfg={}, rms_norm=True, residual_in_fp32=True, fused_add_norm=True,
               pad_vocab_size_multiple=8, tie_embeddings=True)
    with open(tmp_path / "config.json", "w") as f:
        json.dump(cfg, f)
    sd = {k.replace("backbone.embeddings.", "backbone.embedding."): v.clone() for k, v in hf.state_dict().items()}
    sd["lm_head.weight"] = sd["backbone.embedding.weight"]
    torch.save(sd, tmp_path / "pytorch_model.bin")
    model = mamba_jax.from_pretrained(str(tmp_path), implementation="xla")
    assert isinstance(model.config, Mamba2Config) and model.config.padded_vocab_size == 104
    assert model.tokenizer is None
    ids = np.random.RandomState(1).randint(0, 100, (2, 8))
    logits = nnx.jit(lambda m, ids: m(ids))(model, jnp.asarray(ids, jnp.int32))
    assert logits.shape == (2, 8, 104)
    assert rel_err(logits, oracle_logits(float64_copy(hf), ids)) <= TOL["float32"]


def test_config_readers():
    hf = dict(model_type="mamba2", hidden_size=32, num_hidden_layers=2, vocab_size=50, num_heads=4, head_dim=16,
              n_groups=2, state_size=8, time_step_limit=[0.0, {"__float__": "Infinity"}])
    cfg, fmt = config_from_dict(hf)
    assert fmt == "hf" and isinstance(cfg, Mamba2Config)
    assert (cfg.nheads, cfg.conv_dim, cfg.dt_limit, cfg.tie_embeddings) == (4, 64 + 2 * 2 * 8, (0.0, math.inf), False)
    with pytest.raises(ValueError, match=r"num_heads \* head_dim = 3 \* 16, but expand \* hidden_size = 64"):
        config_from_dict(dict(hf, num_heads=3))
    ss = dict(d_model=64, n_layer=2, vocab_size=50277, ssm_cfg={"layer": "Mamba2"}, pad_vocab_size_multiple=16)
    cfg, fmt = config_from_dict(ss)
    assert fmt == "state-spaces" and (cfg.nheads, cfg.headdim, cfg.d_state, cfg.ngroups) == (2, 64, 128, 1)
    assert cfg.padded_vocab_size == 50288 and cfg.tie_embeddings
    with pytest.raises(ValueError, match="d_ssm 64"):
        config_from_dict(dict(ss, ssm_cfg={"layer": "Mamba2", "d_ssm": 64}))
    with pytest.raises(ValueError, match="not a multiple of ngroups"):
        Mamba2Config(vocab_size=10, d_model=24, n_layer=1, headdim=16, ngroups=2)
    assert isinstance(config_from_dict(dict(d_model=8, n_layer=1, vocab_size=10))[0], MambaConfig)


def test_default_precision_both_families():
    """float32: HIGHEST on every projection and the tied head; bf16: the backend default; explicit wins."""
    hi = jax.lax.Precision.HIGHEST
    for cfg in (MambaConfig(vocab_size=20, d_model=16, n_layer=1, d_state=4),
                Mamba2Config(vocab_size=20, d_model=16, n_layer=1, d_state=4, headdim=8)):
        m = nnx.eval_shape(lambda: MambaLM(cfg, rngs=nnx.Rngs(0)))
        assert m.precision == hi and m.layers[0].mixer.out_proj.precision == hi
        m = nnx.eval_shape(lambda: MambaLM(cfg, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0)))
        assert m.precision is None and m.layers[0].mixer.in_proj.precision is None
        m = nnx.eval_shape(lambda: MambaLM(cfg, precision=jax.lax.Precision.DEFAULT, rngs=nnx.Rngs(0)))
        assert m.layers[0].mixer.in_proj.precision == jax.lax.Precision.DEFAULT


# ----------------------------------------------------------------------------- Mamba2Mixer on its own
def _silu(x):
    return x / (1 + np.exp(-x))


def mixer2_oracle(m, x, *, ngroups, headdim, d_state, dt_limit, norm_eps=1e-5, gated_norm=True,
                  norm_before_gate=False, **_):
    """Float64 NumPy Mamba-2 mixer. m: {parameter path: float64 array} of a Mamba2Mixer with bias and conv
    bias (D per head or per channel); x [b, l, d] -> [b, l, d]."""
    b, l, _ = x.shape
    c, w = m[("conv_weight",)].shape
    h = m[("A_log",)].shape[0]
    e = h * headdim
    zxbcdt = x @ m[("in_proj", "kernel")] + m[("in_proj", "bias")]
    z, xBC, dt = zxbcdt[..., :e], zxbcdt[..., e:e + c], zxbcdt[..., e + c:]
    xpad = np.concatenate([np.zeros((b, w - 1, c)), xBC], axis=1)
    xBC = _silu(sum(xpad[:, k:k + l] * m[("conv_weight",)][:, k] for k in range(w)) + m[("conv_bias",)])
    gn = ngroups * d_state
    xs = xBC[..., :e].reshape(b, l, h, headdim)
    Bm = xBC[..., e:e + gn].reshape(b, l, ngroups, d_state)
    Cm = xBC[..., e + gn:].reshape(b, l, ngroups, d_state)
    dt = np.clip(np.logaddexp(0.0, dt + m[("dt_bias",)]), *dt_limit)
    A = -np.exp(m[("A_log",)])
    grp = np.arange(h) // (h // ngroups)
    state = np.zeros((b, h, headdim, d_state))
    y = np.zeros((b, l, h, headdim))
    for t in range(l):
        decay = np.exp(dt[:, t] * A)[:, :, None, None]
        state = decay * state + (dt[:, t, :, None] * xs[:, t])[..., None] * Bm[:, t, grp][:, :, None, :]
        y[:, t] = np.einsum("bhpn,bhn->bhp", state, Cm[:, t, grp]) + m[("D",)].reshape(h, -1) * xs[:, t]
    y = y.reshape(b, l, e)
    if not norm_before_gate:
        y = y * _silu(z)
    if gated_norm:
        yg = y.reshape(b, l, ngroups, e // ngroups)
        y = (yg / np.sqrt(np.mean(yg ** 2, axis=-1, keepdims=True) + norm_eps)).reshape(b, l, e) * m[("norm", "scale")]
    if norm_before_gate:
        y = y * _silu(z)
    return y @ m[("out_proj", "kernel")] + m[("out_proj", "bias")]


MIXER_KW = dict(d_state=8, d_conv=3, expand=2, headdim=6, ngroups=2, chunk_size=4, bias=True, dt_limit=(0.0, 0.2))


def _tiny_net(seed):
    """A user's model with a Mamba2Mixer inside (see _hf_models.TinyNet)."""
    return TinyNet.build(lambda d, rngs: Mamba2Mixer(d, **MIXER_KW, rngs=rngs), seed)


def _net_oracle(q, x):
    return TinyNet.oracle(q, x, lambda m, h: mixer2_oracle(m, h, **MIXER_KW))


@pytest.mark.parametrize("impl", IMPLS)
def test_mixer_in_user_model_under_jit(impl):
    net = _tiny_net(0)
    net.mixer.implementation = impl
    x = np.random.RandomState(1).standard_normal((2, 11, 5)).astype(np.float32)
    y = nnx.jit(lambda net, x: net(x))(net, jnp.asarray(x))
    assert rel_err(y, _net_oracle(params64(net), x)) <= 1e-5


@pytest.mark.parametrize("variant", [dict(gated_norm=False), dict(norm_before_gate=True), dict(D_has_hdim=True)],
                         ids=["no-norm", "norm-before-gate", "D-per-channel"])
def test_mixer_variants_match_oracle(variant):
    """The state-spaces Mamba2 options: rmsnorm=False (the gate applied in the scan), norm_before_gate,
    D_has_hdim."""
    kw = dict(MIXER_KW, **variant)
    net = TinyNet.build(lambda d, rngs: Mamba2Mixer(d, **kw, implementation="xla", rngs=rngs), 7)
    assert (net.mixer.norm is None) == (not kw.get("gated_norm", True))
    assert net.mixer.D[...].shape == ((48,) if kw.get("D_has_hdim") else (8,))
    x = np.random.RandomState(8).standard_normal((2, 10, 5)).astype(np.float32)
    y = nnx.jit(lambda net, x: net(x))(net, jnp.asarray(x))
    assert rel_err(y, TinyNet.oracle(params64(net), x, lambda m, h: mixer2_oracle(m, h, **kw))) <= 1e-5


def test_mixer_gradient_matches_oracle_directional_derivative():
    """nnx.grad through the mixer under jit: <grad, v> equals the float64 oracle's central difference."""
    net = _tiny_net(2)
    net.mixer.implementation = "xla"  # the FFI ops' gradients are this path's VJP
    x = np.random.RandomState(3).standard_normal((2, 9, 5)).astype(np.float32)
    target = np.random.RandomState(4).standard_normal((2, 9, 3))
    check_gradient_against_oracle(net, x, target, _net_oracle)


@pytest.mark.parametrize("impl", IMPLS)
def test_mixer_step_matches_full_sequence(impl):
    """Decode steps from init_state reproduce the full forward's outputs and final (conv, ssm) state."""
    mixer = _tiny_net(6).mixer
    mixer.implementation = impl
    x = jnp.asarray(np.random.RandomState(0).standard_normal((2, 7, 24)), jnp.float32)
    y, (conv_state, ssm_state) = nnx.jit(lambda m, x: m(x, return_state=True))(mixer, x)
    cs, ss = mixer.init_state(2)
    assert cs.shape == (2, mixer.conv_dim, 2) and ss.shape == (2, 8, 6, 8) and ss.dtype == jnp.float32
    step = nnx.jit(lambda m, xt, cs, ss: m.step(xt, cs, ss))
    ys = []
    for t in range(7):
        yt, cs, ss = step(mixer, x[:, t], cs, ss)
        ys.append(yt)
    np.testing.assert_allclose(np.stack(ys, 1), y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cs, conv_state, rtol=1e-6, atol=0)
    np.testing.assert_allclose(ss, ssm_state, rtol=1e-5, atol=1e-6)


def test_lm_step_from_empty_cache_with_constants_is_first_position():
    cfg = Mamba2Config(vocab_size=50, d_model=16, n_layer=2, d_state=4, headdim=8, ngroups=2, chunk_size=2,
                       pad_vocab_size_multiple=8)
    model = MambaLM(cfg, implementation="xla", rngs=nnx.Rngs(0))
    tok = jnp.asarray([3, 41, 7], jnp.int32)
    cache = model.init_cache(3)
    assert [c.shape for c in cache.conv_states] == [(3, 32 + 16, 3)] * 2
    assert [s.shape for s in cache.ssm_states] == [(3, 4, 8, 4)] * 2
    logits, _ = nnx.jit(lambda m, t, c: m.step(t, c, m.step_constants()))(model, tok, cache)
    assert logits.shape == (3, 56)
    full = nnx.jit(lambda m, ids: m(ids))(model, tok[:, None])[:, 0]
    np.testing.assert_allclose(logits, full, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- the Metal path
def _allowlist():
    for name in ("metal_allowlist", "tools.metal_allowlist", "mamba_jax.ops.metal_allowlist"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    pytest.fail("no Metal allow-list checker found (tests/metal_allowlist.py, tools/ or mamba_jax/ops/)")


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
def test_model_is_metal_safe(dtype):
    """MambaLM with Mamba-2 blocks, implementation="xla", lowered for METAL: forward, ragged prefill, step."""
    checker = _allowlist()
    cfg = Mamba2Config(vocab_size=97, d_model=32, n_layer=2, d_state=16, headdim=16, ngroups=2, chunk_size=8)
    model = MambaLM(cfg, dtype=dtype, implementation="xla", rngs=nnx.Rngs(0))
    graph, state = nnx.split(model)
    ids = jnp.asarray(np.arange(2 * 19).reshape(2, 19) % 97, jnp.int32)
    mask = jnp.arange(19)[None, :] >= jnp.array([[0], [5]])
    cases = {
        "__call__": (lambda st, ids: nnx.merge(graph, st)(ids), (state, ids)),
        "prefill": (lambda st, ids, m: nnx.merge(graph, st).prefill(ids, m), (state, ids, mask)),
        "step": (lambda st, tok, c: nnx.merge(graph, st).step(tok, c), (state, ids[:, 0], model.init_cache(2))),
    }
    for name, (fn, args) in cases.items():
        text = jax.jit(fn).trace(*args).lower(lowering_platforms=("METAL",)).as_text()
        v = checker.check_stablehlo(text)
        assert not v, f"Mamba-2 MambaLM.{name}: {len(v)} allow-list violations\n{checker.format_violations(v, text)}"
