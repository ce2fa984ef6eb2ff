"""Several devices (mamba_jax.sharding): every op under shard_map split over batch and channels, and
Mamba-1 / Mamba-2 models over (data, model) meshes, against the same computation on one device.

The checks need several devices. On a one-device host `test_on_eight_cpu_devices` runs this file again
in a subprocess with 8 CPU devices (--xla_force_host_platform_device_count=8), so the rest of the suite
keeps its one device; there the checks run on meshes 1x8, 2x4 and 8x1. On a host with several devices
(two GPUs) they run in this process, on meshes 1xN and Nx1.

Collectives are counted in the compiled HLO: none for an op or for pure data parallelism, and per
layer for tensor parallelism: Mamba-1 two all-reduces (x_proj's [tokens, dt_rank + 2 d_state] and
out_proj's [tokens, d_model]); Mamba-2 one (out_proj) when ngroups is a multiple of the model axis,
two when a norm group straddles devices (the norm's [tokens, ngroups] mean squares, then out_proj).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import ConvCase, ScanCase, assert_close, conv_inputs, conv_update_inputs, scan_inputs, update_inputs
from mamba_jax import generate, ops
from mamba_jax import sharding as sh
from mamba_jax.nn import Mamba2Config, MambaConfig, MambaLM

N = len(jax.devices())
multi = pytest.mark.skipif(N < 2, reason="needs several devices: test_on_eight_cpu_devices runs these checks "
                                         "in a subprocess with 8 CPU devices")
# One device: the ids of the 8-device run (those tests skip here and run in the subprocess).
MESHES = [(1, N), (N, 1)] if 2 <= N < 8 else [(1, 8), (2, 4), (8, 1)]
TP_MESH = (1, N) if 2 <= N < 8 else (2, 4)


def test_on_eight_cpu_devices():
    if N >= 2:
        pytest.skip(f"this process has {N} devices: the checks run in it directly")
    if jax.default_backend() != "cpu":
        pytest.skip("one accelerator: the 8-device run uses CPU devices, on a CPU host")
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip())
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", os.path.basename(__file__)],
                       cwd=os.path.dirname(os.path.abspath(__file__)), env=env, capture_output=True, text=True,
                       timeout=1200)
    assert r.returncode == 0, f"8-device run failed:\n{r.stdout[-8000:]}\n{r.stderr[-4000:]}"
    # Everything ran there except this driver itself.
    summary = r.stdout.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and re.search(r"\b1 skipped", summary), summary


def _collectives(fn, *args, **jit_kw):
    return dict(sh.count_collectives(jax.jit(fn, **jit_kw).lower(*args).compile().as_text()))


# --------------------------------------------------------------------------------------------- ops
def _ssd_inputs(rng, b=4, l=12, h=8, p=4, g=2, n=8, step=False):
    act = lambda *s: jnp.asarray(rng.normal(0, 1, s), jnp.float32)  # noqa: E731
    lead = (b,) if step else (b, l)
    x = {"x": act(*lead, h, p), "dt": act(*lead, h), "A": -jnp.exp(act(h)), "B": act(*lead, g, n),
         "C": act(*lead, g, n), "D": act(h, p), "z": act(*lead, h, p), "dt_bias": act(h)}
    if step:
        x["state"] = act(b, h, p, n)
    return x


def _op_cases():
    rng = lambda: np.random.default_rng(0)  # noqa: E731
    sc = ScanCase(batch=4, seqlen=12, dim=16, dstate=4, ngroups=2, init=True)
    return [
        ("selective_scan", lambda: scan_inputs(rng(), sc), dict(delta_softplus=True, return_last_state=True)),
        ("selective_scan", lambda: scan_inputs(rng(), ScanCase(batch=4, seqlen=12, dim=16, dstate=4, ngroups=0)),
         dict(delta_softplus=True)),
        ("selective_state_update", lambda: update_inputs(rng(), ScanCase(batch=4, seqlen=0, dim=16, dstate=4,
                                                                          ngroups=4)), dict(dt_softplus=True)),
        ("causal_conv1d", lambda: conv_inputs(rng(), ConvCase(batch=4, seqlen=12, dim=16, init=True)),
         dict(activation="silu", return_final_state=True)),
        ("causal_conv1d_update", lambda: conv_update_inputs(rng(), ConvCase(batch=4, seqlen=0, dim=16)),
         dict(activation="silu")),
        ("linear", lambda: {"x": jnp.asarray(rng().normal(0, 1, (4, 24)), jnp.float32),
                            "w": jnp.asarray(rng().normal(0, 1, (24, 16)), jnp.float32)}, {}),
        ("ssd_scan", lambda: _ssd_inputs(rng(), g=1), dict(dt_softplus=True, chunk_size=4, return_final_state=True)),
        ("ssd_scan", lambda: _ssd_inputs(rng(), g=8), dict(dt_softplus=True, chunk_size=4)),
        ("ssd_state_update", lambda: _ssd_inputs(rng(), g=2, step=True), dict(dt_softplus=True)),
    ]


@multi
@pytest.mark.parametrize("op, make, static", _op_cases(),
                         ids=["selective_scan-G2", "selective_scan-G-", "selective_state_update-G4", "causal_conv1d",
                              "causal_conv1d_update", "linear", "ssd_scan-G1", "ssd_scan-G8", "ssd_state_update-G2"])
def test_op_under_shard_map(op, make, static):
    """The op on a (data, model) mesh equals the op on one device, and compiles without collectives."""
    inputs = {k: v for k, v in make().items() if v is not None}
    mesh = sh.make_mesh(*TP_MESH)
    want = getattr(ops, op)(**inputs, **static)
    got = sh.shard_op(op, mesh, **inputs, **static)
    for i, (g, w) in enumerate(zip(jax.tree.leaves(got), jax.tree.leaves(want))):
        assert_close(g, w, jnp.float32, "out" if i == 0 else "state", f"{op} output {i}")
    assert _collectives(lambda kw: sh.shard_op(op, mesh, **kw, **static), inputs) == {}


# ------------------------------------------------------------------------------------------- models
M1 = MambaConfig(vocab_size=64, d_model=32, n_layer=2, d_state=4, bias=True, pad_vocab_size_multiple=8)


def _m2(ngroups):
    return Mamba2Config(vocab_size=64, d_model=32, n_layer=2, d_state=4, headdim=8, ngroups=ngroups, chunk_size=4)


def _per_layer(cfg, tp: int) -> int:
    if tp == 1:
        return 0
    if isinstance(cfg, Mamba2Config):
        return 1 if cfg.ngroups % tp == 0 else 2
    return 2


MODEL_CASES = ([pytest.param(M1, m, id=f"mamba1-{m[0]}x{m[1]}") for m in MESHES]
               + [pytest.param(_m2(2), m, id=f"mamba2-G2-{m[0]}x{m[1]}") for m in MESHES]
               + ([pytest.param(_m2(4), (2, 4), id="mamba2-G4-2x4")] if (2, 4) in MESHES else []))


def _inputs(cfg):
    rng = np.random.default_rng(1)
    b = 8 if N >= 8 or N < 2 else 2 * N
    ids = jnp.asarray(rng.integers(0, cfg.vocab_size, (b, 11)), jnp.int32)
    mask = jnp.asarray(np.arange(11)[None, :] >= rng.integers(0, 5, (b, 1)))
    tok = jnp.asarray(rng.integers(0, cfg.vocab_size, (b,)), jnp.int32)
    prompts = [list(rng.integers(0, cfg.vocab_size, n)) for n in (3, 7, 1)]
    return ids, mask, tok, prompts


def _prefill_and_step(model, ids, mask, tok):
    """(prefill logits, cache, step logits[, collectives of the compiled prefill and step]), from one
    compilation of each (the same executables are counted and run)."""
    graphdef, state = nnx.split(model)
    prefill = jax.jit(lambda st, ids, mk: nnx.merge(graphdef, st).prefill(ids, mk)).lower(state, ids, mask).compile()
    logits, cache = prefill(state, ids, mask)
    step = jax.jit(lambda st, t, c: nnx.merge(graphdef, st).step(t, c)).lower(state, tok, cache).compile()
    step_logits, _ = step(state, tok, cache)
    counts = [dict(sh.count_collectives(f.as_text())) for f in (prefill, step)]
    return logits, cache, step_logits, counts


_REFERENCE = {}


def _reference(cfg):
    """The one-device model's results (computed once per config)."""
    key = repr(cfg)
    if key not in _REFERENCE:
        model = MambaLM(cfg, rngs=nnx.Rngs(0))
        ids, mask, tok, prompts = _inputs(cfg)
        _REFERENCE[key] = (model, *_prefill_and_step(model, ids, mask, tok)[:3],
                           generate(model, prompts, max_new_tokens=5))
    return _REFERENCE[key]


@multi
@pytest.mark.parametrize("cfg, shape", MODEL_CASES)
def test_model_matches_one_device(cfg, shape):
    """Sharded prefill logits and cache, a decode step and greedy generation equal the one-device
    model's; the compiled prefill and step hold exactly the per-layer collectives of the design."""
    model, want, want_cache, want_step, want_tokens = _reference(cfg)
    sharded = sh.shard_model(model, sh.make_mesh(*shape))
    ids, mask, tok, prompts = _inputs(cfg)
    got, got_cache, got_step, counts = _prefill_and_step(sharded, ids, mask, tok)
    assert_close(got, want, jnp.float32, "out", "prefill logits")
    for i, (g, w) in enumerate(zip(got_cache.ssm_states, want_cache.ssm_states)):
        assert_close(g, w, jnp.float32, "state", f"ssm state {i}")
    # Conv states are in the device-major channel order: lay the one-device cache out the same way.
    for i, (g, w) in enumerate(zip(got_cache.conv_states, want_cache.conv_states)):
        assert_close(g, jnp.take(w, sharded.layout.conv_channels(), axis=1), jnp.float32, "out", f"conv state {i}")
    assert_close(got_step, want_step, jnp.float32, "out", "step logits")
    assert generate(sharded, prompts, max_new_tokens=5) == want_tokens

    expected = _per_layer(cfg, shape[1]) * cfg.n_layer
    expected = {"all-reduce": expected} if expected else {}
    assert counts == [expected, expected], "collectives in the compiled prefill, step"


@multi
def test_cache_sharded_and_updated_in_place():
    """The decode cache is split like the activations, and a jitted step with it donated writes the new
    cache into the donated buffers on every device."""
    cfg = _m2(2)
    sharded = sh.shard_model(MambaLM(cfg, rngs=nnx.Rngs(0)), sh.make_mesh(*TP_MESH))
    b = 8 if N >= 8 or N < 2 else 2 * N
    cache = sharded.init_cache(b)
    for leaf in jax.tree.leaves(cache):
        assert leaf.sharding.spec == jax.sharding.PartitionSpec(sh.DATA, sh.MODEL)
    pointers = {s.data.unsafe_buffer_pointer() for leaf in jax.tree.leaves(cache) for s in leaf.addressable_shards}
    graphdef, state = nnx.split(sharded)

    def step(st, t, c):
        m = nnx.merge(graphdef, st)
        logits, c = m.step(t, c, m.step_constants())
        return c, logits

    old = jax.tree.leaves(cache)
    new, _ = jax.jit(step, donate_argnums=2)(state, jnp.zeros((b,), jnp.int32), cache)
    assert all(leaf.is_deleted() for leaf in old)
    for leaf in jax.tree.leaves(new):
        assert all(s.data.unsafe_buffer_pointer() in pointers for s in leaf.addressable_shards), "cache copied"


@multi
@pytest.mark.parametrize("cfg", [M1, _m2(2)], ids=["mamba1", "mamba2"])
def test_init_model_is_sharded_from_the_start(cfg):
    """init_model gives the weights of shard_model(MambaLM(seed)) (up to rounding: the partitioned
    initialisation is compiled), each parameter split over the model axis as the layout says."""
    mesh = sh.make_mesh(*TP_MESH)
    got = sh.init_model(cfg, mesh, seed=3)
    want = sh.shard_model(MambaLM(cfg, rngs=nnx.Rngs(3)), mesh)
    tp = TP_MESH[1]
    for (path, g), w in zip(jax.tree_util.tree_flatten_with_path(nnx.state(got.model))[0],
                            jax.tree.leaves(nnx.state(want.model))):
        keys = sh._keys(path)
        assert_close(g, w, jnp.float32, "out", "/".join(map(str, keys)))
        spec = got.layout.spec(keys)
        assert g.sharding.spec == spec, keys
        if sh.MODEL in spec:
            axis = list(spec).index(sh.MODEL)
            assert g.addressable_shards[0].data.shape[axis] == g.shape[axis] // tp, keys


@multi
def test_from_pretrained_onto_a_mesh(tmp_path):
    """from_pretrained(folder, mesh=) puts each tensor of the checkpoint where shard_model puts it: the
    same values and shardings, the same logits. (A small checkpoint folder written by train.export_hf:
    the bundled default model took ~60 s of sharded compiles here for the same code path.)"""
    import mamba_jax
    from mamba_jax import train

    train.export_hf(MambaLM(M1, rngs=nnx.Rngs(5)), str(tmp_path), "float32", {"mamba_jax_tokenizer": "bytes"})
    mesh = sh.make_mesh(*TP_MESH)
    got = mamba_jax.from_pretrained(str(tmp_path), mesh=mesh)
    want = sh.shard_model(mamba_jax.from_pretrained(str(tmp_path)), mesh)
    assert isinstance(got, sh.ShardedLM) and got.tokenizer is not None
    g_leaves = jax.tree_util.tree_flatten_with_path(nnx.state(got.model))[0]
    w_leaves = jax.tree.leaves(nnx.state(want.model))
    assert len(g_leaves) == len(w_leaves)
    for (path, g), w in zip(g_leaves, w_leaves):
        keys = "/".join(map(str, sh._keys(path)))
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w), err_msg=keys)
        assert g.sharding.spec == w.sharding.spec, keys
    ids = jnp.asarray(np.random.default_rng(0).integers(0, M1.vocab_size, (2, 12)), jnp.int32)
    np.testing.assert_array_equal(np.asarray(got(ids)), np.asarray(want(ids)))


def test_layout_checks():
    """Splits that would cut a head or make a device's heads read two partial groups are refused."""
    with pytest.raises(ValueError, match="nheads"):
        sh.Layout.of(_m2(2), 3)
    with pytest.raises(ValueError, match="ngroups"):
        sh.Layout.of(Mamba2Config(vocab_size=8, d_model=24, n_layer=1, d_state=4, headdim=8, ngroups=3), 2)
    with pytest.raises(ValueError, match="d_inner"):
        sh.Layout.of(M1, 3)
