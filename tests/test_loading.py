"""mamba_jax.from_pretrained: both folder formats, sharded and bf16 weights, tokenizer, hub ids and errors.

The Hugging Face single-file format is also loaded by every parity case in test_model.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import mamba_jax
from mamba_jax.loading import CheckpointError

from _hf_models import CONFIGS, float64_copy, make_hf_model, oracle_logits, rel_err, require_torch

_forward = nnx.jit(lambda m, ids: m(ids))
TOL_F32 = 1e-4  # as in test_model.TOL
HIGHEST = jax.lax.Precision.HIGHEST  # no TF32 for the float32 parity checks on GPUs


def _ids(seed, vocab, shape=(2, 9)):
    return np.random.RandomState(seed).randint(0, vocab, shape)


def _write_state_spaces(hf, folder, *, vocab_size, ssm_cfg, bf16=False):
    """config.json + pytorch_model.bin as mamba_ssm's MambaLMHeadModel writes them (tied head)."""
    torch, _ = require_torch()
    c = hf.config
    cfg = dict(d_model=c.hidden_size, d_intermediate=0, n_layer=c.num_hidden_layers, vocab_size=vocab_size,
               ssm_cfg=ssm_cfg, attn_layer_idx=[], attn_cfg={}, rms_norm=True, residual_in_fp32=True,
               fused_add_norm=True, pad_vocab_size_multiple=8, tie_embeddings=True)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f)
    sd = {k.replace("backbone.embeddings.", "backbone.embedding."): v.clone() for k, v in hf.state_dict().items()}
    sd["lm_head.weight"] = sd["backbone.embedding.weight"]
    if bf16:
        sd = {k: v.to(torch.bfloat16) for k, v in sd.items()}
    torch.save(sd, os.path.join(folder, "pytorch_model.bin"))


@pytest.mark.parametrize("bf16", [False, True], ids=["f32-bin", "bf16-bin"])
def test_state_spaces_folder_matches_transformers(tmp_path, bf16):
    torch, _ = require_torch()
    if bf16:  # explicit dt_rank, bias on, conv bias off, d_state 4, width 2; padded vocab = vocab
        fields = dict(CONFIGS["d50-N4-w2-r5-untied-bias-noconvbias"], tie_word_embeddings=True)
        ssm_cfg = dict(d_state=4, d_conv=2, expand=2, dt_rank=5, bias=True, conv_bias=False)
        vocab = 104
    else:  # defaults from ssm_cfg = {}; vocab 100 padded to 104 rows like the real 50277 -> 50280
        fields = dict(CONFIGS["d37-N16-w4-rauto-tied-convbias"])
        ssm_cfg, vocab = {}, 100
    hf = make_hf_model(7, vocab_size=104, **fields)
    _write_state_spaces(hf, tmp_path, vocab_size=vocab, ssm_cfg=ssm_cfg, bf16=bf16)
    if bf16:  # the oracle sees the same bf16-rounded weights
        hf = hf.to(torch.bfloat16)
    model = mamba_jax.from_pretrained(str(tmp_path), precision=HIGHEST)
    assert model.config.vocab_size == vocab and model.config.padded_vocab_size == 104
    assert model.tokenizer is None
    ids = _ids(1, vocab)
    logits = _forward(model, jnp.asarray(ids, jnp.int32))
    assert logits.shape == (2, 9, 104)
    assert rel_err(logits, oracle_logits(float64_copy(hf), ids)) <= TOL_F32


@pytest.fixture(scope="module")
def hf_small(tmp_path_factory):
    """An untied model (so lm_head.weight is stored) saved once; tests copy or rewrite it."""
    hf = make_hf_model(3, **CONFIGS["d50-N4-w2-r5-untied-bias-noconvbias"])
    folder = tmp_path_factory.mktemp("hf_small")
    hf.save_pretrained(folder)
    return hf, str(folder)


def test_sharded_safetensors_match_transformers(hf_small, tmp_path):
    hf, _ = hf_small
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    shards = [f for f in os.listdir(tmp_path) if f.endswith(".safetensors")]
    assert "model.safetensors.index.json" in os.listdir(tmp_path) and len(shards) > 1
    model = mamba_jax.from_pretrained(str(tmp_path), implementation="xla", precision=HIGHEST)
    ids = _ids(2, hf.config.vocab_size)
    assert rel_err(_forward(model, jnp.asarray(ids, jnp.int32)), oracle_logits(float64_copy(hf), ids)) <= TOL_F32


def test_hf_config_with_state_spaces_keys_reads_as_hf(hf_small, tmp_path):
    """The real state-spaces/mamba-130m-hf config.json also has d_model, n_layer, ssm_cfg and
    pad_vocab_size_multiple 8; read as the state-spaces format, vocab 97 would be padded to 104."""
    hf, folder = hf_small
    c = hf.config
    extras = dict(d_model=c.hidden_size, n_layer=c.num_hidden_layers, ssm_cfg={}, rms_norm=True,
                  fused_add_norm=True, pad_vocab_size_multiple=8)
    folder = _rewrite(folder, tmp_path, edit_config=lambda cfg: cfg.update(extras))
    model = mamba_jax.from_pretrained(folder, precision=HIGHEST)
    assert model.config.padded_vocab_size == c.vocab_size == 97
    assert model.config.dt_rank == 5 and not model.config.tie_embeddings


def test_bf16_safetensors_load_exactly(hf_small, tmp_path):
    torch, _ = require_torch()
    hf, _ = hf_small
    hf16 = float64_copy(hf).to(torch.bfloat16)
    hf16.save_pretrained(tmp_path)
    for dtype in (jnp.float32, jnp.bfloat16):
        model = mamba_jax.from_pretrained(str(tmp_path), dtype=dtype)
        w = hf16.backbone.layers[1].mixer.in_proj.weight.detach().float().numpy()
        got = model.layers[1].mixer.in_proj.kernel[...]
        assert got.dtype == dtype
        np.testing.assert_array_equal(np.asarray(got, np.float32), w.T)
        # A_log, D and the dt bias stay float32 whatever the model dtype
        assert model.layers[0].mixer.A_log[...].dtype == jnp.float32
        np.testing.assert_array_equal(model.layers[0].mixer.D[...], hf16.backbone.layers[0].mixer.D.detach().float().numpy())


def test_tokenizer_json_is_loaded(hf_small, tmp_path):
    tokenizers = pytest.importorskip("tokenizers", reason="model.tokenizer is a tokenizers.Tokenizer")
    _, folder = hf_small
    for f in os.listdir(folder):
        os.symlink(os.path.join(folder, f), tmp_path / f)
    vocab = {"[UNK]": 0, "def": 1, "fib": 2}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    model = mamba_jax.from_pretrained(str(tmp_path))
    assert isinstance(model.tokenizer, tokenizers.Tokenizer)
    assert model.tokenizer.encode("def fib x").ids == [1, 2, 0]
    assert mamba_jax.from_pretrained(folder).tokenizer is None


def _rewrite(folder, dst, edit_tensors=None, edit_config=None):
    """Copies an HF folder to dst, editing its (single-file) tensors dict and/or config dict."""
    from safetensors.numpy import load_file, save_file

    tensors = load_file(os.path.join(folder, "model.safetensors"))
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    if edit_tensors:
        edit_tensors(tensors)
    if edit_config:
        edit_config(cfg)
    save_file(tensors, os.path.join(dst, "model.safetensors"))
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f)
    return str(dst)


def test_missing_tensor_is_named(hf_small, tmp_path):
    folder = _rewrite(hf_small[1], tmp_path, edit_tensors=lambda t: t.pop("lm_head.weight"))
    with pytest.raises(CheckpointError, match=r"lm_head\.weight .*expected shape \(97, 50\).* is missing"):
        mamba_jax.from_pretrained(folder)


def test_misshapen_tensor_names_both_shapes(hf_small, tmp_path):
    def edit(t):
        t["backbone.layers.1.mixer.D"] = t["backbone.layers.1.mixer.D"][:-1].copy()

    folder = _rewrite(hf_small[1], tmp_path, edit_tensors=edit)
    with pytest.raises(CheckpointError, match=r"backbone\.layers\.1\.mixer\.D has shape \(99,\).*expects \(100,\)"):
        mamba_jax.from_pretrained(folder)


def test_config_disagreeing_with_weights_is_reported(hf_small, tmp_path):
    folder = _rewrite(hf_small[1], tmp_path, edit_config=lambda c: c.update(state_size=8))
    with pytest.raises(CheckpointError, match=r"backbone\.layers\.0\.mixer\.\w+\.?\w* has shape .* expects"):
        mamba_jax.from_pretrained(folder)
    folder = _rewrite(hf_small[1], tmp_path, edit_config=lambda c: c.update(num_hidden_layers=1))
    with pytest.raises(CheckpointError, match=r"not used by the model.*backbone\.layers\.1\."):
        mamba_jax.from_pretrained(folder)


def test_unsupported_or_incomplete_folders(hf_small, tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        mamba_jax.from_pretrained(str(tmp_path))
    with open(tmp_path / "config.json", "w") as f:
        json.dump({"model_type": "falcon_h1", "hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 10}, f)
    with pytest.raises(ValueError, match="model_type 'falcon_h1'; supported: 'mamba'"):
        mamba_jax.from_pretrained(str(tmp_path))
    with open(tmp_path / "config.json", "w") as f:
        json.dump({"d_model": 64, "n_layer": 2, "vocab_size": 10, "ssm_cfg": {"layer": "Mamba3"}}, f)
    with pytest.raises(ValueError, match="ssm_cfg.layer 'Mamba3'; supported: 'Mamba1', 'Mamba2'"):
        mamba_jax.from_pretrained(str(tmp_path))
    with open(tmp_path / "config.json", "w") as f:
        json.dump({"d_model": 64, "n_layer": 2, "vocab_size": 10}, f)
    with pytest.raises(FileNotFoundError, match="no weights"):
        mamba_jax.from_pretrained(str(tmp_path))


def test_path_that_is_neither_folder_nor_hub_id(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a hub id"):
        mamba_jax.from_pretrained(str(tmp_path / "no" / "such" / "folder"))


def test_hub_id_without_huggingface_hub(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # makes `import huggingface_hub` fail
    with pytest.raises(RuntimeError, match="huggingface_hub is not installed"):
        mamba_jax.from_pretrained("state-spaces/mamba-130m-hf")


def test_hub_id_offline_gives_a_clear_error(tmp_path):
    pytest.importorskip("huggingface_hub", reason="the offline path goes through huggingface_hub")
    # A fresh interpreter with offline mode and an empty cache in its environment: every
    # huggingface_hub version reads them at import, no request leaves this machine, and nothing
    # cached can answer.
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path), HF_HUB_CACHE=str(tmp_path / "hub"))
    code = ("import mamba_jax\n"
            "try:\n"
            "    mamba_jax.from_pretrained('mamba-jax-tests/no-such-model')\n"
            "except RuntimeError as e:\n"
            "    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "could not fetch 'mamba-jax-tests/no-such-model' from the Hugging Face Hub" in r.stdout, r.stdout


def test_import_mamba_jax_does_not_import_flax():
    code = ("import sys, mamba_jax; assert 'flax' not in sys.modules; "
            "assert mamba_jax.from_pretrained and mamba_jax.MambaLM and 'flax' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_default_names_the_bundled_model(tmp_path, monkeypatch):
    """"default" is the shipped byte-level model (the one `make generate` runs), even where the working
    directory has a folder of that name."""
    from mamba_jax import loading

    (tmp_path / "default").mkdir()
    monkeypatch.chdir(tmp_path)
    assert loading.resolve_model("default") == loading.DEFAULT_MODEL_DIR
    assert loading.resolve_model("./default") == "./default"
    model, folder, config = loading.load_model("default")
    assert folder == loading.DEFAULT_MODEL_DIR
    assert config["mamba_jax_tokenizer"] == "bytes" and model.config.vocab_size == 257
    assert isinstance(model.tokenizer, loading.ByteTokenizer)
    assert model.tokenizer.encode("é") == [0xC3, 0xA9] and model.tokenizer.decode([0xC3, 0xA9, 256]) == "é"
    logits = model(jnp.asarray([list(b"def f(x):")], jnp.int32))
    assert logits.shape[:2] == (1, 9) and bool(jnp.all(jnp.isfinite(logits)))


def test_malformed_config_json(tmp_path):
    from mamba_jax import loading

    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="malformed .*config.json"):
        loading.load_model(str(tmp_path))
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a JSON object"):
        loading.read_config(str(tmp_path))
