"""The decode state as a first-class object: snapshots, forks and multi-turn sessions.

A Mamba model's whole memory of a sequence is its `MambaCache` (per layer, the last d_conv - 1 conv
inputs and the SSM state), a fixed size whatever the length of the sequence. So:

    logits, cache = model.prefill(ids_a)                    # A
    logits, cache = model.prefill(ids_b, cache=cache)       # continues: the same as prefilling A + B
    save_cache("prefix.safetensors", cache)                 # a snapshot (a few MB), reloaded later
    caches = fork(cache, 8)                                 # one shared prefix, 8 continuations
    tokens = mamba_jax.generate(model, prompts, 32, cache=caches)

`Session` keeps one conversation's cache between turns, so each turn prefills only its new tokens.
Shape legend: b batch rows, L n_layer.
"""

from __future__ import annotations

import json
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["save_cache", "load_cache", "fork", "take_rows", "concat_caches", "cache_batch", "Session"]

_FORMAT = "mamba_jax.MambaCache/1"


def _cache_cls():
    from .nn.model import MambaCache  # flax is imported on first use

    return MambaCache


def cache_batch(cache) -> int:
    """The number of rows (sequences) of a cache."""
    return int(np.shape(cache.ssm_states[0])[0])


def save_cache(path: str, cache, metadata: Optional[dict] = None) -> None:
    """Writes a `MambaCache` to a safetensors file: tensors conv_states.<layer> and ssm_states.<layer>
    in their dtypes, and `metadata` (a JSON-serialisable dict, e.g. the tokens it holds or the model
    name) stored beside the format tag."""
    from safetensors.numpy import save_file

    tensors = {}
    for name in ("conv_states", "ssm_states"):
        for i, a in enumerate(getattr(cache, name)):
            tensors[f"{name}.{i}"] = np.ascontiguousarray(np.asarray(jax.device_get(a)))
    meta = {"format": _FORMAT, "n_layer": str(len(cache.ssm_states))}
    if metadata is not None:
        meta["user"] = json.dumps(metadata)
    save_file(tensors, path, metadata=meta)


def load_cache(path: str, *, with_metadata: bool = False):
    """Reads a cache written by `save_cache` (as jax arrays on the default device); with_metadata:
    (cache, the metadata dict given to save_cache or None)."""
    from safetensors import safe_open

    with safe_open(path, framework="numpy") as f:
        meta = f.metadata() or {}
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a mamba_jax cache (format tag {meta.get('format')!r}, "
                             f"expected {_FORMAT!r})")
        n = int(meta["n_layer"])
        names = set(f.keys())
        want = {f"{k}.{i}" for k in ("conv_states", "ssm_states") for i in range(n)}
        if names != want:
            raise ValueError(f"{path}: tensors {sorted(names ^ want)} missing or unexpected for {n} layers")
        cache = _cache_cls()(conv_states=tuple(jnp.asarray(f.get_tensor(f"conv_states.{i}")) for i in range(n)),
                             ssm_states=tuple(jnp.asarray(f.get_tensor(f"ssm_states.{i}")) for i in range(n)))
    user = json.loads(meta["user"]) if "user" in meta else None
    return (cache, user) if with_metadata else cache


def take_rows(cache, rows):
    """The cache of the given rows (a list or int array of row indices; repeats allowed), in that order."""
    idx = jnp.asarray(np.asarray(rows, np.int32))
    return jax.tree.map(lambda a: jnp.take(a, idx, axis=0), cache)


def fork(cache, n: int):
    """Each row repeated n times (rows r * n ... r * n + n - 1 are copies of row r): n continuations
    of each prefix, which was prefilled once."""
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"fork: n must be an int >= 1, got {n!r}")
    return jax.tree.map(lambda a: jnp.repeat(a, int(n), axis=0), cache)


def concat_caches(caches: Sequence):
    """Stacks the rows of several caches of one model (in order) into one cache."""
    return jax.tree.map(lambda *a: jnp.concatenate(a, axis=0), *caches)


class Session:
    """One conversation with a model: the cache after everything so far, so that each turn prefills
    only its new tokens.

        s = Session(model)
        reply = s.generate(turn1_ids, max_new_tokens=64, eos_token_id=0)
        reply = s.generate(turn2_ids, max_new_tokens=64, eos_token_id=0)   # turn 1 is not recomputed
        s.save("chat.safetensors"); s = Session.load(model, "chat.safetensors")

    The cache holds every token of `self.tokens` except the last one (`self.pending`: the last
    generated or appended token), which is fed first on the next turn. Sampling arguments are those of `mamba_jax.generate`.
    """

    def __init__(self, model, cache=None, tokens: Sequence[int] = (), pending: Sequence[int] = ()):
        from .generate import Generator

        self.model = model
        self.cache = cache
        self.tokens = list(tokens)  # every token of the conversation so far
        self.pending = list(pending)  # tokens in `tokens` that the cache does not hold yet
        self._gen = Generator(model)
        self._prefill = None

    def append(self, tokens: Sequence[int]) -> None:
        """Feeds tokens (a user turn, a document) into the cache without generating. The last one stays
        pending: the next `generate` feeds it and samples from its logits."""
        feed = self.pending + [int(t) for t in tokens]
        if len(feed) > 1:
            if self._prefill is None:
                from flax import nnx

                self._prefill = nnx.jit(lambda m, ids, cache: m.prefill(ids, cache=cache, last_only=True)[1])
            self.cache = self._prefill(self.model, jnp.asarray([feed[:-1]], jnp.int32), self.cache)
        self.tokens.extend(int(t) for t in tokens)
        self.pending = feed[-1:]

    def generate(self, tokens: Sequence[int], max_new_tokens: int, **sampling) -> list[int]:
        """Feeds `tokens` (may be empty when a token is pending), then generates; returns the new tokens."""
        feed = self.pending + [int(t) for t in tokens]
        if not feed:
            raise ValueError("Session.generate: nothing to continue from (give tokens)")
        out, cache = self._gen.generate([feed], max_new_tokens, cache=self.cache, return_cache=True, **sampling)
        self.cache = cache
        self.tokens.extend(int(t) for t in tokens)
        self.tokens.extend(out[0])
        self.pending = out[0][-1:]
        return out[0]

    def fork(self, n: int) -> list["Session"]:
        """n independent sessions continuing from this one (copies of its cache; nothing recomputed)."""
        return [Session(self.model, self.cache, self.tokens, self.pending) for _ in range(n)]

    def save(self, path: str) -> None:
        """Snapshot: the cache and the tokens (`Session.load` restores it)."""
        if self.cache is None:
            raise ValueError("Session.save: the session has no state yet")
        save_cache(path, self.cache, {"tokens": self.tokens, "pending": self.pending})

    @classmethod
    def load(cls, model, path: str) -> "Session":
        cache, meta = load_cache(path, with_metadata=True)
        meta = meta or {}
        return cls(model, cache, meta.get("tokens", ()), meta.get("pending", ()))
