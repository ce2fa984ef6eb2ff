"""The byte-level data pipeline, the training command (tiny runs on CPU), checkpoints, resume and the
transformers-layout export read back by `from_pretrained`."""

from __future__ import annotations

import json
import math
import os
import types

import numpy as np
import pytest
import jax
import jax.numpy as jnp
from flax import nnx

from mamba_jax import cli, data, train
from mamba_jax.loading import from_pretrained
from mamba_jax.nn import MambaConfig, MambaLM


def _make_tree(root, n_files=30, seed=0):
    """A fake stdlib: python files of a few KB, a test directory and non-.py files to skip."""
    rng = np.random.default_rng(seed)
    words = ["def", "return", "self", "import", "class", "for", "in", "if", "else", "None", "(", ")", ":"]
    contents = {}
    for i in range(n_files):
        sub = ["", "pkg", "pkg/inner"][i % 3]
        os.makedirs(os.path.join(root, sub), exist_ok=True)
        lines = [f"def f{i}_{j}(x):\n    return " + " ".join(rng.choice(words, 6)) + "\n" for j in range(40)]
        rel = os.path.join(sub, f"mod{i}.py") if sub else f"mod{i}.py"
        text = "".join(lines).encode()
        with open(os.path.join(root, rel), "wb") as f:
            f.write(text)
        contents[rel] = text
    for skip in ("test", "pkg/tests", "site-packages"):
        os.makedirs(os.path.join(root, skip), exist_ok=True)
        with open(os.path.join(root, skip, "skipped.py"), "w") as f:
            f.write("SKIPPED = True\n")
    with open(os.path.join(root, "README.txt"), "w") as f:
        f.write("not python\n")
    return contents


def test_list_sources_skips_tests_and_non_python(tmp_path):
    contents = _make_tree(str(tmp_path))
    assert data.list_sources(str(tmp_path)) == sorted(contents)


def test_heldout_split_is_deterministic_and_about_the_fraction():
    names = [f"pkg{i % 17}/mod{i}.py" for i in range(4000)]
    held = [n for n in names if data.is_heldout(n, 0.1)]
    assert held == [n for n in names if data.is_heldout(n, 0.1)]
    assert 0.08 < len(held) / len(names) < 0.12
    # the split does not depend on the OS separator
    assert data.is_heldout("a/b/c.py", 0.5) == data.is_heldout(os.path.join("a", "b", "c.py"), 0.5)
    # a larger fraction holds out a superset
    assert set(held) <= {n for n in names if data.is_heldout(n, 0.2)}


def test_corpus_streams_hold_every_file_once_with_eos(tmp_path):
    contents = _make_tree(str(tmp_path))
    c = data.ByteCorpus.load(str(tmp_path), heldout_fraction=0.2)
    assert sorted(c.train_files + c.heldout_files) == sorted(contents)
    assert c.train_files and c.heldout_files
    for files, stream in ((c.train_files, c.train), (c.heldout_files, c.heldout)):
        expected = b"".join(contents[f] + b"\x00" for f in files)  # placeholder byte for EOS
        assert stream.dtype == np.uint16 and stream.shape[0] == len(expected)
        ends = np.cumsum([len(contents[f]) + 1 for f in files]) - 1
        np.testing.assert_array_equal(np.nonzero(stream == data.EOS_ID)[0], ends)
        body = np.frombuffer(expected, np.uint8).astype(np.uint16)
        body[ends] = data.EOS_ID
        np.testing.assert_array_equal(stream, body)
    s = c.summary()
    assert s["train_bytes"] + s["heldout_bytes"] == sum(len(v) for v in contents.values())


def test_sample_batch_takes_contiguous_windows():
    stream = (np.arange(5000) % data.VOCAB_SIZE).astype(np.uint16)
    b = data.sample_batch(stream, 16, 33, np.random.default_rng(0))
    assert b.shape == (16, 34) and b.dtype == np.int32
    np.testing.assert_array_equal((b[:, 1:] - b[:, :-1]) % data.VOCAB_SIZE, 1)
    again = data.sample_batch(stream, 16, 33, np.random.default_rng(0))
    np.testing.assert_array_equal(b, again)
    with pytest.raises(ValueError, match="fewer than seqlen"):
        data.sample_batch(stream[:10], 2, 33, np.random.default_rng(0))


def test_eval_windows_score_each_token_once():
    stream = np.arange(1000).astype(np.uint16)
    w = data.eval_windows(stream, 64)
    assert w.shape == ((1000 - 1) // 64, 65)
    targets = w[:, 1:].ravel()
    np.testing.assert_array_equal(targets, np.arange(1, 1 + targets.size))
    np.testing.assert_array_equal(w[1:, 0], w[:-1, -1])  # consecutive windows share one token
    assert data.eval_windows(stream, 64, max_tokens=200).shape[0] == 3


def test_lr_schedule_warmup_and_cosine():
    a = types.SimpleNamespace(lr=1.0, min_lr_ratio=0.1, warmup=10, steps=100, max_minutes=None)
    assert math.isclose(train.lr_at(a, 0, 0.0), 0.1 * (0.1 + 0.9 * 0.5 * (1 + math.cos(0.0))))
    assert train.lr_at(a, 9, 0.0) > train.lr_at(a, 5, 0.0)
    assert math.isclose(train.lr_at(a, 50, 0.0), 0.1 + 0.9 * 0.5)
    assert math.isclose(train.lr_at(a, 100, 0.0), 0.1)
    # with a wall-clock bound, progress is the larger of the two fractions
    b = types.SimpleNamespace(lr=1.0, min_lr_ratio=0.1, warmup=1, steps=None, max_minutes=2.0)
    assert math.isclose(train.lr_at(b, 5, 60.0), 0.1 + 0.9 * 0.5)
    assert math.isclose(train.lr_at(b, 5, 500.0), 0.1)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_export_is_read_back_by_from_pretrained(tmp_path, dtype):
    cfg = MambaConfig(vocab_size=data.VOCAB_SIZE, d_model=16, n_layer=2, d_state=4)
    model = MambaLM(cfg, rngs=nnx.Rngs(3))
    size = train.export_hf(model, str(tmp_path), dtype, {"eos_token_id": data.EOS_ID, "mamba_jax_tokenizer": "bytes"})
    assert size == os.path.getsize(tmp_path / "model.safetensors")
    with open(tmp_path / "config.json") as f:
        cfg_json = json.load(f)
    assert cfg_json["model_type"] == "mamba" and cfg_json["eos_token_id"] == data.EOS_ID
    loaded = from_pretrained(str(tmp_path))
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 257, (2, 12)), jnp.int32)
    want, got = np.asarray(model(ids)), np.asarray(loaded(ids))
    if dtype == "float32":
        np.testing.assert_array_equal(got, want)
    else:  # weights rounded to bf16 (A_log, D, dt bias kept in float32)
        np.testing.assert_allclose(got, want, atol=0.05 * np.abs(want).max())
        assert loaded.layers[0].mixer.A_log[...].dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(loaded.layers[0].mixer.A_log[...]),
                                      np.asarray(model.layers[0].mixer.A_log[...]))


def _args(out, root, *extra):
    return cli.build_parser().parse_args(
        ["train", "--out", str(out), "--data-root", str(root), "--d-model", "16", "--n-layer", "1",
         "--d-state", "4", "--batch", "4", "--seq-len", "32", "--lr", "1e-2", "--warmup", "2",
         "--heldout-fraction", "0.2", "--eval-every", "0", "--log-every", "1", "--no-progress",
         "--export-dtype", "float32", *extra])


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("fake_stdlib")
    _make_tree(str(root))
    return root


def _params(out):
    from safetensors.numpy import load_file

    return load_file(os.path.join(out, "checkpoint", "params.safetensors"))


def test_train_learns_checkpoints_and_exports(tmp_path, tree):
    m = train.run(_args(tmp_path / "a", tree, "--steps", "24", "--ckpt-every", "8"))
    assert m["steps"] == 24 and m["tokens_seen"] == 24 * 4 * 32
    log = [json.loads(l) for l in open(tmp_path / "a" / "log.jsonl")]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 24 and all(np.isfinite(losses))
    # from ~log(257) = 5.55 nats at the start, the repetitive fake sources are learned quickly
    assert losses[0] > 5.0 and np.mean(losses[-4:]) < losses[0] - 1.0
    assert m["heldout_bits_per_byte"] < losses[0] / math.log(2) - 1.0
    for f in ("params.safetensors", "opt_state.safetensors", "state.json"):
        assert os.path.isfile(tmp_path / "a" / "checkpoint" / f)
    model_dir = tmp_path / "a" / "model"
    for f in ("config.json", "model.safetensors", "metrics.json"):
        assert os.path.isfile(model_dir / f)
    # the export reproduces the checkpoint's float32 weights
    ckpt = _params(tmp_path / "a")
    loaded = from_pretrained(str(model_dir))
    emb = [v for k, v in ckpt.items() if "embedding" in k][0]
    np.testing.assert_array_equal(np.asarray(loaded.embedding.embedding[...]), emb)


def test_resume_continues_exactly(tmp_path, tree):
    train.run(_args(tmp_path / "full", tree, "--steps", "6", "--ckpt-every", "0"))
    train.run(_args(tmp_path / "split", tree, "--steps", "6", "--stop-at", "3", "--ckpt-every", "0"))
    meta = json.load(open(tmp_path / "split" / "checkpoint" / "state.json"))
    assert meta["step"] == 3
    m = train.run(_args(tmp_path / "split", tree, "--steps", "6", "--ckpt-every", "0", "--resume"))
    assert m["steps"] == 6
    full, split = _params(tmp_path / "full"), _params(tmp_path / "split")
    assert full.keys() == split.keys()
    for k in full:
        np.testing.assert_allclose(split[k], full[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_resume_without_checkpoint_and_mismatched_model(tmp_path, tree):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train.run(_args(tmp_path / "none", tree, "--steps", "2", "--resume"))
    train.run(_args(tmp_path / "small", tree, "--steps", "1", "--ckpt-every", "0"))
    bigger = _args(tmp_path / "small", tree, "--steps", "2", "--resume")
    bigger.d_model = 24
    with pytest.raises(ValueError, match="shape"):
        train.run(bigger)
