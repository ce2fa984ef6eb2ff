"""Loads Mamba-1 and Mamba-2 checkpoints into `mamba_jax.nn.MambaLM`.

Two folder formats are read:

* Hugging Face (transformers ``MambaForCausalLM`` / ``Mamba2ForCausalLM``): config.json with transformers
  MambaConfig / Mamba2Config fields (hidden_size, num_hidden_layers, state_size, ...; model_type
  "mamba2" for Mamba-2), weights in model.safetensors or sharded safetensors with
  model.safetensors.index.json.
* The original state-spaces format (mamba_ssm ``MambaLMHeadModel``): config.json with d_model,
  n_layer, vocab_size, ssm_cfg (layer "Mamba2" for Mamba-2), ...; weights in pytorch_model.bin, read
  through torch (imported only when such a file has to be read).

Both name weights ``backbone.layers.N.mixer.*`` (the embedding is ``backbone.embeddings.weight`` in
one and ``backbone.embedding.weight`` in the other; both are accepted).

A model name is resolved once, by `resolve_model`: "default" is the byte-level model bundled in
mamba_jax/default_model, an existing directory is itself, and anything else of the form owner/name is
a hub id, fetched with huggingface_hub when it is installed and the hub is reachable. `load_model`
returns the model with its folder and config dict (what the CLI and training use); `from_pretrained`
returns the model alone. tokenizer.json, when present, is read with `tokenizers` into
``model.tokenizer``; a byte-level model (config "mamba_jax_tokenizer": "bytes") gets a `ByteTokenizer`.
"""

from __future__ import annotations

import json
import os
import re
from typing import Callable, Optional

import numpy as np

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class CheckpointError(ValueError):
    """A checkpoint does not fit the model its config describes (missing, unexpected or misshapen tensor)."""


# The byte-level model shipped in the package (see default_model/MODEL_CARD.md).
DEFAULT_MODEL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_model")


def resolve_model(name, *, revision: Optional[str] = None) -> str:
    """Returns the local folder of a model name.

    Args:
      name: "default" (the bundled byte-level model, whatever the working directory holds; pass
        "./default" for a folder of that name), a local folder, or a hub id "owner/name".
      revision: hub revision (branch, tag or commit) for a hub id.

    Raises:
      FileNotFoundError: a missing folder that is not a hub id either, a file, or a missing bundled model.
      RuntimeError: a hub id that cannot be fetched (huggingface_hub missing, offline, unknown repo).
    """
    path = os.fspath(name)
    if path == "default":
        if not os.path.isfile(os.path.join(DEFAULT_MODEL_DIR, "config.json")):
            raise FileNotFoundError(f"the bundled default model is missing from {DEFAULT_MODEL_DIR}; "
                                    "reinstall mamba-jax or give a model folder")
        return DEFAULT_MODEL_DIR
    if os.path.isdir(path):
        return path
    if os.path.exists(path):
        raise FileNotFoundError(f"{path!r} is a file; give the folder that holds config.json")
    if not _HUB_ID.match(path):
        raise FileNotFoundError(f"no folder {path!r}, and it is not a hub id (owner/name)")
    return _download(path, revision)


def _download(repo_id: str, revision: Optional[str]) -> str:
    """A snapshot of the hub repo (safetensors preferred, else pytorch_model*.bin) in huggingface_hub's
    cache. Every failure of huggingface_hub, whatever its version and exception types, becomes one
    RuntimeError naming the repo."""
    try:
        import huggingface_hub
    except ImportError as e:
        raise RuntimeError(
            f"{repo_id!r} is not a local folder, and huggingface_hub is not installed to fetch "
            "it from the Hugging Face Hub; `pip install huggingface_hub` (or mamba-jax[hub]), or download the "
            "folder yourself and pass its path") from e
    try:
        folder = huggingface_hub.snapshot_download(
            repo_id, revision=revision, allow_patterns=["*.json", "*.safetensors", "tokenizer.model"])
        if not _has_safetensors(folder):
            folder = huggingface_hub.snapshot_download(repo_id, revision=revision,
                                                       allow_patterns=["pytorch_model*.bin", "*.json"])
    except Exception as e:  # offline, unreachable, unknown repo, gated repo: all end here
        raise RuntimeError(
            f"could not fetch {repo_id!r} from the Hugging Face Hub "
            f"({type(e).__name__}: {e}). No local folder has that name either. If you are offline, "
            "download the folder elsewhere and pass its local path.") from e
    return folder


def _has_safetensors(folder: str) -> bool:
    return any(f.endswith(".safetensors") for f in os.listdir(folder))


def read_config(folder: str) -> dict:
    """folder/config.json as a dict. Raises FileNotFoundError when it is missing, ValueError when it
    is not a JSON object."""
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no config.json in {folder!r}")
    try:
        with open(path) as f:
            d = json.load(f)
    except ValueError as e:
        raise ValueError(f"malformed {path}: {e}") from e
    if not isinstance(d, dict):
        raise ValueError(f"malformed {path}: not a JSON object")
    return d


def load_config(folder: str):
    """Reads folder/config.json. Returns (MambaConfig or Mamba2Config, format) with format "hf" or
    "state-spaces"."""
    from .nn.config import config_from_dict

    d = read_config(folder)
    try:
        return config_from_dict(d)
    except ValueError as e:
        raise ValueError(f"from_pretrained: {os.path.join(folder, 'config.json')}: {e}") from e


class _Tensors:
    """name -> numpy array, read lazily from safetensors shards or a torch pickle."""

    def __init__(self, folder: str):
        self._get: dict[str, Callable[[], np.ndarray]] = {}
        self._shape: dict[str, tuple] = {}
        self.files: list[str] = []
        index = os.path.join(folder, "model.safetensors.index.json")
        single = os.path.join(folder, "model.safetensors")
        bin_index = os.path.join(folder, "pytorch_model.bin.index.json")
        single_bin = os.path.join(folder, "pytorch_model.bin")
        if os.path.isfile(index):
            for shard in _shards(index):
                self._add_safetensors(os.path.join(folder, shard))
        elif os.path.isfile(single):
            self._add_safetensors(single)
        elif os.path.isfile(bin_index):
            for shard in _shards(bin_index):
                self._add_torch(os.path.join(folder, shard))
        elif os.path.isfile(single_bin):
            self._add_torch(single_bin)
        else:
            raise FileNotFoundError(
                f"from_pretrained: no weights in {folder!r} (looked for model.safetensors, "
                "model.safetensors.index.json, pytorch_model.bin, pytorch_model.bin.index.json)")

    def _add_safetensors(self, path: str):
        from safetensors import safe_open

        handle = safe_open(path, framework="numpy")
        self.files.append(path)
        for name in handle.keys():
            self._shape[name] = tuple(handle.get_slice(name).get_shape())
            self._get[name] = (lambda h=handle, n=name: h.get_tensor(n))

    def _add_torch(self, path: str):
        try:
            import torch
        except ImportError as e:
            raise RuntimeError(f"from_pretrained: {path} is a PyTorch pickle and reading it needs torch; "
                               "install torch (CPU is enough) or convert the checkpoint to safetensors") from e
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # a pre-zipfile (legacy) pickle cannot be memory-mapped
            sd = torch.load(path, map_location="cpu", weights_only=True)
        self.files.append(path)
        for name, t in sd.items():
            self._shape[name] = tuple(t.shape)
            self._get[name] = (lambda t=t: _torch_to_numpy(t))

    def names(self):
        return self._get.keys()

    def shape(self, name: str) -> tuple:
        return self._shape[name]

    def get(self, name: str) -> np.ndarray:
        return self._get[name]()


def _shards(index_path: str) -> list[str]:
    with open(index_path) as f:
        weight_map = json.load(f)["weight_map"]
    return sorted(set(weight_map.values()))


def _torch_to_numpy(t) -> np.ndarray:
    import torch

    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16; reinterpret the bits as ml_dtypes' one
        import ml_dtypes

        return t.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


_MIXER = {  # our path under layers.N.mixer -> (checkpoint name under backbone.layers.N.mixer, layout)
    ("in_proj", "kernel"): ("in_proj.weight", "T"),
    ("in_proj", "bias"): ("in_proj.bias", None),
    ("conv_weight",): ("conv1d.weight", "conv"),
    ("conv_bias",): ("conv1d.bias", None),
    ("x_proj", "kernel"): ("x_proj.weight", "T"),
    ("dt_proj", "kernel"): ("dt_proj.weight", "T"),
    ("dt_bias",): ("dt_proj.bias", None),
    ("A_log",): ("A_log", None),
    ("D",): ("D", None),
    ("out_proj", "kernel"): ("out_proj.weight", "T"),
    ("out_proj", "bias"): ("out_proj.bias", None),
}
# Mamba-2 (transformers and state-spaces name them alike): no x_proj / dt_proj; dt_bias and the gated norm.
_MIXER2 = {
    **{k: v for k, v in _MIXER.items() if k[0] not in ("x_proj", "dt_proj", "dt_bias")},
    ("dt_bias",): ("dt_bias", None),
    ("norm", "scale"): ("norm.weight", None),
}
_EMBEDDING_NAMES = ("backbone.embeddings.weight", "backbone.embedding.weight")


def checkpoint_name(path: tuple, *, mamba2: bool = False) -> tuple[tuple[str, ...], Optional[str]]:
    """Our parameter path (of a Mamba-1 model, or Mamba-2 with `mamba2`) -> (candidate checkpoint names,
    layout)."""
    if path == ("embedding", "embedding"):
        return _EMBEDDING_NAMES, None
    if path == ("norm_f", "scale"):
        return ("backbone.norm_f.weight",), None
    if path == ("lm_head", "kernel"):
        return ("lm_head.weight",), "T"
    if path[0] == "layers" and len(path) >= 4:
        i = path[1]
        if path[2:] == ("norm", "scale"):
            return (f"backbone.layers.{i}.norm.weight",), None
        table = _MIXER2 if mamba2 else _MIXER
        if path[2] == "mixer" and tuple(path[3:]) in table:
            name, layout = table[tuple(path[3:])]
            return (f"backbone.layers.{i}.mixer.{name}",), layout
    raise KeyError(f"no checkpoint name for parameter {'.'.join(map(str, path))}")


def _checkpoint_shapes(shape: tuple, layout: Optional[str]) -> tuple[tuple, ...]:
    """Shapes a checkpoint tensor may have for one of our parameters of `shape`."""
    if layout == "T":
        return (tuple(reversed(shape)),)
    if layout == "conv":  # torch Conv1d weight [e, 1, w]; also accept [e, w]
        return ((shape[0], 1, shape[1]), tuple(shape))
    return (tuple(shape),)


def _to_ours(arr: np.ndarray, shape: tuple, layout: Optional[str]) -> np.ndarray:
    if layout == "T":
        return np.ascontiguousarray(arr.T)
    return arr.reshape(shape)


def load_weights(model, folder: str, put=None) -> None:
    """Fills every parameter of `model` (a MambaLM, possibly abstract from nnx.eval_shape) from the
    checkpoint in `folder`, converting to each parameter's dtype. Raises CheckpointError naming the
    tensor for a missing, unexpected or misshapen tensor. put(path, array, dtype) -> device array
    places each parameter (default: the default device; `sharding.placer` puts it on a mesh)."""
    import jax
    from flax import nnx

    from .nn.config import Mamba2Config

    mamba2 = isinstance(model.config, Mamba2Config)
    tensors = _Tensors(folder)
    names = set(tensors.names())
    used: set[str] = set()
    where = ", ".join(os.path.basename(f) for f in tensors.files)
    params = [(p, v) for p, v in nnx.iter_graph(model) if isinstance(v, nnx.Param)]
    for path, var in params:
        candidates, layout = checkpoint_name(tuple(path), mamba2=mamba2)
        found = [n for n in candidates if n in names]
        cur = var.get_value()
        ours = tuple(cur.shape)
        wanted = _checkpoint_shapes(ours, layout)
        if not found:
            raise CheckpointError(
                f"checkpoint tensor {candidates[0]} (model parameter {'.'.join(map(str, path))}, expected "
                f"shape {wanted[0]}) is missing from {where} in {folder}")
        name = found[0]
        got = tensors.shape(name)
        if got not in wanted:
            raise CheckpointError(
                f"checkpoint tensor {name} has shape {got}, but the model built from config.json expects "
                f"{wanted[0]} (parameter {'.'.join(map(str, path))}); config.json and the weights disagree")
        arr = _to_ours(tensors.get(name), ours, layout)
        var.set_value(jax.device_put(arr).astype(cur.dtype) if put is None else put(tuple(path), arr, cur.dtype))
        used.update(found)
    leftover = [p for p, v in nnx.iter_graph(model)
                if isinstance(v, nnx.Variable) and isinstance(v.get_value(), jax.ShapeDtypeStruct)]
    if leftover:  # a variable this loader does not know how to fill (a new parameter kind)
        raise CheckpointError(f"model variables not filled from the checkpoint: {leftover}")
    unexpected = names - used
    if model.config.tie_embeddings:
        unexpected.discard("lm_head.weight")  # tied head: the pickle of a state dict keeps both names
    if unexpected:
        raise CheckpointError(f"checkpoint tensors not used by the model built from config.json: "
                              f"{sorted(unexpected)} (in {where} in {folder})")


def load_model(name, dtype=None, implementation: Optional[str] = None, *, param_dtype=None, precision=None,
               revision: Optional[str] = None, mesh=None):
    """Resolves a model name (see `resolve_model`) and loads it, as `from_pretrained` does.

    Returns:
      (model, folder, config): the MambaLM (a `sharding.ShardedLM` with `mesh`), the local folder it came
      from and its config.json as a dict.
    """
    import jax.numpy as jnp
    from flax import nnx

    from .nn import MambaLM

    dtype = jnp.float32 if dtype is None else dtype
    param_dtype = dtype if param_dtype is None else param_dtype
    folder = resolve_model(name, revision=revision)
    config = read_config(folder)
    cfg, _ = load_config(folder)
    # Built abstractly: no random initialisation of weights that are overwritten right after.
    model = nnx.eval_shape(lambda: MambaLM(cfg, dtype=dtype, param_dtype=param_dtype, precision=precision,
                                           implementation=implementation, rngs=nnx.Rngs(0)))
    layout = put = None
    if mesh is not None:
        from .sharding import placer

        layout, put = placer(cfg, mesh)
    load_weights(model, folder, put)
    model.tokenizer = load_tokenizer(folder)
    if mesh is not None:
        from .sharding import ShardedLM

        model = ShardedLM(model, mesh, layout)
    return model, folder, config


def from_pretrained(path_or_hub_id, dtype=None, implementation: Optional[str] = None, *, param_dtype=None,
                    precision=None, revision: Optional[str] = None, mesh=None):
    """Loads a Mamba-1 or Mamba-2 checkpoint into a `mamba_jax.nn.MambaLM`.

    Args:
      path_or_hub_id: a local folder (transformers Mamba / Mamba-2 or state-spaces format), "default" (the
        bundled byte-level model), or a hub id such as
        "state-spaces/mamba-130m-hf" (needs huggingface_hub and a reachable hub).
      dtype: activation dtype (default float32); also the parameter dtype unless `param_dtype` is given.
        A_log, D and the dt bias stay float32.
      implementation: None | "ffi" | "xla" for every op call; settable later on ``model.implementation``.
      param_dtype: dtype the weights are stored in on the device (default: `dtype`).
      precision: matmul precision for the projections and the head (None: HIGHEST for float32).
      revision: hub revision (branch, tag or commit) for a hub id.
      mesh: a (data, model) mesh from `sharding.make_mesh`: each tensor goes straight from the file to
        its place on the mesh (one whole tensor on one device at a time), so a checkpoint larger than
        one device loads; returns a `sharding.ShardedLM` (= `shard_model` of the unsharded model).

    Returns:
      MambaLM with ``model.tokenizer`` from `load_tokenizer`. Its logits cover
      ``config.padded_vocab_size`` tokens.
    """
    return load_model(path_or_hub_id, dtype, implementation, param_dtype=param_dtype, precision=precision,
                      revision=revision, mesh=mesh)[0]


class ByteTokenizer:
    """UTF-8 bytes as token ids 0..255, what byte-level models read (their EOS is 256)."""

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(int(t) for t in ids if 0 <= t < 256).decode("utf-8", "replace")


def load_tokenizer(folder: str):
    """The tokenizer of the model in `folder`: a `tokenizers.Tokenizer` from tokenizer.json, a
    `ByteTokenizer` for a byte-level model (config "mamba_jax_tokenizer": "bytes"), else None."""
    path = os.path.join(folder, "tokenizer.json")
    if os.path.isfile(path):
        from tokenizers import Tokenizer

        return Tokenizer.from_file(path)
    if read_config(folder).get("mamba_jax_tokenizer") == "bytes":
        return ByteTokenizer()
    return None
