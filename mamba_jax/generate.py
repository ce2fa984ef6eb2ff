"""jit-compiled text generation for `MambaLM`: one compiled prefill, one compiled on-device decode loop.

    tokens = generate(model, [[1, 2, 3], [4, 5]], max_new_tokens=32, temperature=0.8, top_p=0.9, seed=1)

How it runs:
  * Ragged prompts are LEFT-padded to a bucketed length (the next power of two, at least 8) with a
    mask, so the model's prefill gives every row exactly the state of its unpadded prompt, and a new
    prompt length usually hits an already compiled function. The batch is bucketed the same way
    (extra rows copy row 0 and are marked finished).
  * The prefill (one jitted call) returns the first sampled token and the decode cache.
  * The decode loop is one jitted `lax.while_loop`: per iteration one `model.step` (layers unrolled
    inside it), one sample, one write into an on-device token buffer. The cache is donated, so the
    step kernels update it in place; the host does not touch it between tokens. The loop leaves as
    soon as every row has produced `eos_token_id`.
  * Streaming runs the same loop in chunks of `chunk_size` steps; the host hands each chunk's tokens
    to the caller between chunks. The noise of a step depends only on (seed, step), so a streamed
    run returns exactly the tokens of the unstreamed one.
  * Compiled executables are cached per (model graph, argument shapes and dtypes, sampling mode):
    temperature, top_p and the seed are runtime values and do not recompile.

Tokens are drawn by `mamba_jax.sampling` (greedy, temperature, top-k, top-p), the same code on every
backend; the seed is an int32, so no uint32 array reaches a compiled function (Metal has none).
flax is imported on first use, so that `import mamba_jax` stays light.

Shape legend: b batch (bucketed), l prompt length (bucketed), V logits width (padded vocab), k chunk.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import jax
import jax.numpy as jnp
from jax import lax

from . import sampling

f32 = jnp.float32
i32 = jnp.int32

_MIN_PROMPT_BUCKET = 8
_MAX_COMPILED = 64  # compiled executables kept (LRU)
_COMPILED: "collections.OrderedDict[tuple, object]" = collections.OrderedDict()


@dataclasses.dataclass(frozen=True)
class _Mode:
    """The static (compile-time) configuration of one generation call."""

    sampling: sampling.SamplingMode
    eos: Optional[int]
    # Rows that have produced EOS keep their state (the cache is returned to continue from): one
    # select per state array per step, so only when asked.
    freeze_finished: bool = False


def _bucket(n: int, minimum: int = 1) -> int:
    return max(minimum, 1 << max(0, int(n) - 1).bit_length())


def _as_prompts(prompts, vocab_size: int) -> list[np.ndarray]:
    if isinstance(prompts, np.ndarray) or isinstance(prompts, jax.Array):
        arr = np.asarray(prompts)
        if arr.ndim != 2:
            raise ValueError(f"prompts as an array must be [batch, seqlen], got shape {arr.shape}")
        prompts = list(arr)
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
        raise TypeError(f"prompts must be a list of token-id lists, got {type(prompts).__name__}")
    if len(prompts) == 0:
        raise ValueError("prompts is empty: give at least one prompt (a list of token ids)")
    out = []
    for i, p in enumerate(prompts):
        if isinstance(p, (int, np.integer)):
            raise TypeError("prompts must be a list of token-id lists (one list per prompt), "
                            f"but prompts[{i}] is the int {p}; wrap a single prompt as [prompt]")
        a = np.asarray(p)
        if a.size == 0:
            raise ValueError(f"prompt {i} is empty: every prompt needs at least one token")
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"prompt {i} must be a flat list of integer token ids, got dtype {a.dtype} "
                            f"and shape {a.shape}")
        bad = np.nonzero((a < 0) | (a >= vocab_size))[0]
        if bad.size:
            j = int(bad[0])
            raise ValueError(f"prompt {i} has token id {int(a[j])} at position {j}, outside the "
                             f"vocabulary [0, {vocab_size})")
        out.append(a.astype(np.int32))
    return out


def _check_args(max_new_tokens, temperature, top_k, top_p, eos_token_id, vocab_size, chunk_size):
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    smode, temperature, top_p = sampling.sampling_mode(temperature, top_k, top_p, vocab_size)
    if eos_token_id is not None and not (0 <= int(eos_token_id) < vocab_size):
        raise ValueError(f"eos_token_id {eos_token_id!r} is outside the vocabulary [0, {vocab_size})")
    if chunk_size is not None and (not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1):
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    mode = _Mode(sampling=smode, eos=None if eos_token_id is None else int(eos_token_id))
    return mode, temperature, top_p


@dataclasses.dataclass
class GenerationStats:
    """Timings of the last call: compile (lower + compile, both functions), prefill and decode wall
    times on the device (each ends with a device sync), and counts."""

    batch: int = 0
    prompt_bucket: int = 0
    compile_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    decode_steps: int = 0  # model.step calls (per row)
    new_tokens: list = dataclasses.field(default_factory=list)  # per row, EOS included

    @property
    def decode_tokens_per_s(self) -> float:
        """Decode steps per second per row (= tokens/s at batch 1)."""
        return self.decode_steps / self.decode_s if self.decode_s > 0 else float("nan")


class Generator:
    """Generation for one model: splits it once into (graphdef, state) and runs jitted pure
    functions of the state. Build a new Generator (or call `refresh`) after changing the weights
    or `model.implementation`.
    """

    def __init__(self, model):
        from flax import nnx

        if not isinstance(model, nnx.Module):
            raise TypeError(f"generate needs a MambaLM, got {type(model).__name__}")
        self.vocab_size = int(model.config.vocab_size)
        # A model sharded over a data axis (mamba_jax.sharding.ShardedLM) needs a batch it divides.
        self.batch_multiple = int(getattr(model, "batch_multiple", 1))
        self.last_stats = GenerationStats()
        self.last_cache = None
        self.refresh(model)

    def refresh(self, model):
        """Re-reads the model's weights and settings."""
        from flax import nnx

        self.graphdef, self.state = nnx.split(model)
        try:
            hash(self.graphdef)
            self._gkey = self.graphdef
        except TypeError:  # a graph with unhashable static attributes: cache per Generator instead
            self._gkey = ("instance", id(self))

    def _prefill_fn(self, mode: _Mode):
        from flax import nnx

        graphdef = self.graphdef

        def prefill(state, ids, mask, rows_done, temperature, top_p, seed, cache):
            model = nnx.merge(graphdef, state)
            logits, cache = model.prefill(ids, mask, cache=cache, last_only=True)
            tok = sampling.sample(logits.astype(f32), mode.sampling, seed, jnp.zeros((), i32), temperature, top_p)
            done = rows_done if mode.eos is None else rows_done | (tok == mode.eos)
            return tok, cache, done

        return prefill

    def _decode_fn(self, mode: _Mode, chunk: int):
        from flax import nnx

        graphdef = self.graphdef
        fill = 0 if mode.eos is None else mode.eos

        def decode(state, cache, tok, done, start, n_steps, temperature, top_p, seed):
            model = nnx.merge(graphdef, state)
            buf = jnp.full((tok.shape[0], chunk), fill, i32)
            consts = model.step_constants()  # derived from the weights once per loop, not per step

            def cond(c):
                j, _, done, _, _ = c
                return (j < n_steps) & jnp.logical_not(jnp.all(done))

            def body(c):
                j, tok, done, cache, buf = c
                logits, new_cache = model.step(tok, cache, consts)
                if mode.freeze_finished:  # a finished row's last token (its EOS) is not fed
                    keep = lambda new, old: jnp.where(done.reshape((-1,) + (1,) * (new.ndim - 1)), old, new)
                    new_cache = jax.tree.map(keep, new_cache, cache)
                cache = new_cache
                new = sampling.sample(logits.astype(f32), mode.sampling, seed, start + j, temperature, top_p)
                new = jnp.where(done, fill, new).astype(i32)
                buf = lax.dynamic_update_slice(buf, new[:, None], (jnp.zeros((), i32), j))
                if mode.eos is not None:
                    done = done | (new == mode.eos)
                return j + 1, new, done, cache, buf

            j, tok, done, cache, buf = lax.while_loop(cond, body, (jnp.zeros((), i32), tok, done, cache, buf))
            return cache, tok, done, buf, j

        return decode

    def _compiled(self, name, make_fn, static, args, donate=()):
        leaves, treedef = jax.tree.flatten(args)
        key = (name, self._gkey, static, treedef,
               tuple((tuple(x.shape), str(x.dtype)) for x in leaves))
        exe = _COMPILED.get(key)
        if exe is not None:
            _COMPILED.move_to_end(key)
            return exe, 0.0
        t0 = time.perf_counter()
        exe = jax.jit(make_fn(), donate_argnums=donate).lower(*args).compile()
        dt = time.perf_counter() - t0
        _COMPILED[key] = exe
        while len(_COMPILED) > _MAX_COMPILED:
            _COMPILED.popitem(last=False)
        return exe, dt

    def stream(self, prompts, max_new_tokens: int, temperature: float = 0.0, top_k: Optional[int] = None,
               top_p: Optional[float] = None, eos_token_id: Optional[int] = None, seed: int = 0,
               chunk_size: Optional[int] = 16, cache=None, return_cache: bool = False) -> Iterator[list[list[int]]]:
        """Yields, after the prefill and after every chunk of decode steps, the new tokens of each
        prompt (a list per prompt; empty once it has produced EOS). Arguments as in `generate`;
        chunk_size None decodes everything in one chunk. All checks run before anything compiles.
        With return_cache, `self.last_cache` holds the cache after the run (see `generate`)."""
        rows = _as_prompts(prompts, self.vocab_size)
        mode, temperature, top_p = _check_args(max_new_tokens, temperature, top_k, top_p, eos_token_id,
                                               self.vocab_size, chunk_size)
        if cache is not None:
            n_cache = int(np.shape(jax.tree.leaves(cache)[0])[0])
            if n_cache != len(rows):
                raise ValueError(f"cache has {n_cache} rows but {len(rows)} prompts were given: one cache row "
                                 "per prompt (mamba_jax.state.fork / take_rows make one)")
        mode = dataclasses.replace(mode, freeze_finished=bool(return_cache) and mode.eos is not None)
        self.last_cache = None
        return self._run(rows, int(max_new_tokens), mode, temperature, top_p, int(seed), chunk_size, cache,
                         bool(return_cache))

    def generate(self, prompts, max_new_tokens: int, temperature: float = 0.0, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, eos_token_id: Optional[int] = None, seed: int = 0,
                 stream: Optional[Callable[[list[list[int]]], None]] = None,
                 chunk_size: Optional[int] = None, cache=None, return_cache: bool = False):
        """See the module-level `generate`."""
        if stream is not None and chunk_size is None:
            chunk_size = 16
        out = None
        it = self.stream(prompts, max_new_tokens, temperature, top_k, top_p, eos_token_id, seed, chunk_size,
                         cache, return_cache)
        for chunk in it:
            if out is None:
                out = [[] for _ in chunk]
            for row, new in zip(out, chunk):
                row.extend(new)
            if stream is not None:
                stream(chunk)
        return (out, self.last_cache) if return_cache else out

    def _run(self, rows, max_new, mode, temperature, top_p, seed, chunk_size, cache=None, return_cache=False):
        n = len(rows)
        b = -(-_bucket(n) // self.batch_multiple) * self.batch_multiple
        l = _bucket(max(len(r) for r in rows), _MIN_PROMPT_BUCKET)
        ids = np.zeros((b, l), np.int32)
        mask = np.zeros((b, l), bool)
        for i in range(b):
            r = rows[i] if i < n else rows[0]
            ids[i, l - len(r):] = r
            mask[i, l - len(r):] = True
        rows_done = np.arange(b) >= n
        stats = GenerationStats(batch=n, prompt_bucket=l, new_tokens=[0] * n)
        self.last_stats = stats

        temperature_a = jnp.asarray(max(temperature, 1e-6), f32)
        top_p_a = jnp.asarray(top_p, f32)
        seed_a = jnp.asarray(int(seed) % (1 << 31), i32)  # any int seed -> int32 (no uint32 key arrays)
        if cache is not None:  # bucket rows copy row 0's state, as their prompts copy row 0
            cache = jax.tree.map(lambda a: jnp.take(a, jnp.asarray([i if i < n else 0 for i in range(b)]), axis=0),
                                 cache)
        # No padding, no mask: the mixers then skip the masked path's selects over the conv input and dt
        # (and, in Mamba-2, its float32 dt pass).
        args = (self.state, jnp.asarray(ids), None if mask.all() else jnp.asarray(mask), jnp.asarray(rows_done),
                temperature_a, top_p_a, seed_a, cache)
        prefill, c_s = self._compiled("prefill", lambda: self._prefill_fn(mode), mode, args)
        stats.compile_s += c_s
        t0 = time.perf_counter()
        tok, cache, done = prefill(*args)
        first, done_h = jax.device_get((tok, done))
        stats.prefill_s = time.perf_counter() - t0

        finished = [False] * n

        def deliver(cols: np.ndarray) -> list[list[int]]:
            """cols [b, c] -> each real row's new tokens up to and including its first EOS."""
            out = []
            for i in range(n):
                new = []
                if not finished[i]:
                    for t in cols[i].tolist():
                        new.append(int(t))
                        if mode.eos is not None and t == mode.eos:
                            finished[i] = True
                            break
                stats.new_tokens[i] += len(new)
                out.append(new)
            return out

        yield deliver(np.asarray(first)[:, None])

        remaining, step = max_new - 1, 1
        while remaining > 0 and not bool(np.all(done_h)):
            chunk = _bucket(remaining) if chunk_size is None else int(chunk_size)
            n_steps = min(chunk, remaining)
            dargs = (self.state, cache, tok, done, jnp.asarray(step, i32), jnp.asarray(n_steps, i32),
                     temperature_a, top_p_a, seed_a)
            decode, c_s = self._compiled("decode", lambda: self._decode_fn(mode, chunk), (mode, chunk),
                                         dargs, donate=(1,))
            stats.compile_s += c_s
            t0 = time.perf_counter()
            cache, tok, done, buf, count = decode(*dargs)
            buf_h, count_h, done_h = jax.device_get((buf, count, done))
            stats.decode_s += time.perf_counter() - t0
            count_h = int(count_h)
            stats.decode_steps += count_h
            yield deliver(np.asarray(buf_h)[:, :count_h])
            step += count_h
            remaining -= count_h
            if count_h < n_steps:  # the loop left early: every row has produced EOS
                break
        if return_cache:
            self.last_cache = jax.tree.map(lambda a: a[:n], cache)


def generate(model, prompts, max_new_tokens: int, temperature: float = 0.0, top_k: Optional[int] = None,
             top_p: Optional[float] = None, eos_token_id: Optional[int] = None, seed: int = 0,
             stream: Optional[Callable[[list[list[int]]], None]] = None,
             chunk_size: Optional[int] = None, cache=None, return_cache: bool = False):
    """Generates continuations of a batch of prompts with a `MambaLM`.

    Args:
      model: a `mamba_jax.nn.MambaLM` (any dtype / implementation; read afresh on every call).
      prompts: a list of prompts, each a non-empty list of token ids in [0, vocab_size); lengths may
        differ (a [batch, seqlen] integer array is taken as equal-length prompts).
      max_new_tokens: tokens to generate per prompt (>= 1), EOS included.
      temperature: 0 = greedy (top_k / top_p ignored); > 0 divides the logits before sampling.
      top_k: keep only the k highest logits (ties at the k-th kept).
      top_p: nucleus sampling, in (0, 1]: keep the smallest set of most likely tokens holding top_p.
      eos_token_id: a prompt stops after producing it (included in its output); the decode loop
        stops when every prompt has.
      seed: the random stream; the same seed, prompts and settings give the same tokens.
      stream: optional callback, called after the prefill and after every decode chunk with the new
        tokens of each prompt (a list of lists; empty for prompts already finished).
      chunk_size: decode steps per compiled loop call when streaming (default 16 with a callback;
        without one the whole generation is one loop call).
      cache: optional `MambaCache` with one row per prompt: each prompt continues that row's sequence
        (a previous call's returned cache, a loaded snapshot, a fork of a shared prefix).
      return_cache: also return the cache after the run: each row's state after its prompt and every
        generated token but the last one (that token, the row's EOS when it stopped on one, is the
        first thing to feed when the row continues; `mamba_jax.state.Session` does this).

    Returns:
      A list (one per prompt) of generated token-id lists (no prompt tokens); with return_cache,
      (that list, MambaCache).

    Raises:
      ValueError / TypeError before anything compiles, for an empty prompt list or prompt, token ids
      outside the vocabulary, max_new_tokens < 1, top_p outside (0, 1], a negative temperature,
      top_k < 1, or an eos_token_id outside the vocabulary.
    """
    return Generator(model).generate(prompts, max_new_tokens, temperature=temperature, top_k=top_k,
                                     top_p=top_p, eos_token_id=eos_token_id, seed=seed, stream=stream,
                                     chunk_size=chunk_size, cache=cache, return_cache=return_cache)

