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
    to the caller between chunks. Random numbers come from fold_in(key(seed), step), so a streamed
    run returns exactly the tokens of the unstreamed one.
  * Compiled executables are cached per (model graph, argument shapes and dtypes, sampling mode):
    temperature, top_p and the seed are runtime values and do not recompile.

Sampling avoids sort and the variadic-reduce argmax (neither compiles on Apple's jax-metal): argmax is
max + where(iota) + min, and the top-k / top-p thresholds are found by a 32-step radix select on the
float bit patterns (exact: the k-th largest logit, and the smallest probability whose
higher-or-equal set still holds `top_p` of the mass). Ties at the threshold are kept. On a Metal
backend, which has no uint32, and for any model running implementation="xla" (the portable path,
selected explicitly), the Gumbel noise and the top-k / top-p masks come from
`mamba_jax.ops.metal_safe` instead (int32 hash noise, float bisection thresholds); the seed is an
int32 everywhere, so no uint32 array ever reaches a compiled function there.

Shape legend: b batch (bucketed), l prompt length (bucketed), V logits width (padded vocab), k chunk.
"""

from __future__ import annotations

import collections
import dataclasses
import inspect
import sys
import time
import types
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import jax
import jax.numpy as jnp
from jax import lax
from flax import nnx

f32 = jnp.float32
i32 = jnp.int32

# The Metal path's helpers: argmax everywhere; noise and top-k/top-p masks on the portable path.
from .ops import metal_safe as _metal_safe

_METAL_BACKENDS = ("metal", "mps")

_MIN_PROMPT_BUCKET = 8
_MAX_COMPILED = 64  # compiled executables kept (LRU)
_COMPILED: "collections.OrderedDict[tuple, object]" = collections.OrderedDict()


# --------------------------------------------------------------------------------------------- sampling
def argmax_last(x):
    """Index of the first maximum along the last axis, without a variadic reduce. x [..., V] -> [...] int32."""
    return _metal_safe.metal_safe_argmax(x, axis=-1).astype(i32)


def _ordered_key(x):
    """float32 -> uint32 whose unsigned order is the float order (negatives flipped)."""
    b = lax.bitcast_convert_type(x.astype(f32), jnp.uint32)
    return jnp.where((b >> 31) == 1, ~b, b | jnp.uint32(0x80000000))


def _radix_select(keys, predicate):
    """Largest uint32 t (per row) with predicate(keys >= t) true, for a predicate that holds at t = 0
    and, once false, stays false for larger t. keys [b, V] uint32 -> t [b] uint32 (32 passes)."""
    t = jnp.zeros(keys.shape[:-1], jnp.uint32)
    for bit in range(31, -1, -1):
        cand = t | jnp.uint32(1 << bit)
        t = jnp.where(predicate(keys >= cand[..., None]), cand, t)
    return t


def _top_k_mask(logits, k: int):
    """True where a logit is >= the k-th largest of its row. logits [b, V] f32."""
    keys = _ordered_key(logits)
    t = _radix_select(keys, lambda keep: jnp.sum(keep.astype(i32), axis=-1) >= k)
    return keys >= t[..., None]


def _top_p_mask(logits, top_p):
    """True on the smallest set of highest-probability tokens holding at least `top_p` of the mass
    (ties at the edge kept; all tokens if rounding keeps the total under top_p). logits [b, V] f32."""
    probs = jax.nn.softmax(logits, axis=-1)
    keys = lax.bitcast_convert_type(probs, jnp.uint32)  # probs >= 0: bit order = value order
    t = _radix_select(keys, lambda keep: jnp.sum(jnp.where(keep, probs, 0.0), axis=-1) >= top_p)
    return keys >= t[..., None]


@dataclasses.dataclass(frozen=True)
class _Mode:
    """The static (compile-time) part of the sampling configuration."""

    greedy: bool
    top_k: Optional[int]
    use_top_p: bool
    vocab_size: int  # real vocabulary; logits columns beyond it (padding) are never sampled
    eos: Optional[int]
    metal: bool = False  # use the Metal-safe noise and masks (no uint32)


def _sample(logits, seed, step, temperature, top_p, mode: _Mode):
    """logits [b, V] f32 -> token ids [b] int32. seed, step: int32 scalars (the noise of a step
    depends only on them and the shape)."""
    V = logits.shape[-1]
    if mode.vocab_size < V:
        col = lax.broadcasted_iota(i32, logits.shape, 1)
        logits = jnp.where(col < mode.vocab_size, logits, -jnp.inf)
    if mode.greedy:
        return argmax_last(logits)
    logits = logits / temperature
    if mode.top_k is not None:
        keep = (_metal_safe.metal_safe_top_k_mask(logits, mode.top_k) if mode.metal
                else _top_k_mask(logits, mode.top_k))
        logits = jnp.where(keep, logits, -jnp.inf)
    if mode.use_top_p:
        keep = _metal_safe.metal_safe_top_p_mask(logits, top_p) if mode.metal else _top_p_mask(logits, top_p)
        logits = jnp.where(keep, logits, -jnp.inf)
    # Gumbel-max: argmax(logits + Gumbel noise) is a draw from softmax(logits).
    if mode.metal:
        noise = _metal_safe.metal_safe_gumbel(seed, step, logits.shape)
    else:
        noise = jax.random.gumbel(jax.random.fold_in(jax.random.key(seed), step), logits.shape, f32)
    return argmax_last(logits + noise)


# --------------------------------------------------------------------------------------------- checks
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


def _check_sampling(max_new_tokens, temperature, top_k, top_p, eos_token_id, vocab_size, chunk_size,
                    metal=False):
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    temperature = float(temperature)
    if not np.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if top_p is not None:
        top_p = float(top_p)
        if not (0.0 < top_p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"top_k must be an int >= 1 or None, got {top_k!r}")
    if eos_token_id is not None and not (0 <= int(eos_token_id) < vocab_size):
        raise ValueError(f"eos_token_id {eos_token_id!r} is outside the vocabulary [0, {vocab_size})")
    if chunk_size is not None and (not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1):
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    greedy = temperature == 0.0
    mode = _Mode(
        greedy=greedy,
        top_k=None if greedy or top_k is None or top_k >= vocab_size else int(top_k),
        use_top_p=not greedy and top_p is not None and top_p < 1.0,
        vocab_size=vocab_size,
        eos=None if eos_token_id is None else int(eos_token_id),
        metal=bool(metal) and not greedy,
    )
    return mode, temperature, (1.0 if top_p is None else top_p)


# --------------------------------------------------------------------------------------------- generator
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
        cfg = getattr(model, "config", None)
        if cfg is None or not hasattr(model, "prefill") or not hasattr(model, "step"):
            raise TypeError("generate needs a MambaLM-like model with .config, .prefill and .step")
        self.vocab_size = int(cfg.vocab_size)
        try:
            self._last_only = "last_only" in inspect.signature(model.prefill).parameters
        except (TypeError, ValueError):
            self._last_only = False
        # Models that can hand the decode loop their per-step constants (computed once per loop).
        self._step_constants = hasattr(model, "step_constants")
        self.last_stats = GenerationStats()
        # The portable path samples with the Metal-safe helpers (int32 noise, no uint32 bit tricks):
        # on a Metal/MPS backend, and wherever the model runs implementation="xla", so that the
        # explicitly selected portable path is portable end to end (settable after construction).
        portable = (jax.default_backend().lower() in _METAL_BACKENDS
                    or getattr(model, "implementation", None) == "xla")
        self.metal_sampling = portable
        self.refresh(model)

    def refresh(self, model):
        """Re-reads the model's weights and settings."""
        self.graphdef, self.state = nnx.split(model)
        try:
            hash(self.graphdef)
            self._gkey = self.graphdef
        except TypeError:  # a graph with unhashable static attributes: cache per Generator instead
            self._gkey = ("instance", id(self))

    # ---------------------------------------------------------------- compiled functions
    def _prefill_fn(self, mode: _Mode):
        graphdef, last_only = self.graphdef, self._last_only

        def prefill(state, ids, mask, rows_done, temperature, top_p, seed):
            model = nnx.merge(graphdef, state)
            if last_only:
                logits, cache = model.prefill(ids, mask, last_only=True)
            else:
                logits, cache = model.prefill(ids, mask)
            if logits.ndim == 3:
                logits = logits[:, -1]
            tok = _sample(logits.astype(f32), seed, jnp.zeros((), i32), temperature, top_p, mode)
            done = rows_done if mode.eos is None else rows_done | (tok == mode.eos)
            return tok, cache, done

        return prefill

    def _decode_fn(self, mode: _Mode, chunk: int):
        graphdef, hoist = self.graphdef, self._step_constants
        fill = 0 if mode.eos is None else mode.eos

        def decode(state, cache, tok, done, start, n_steps, temperature, top_p, seed):
            model = nnx.merge(graphdef, state)
            buf = jnp.full((tok.shape[0], chunk), fill, i32)
            consts = model.step_constants() if hoist else None

            def cond(c):
                j, _, done, _, _ = c
                return (j < n_steps) & jnp.logical_not(jnp.all(done))

            def body(c):
                j, tok, done, cache, buf = c
                logits, cache = model.step(tok, cache, consts) if hoist else model.step(tok, cache)
                new = _sample(logits.astype(f32), seed, start + j, temperature, top_p, mode)
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

    # ---------------------------------------------------------------- public
    def stream(self, prompts, max_new_tokens: int, temperature: float = 0.0, top_k: Optional[int] = None,
               top_p: Optional[float] = None, eos_token_id: Optional[int] = None, seed: int = 0,
               chunk_size: Optional[int] = 16) -> Iterator[list[list[int]]]:
        """Yields, after the prefill and after every chunk of decode steps, the new tokens of each
        prompt (a list per prompt; empty once it has produced EOS). Arguments as in `generate`;
        chunk_size None decodes everything in one chunk. All checks run before anything compiles."""
        rows = _as_prompts(prompts, self.vocab_size)
        mode, temperature, top_p = _check_sampling(max_new_tokens, temperature, top_k, top_p,
                                                   eos_token_id, self.vocab_size, chunk_size, self.metal_sampling)
        return self._run(rows, int(max_new_tokens), mode, temperature, top_p, int(seed), chunk_size)

    def generate(self, prompts, max_new_tokens: int, temperature: float = 0.0, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, eos_token_id: Optional[int] = None, seed: int = 0,
                 stream: Optional[Callable[[list[list[int]]], None]] = None,
                 chunk_size: Optional[int] = None) -> list[list[int]]:
        """See the module-level `generate`."""
        if stream is not None and chunk_size is None:
            chunk_size = 16
        out = None
        it = self.stream(prompts, max_new_tokens, temperature, top_k, top_p, eos_token_id, seed, chunk_size)
        for chunk in it:
            if out is None:
                out = [[] for _ in chunk]
            for row, new in zip(out, chunk):
                row.extend(new)
            if stream is not None:
                stream(chunk)
        return out

    def _run(self, rows, max_new, mode, temperature, top_p, seed, chunk_size):
        n = len(rows)
        b = _bucket(n)
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
        args = (self.state, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(rows_done),
                temperature_a, top_p_a, seed_a)
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


def generate(model, prompts, max_new_tokens: int, temperature: float = 0.0, top_k: Optional[int] = None,
             top_p: Optional[float] = None, eos_token_id: Optional[int] = None, seed: int = 0,
             stream: Optional[Callable[[list[list[int]]], None]] = None,
             chunk_size: Optional[int] = None) -> list[list[int]]:
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

    Returns:
      A list (one per prompt) of generated token-id lists (no prompt tokens).

    Raises:
      ValueError / TypeError before anything compiles, for an empty prompt list or prompt, token ids
      outside the vocabulary, max_new_tokens < 1, top_p outside (0, 1], a negative temperature,
      top_k < 1, or an eos_token_id outside the vocabulary.
    """
    return Generator(model).generate(prompts, max_new_tokens, temperature=temperature, top_k=top_k,
                                     top_p=top_p, eos_token_id=eos_token_id, seed=seed, stream=stream,
                                     chunk_size=chunk_size)


class _CallableModule(types.ModuleType):
    """`mamba_jax.generate` names both this module and the function. Importing the submodule rebinds
    the package attribute to the module, so the module forwards calls to the function: both
    `mamba_jax.generate(model, ...)` and `from mamba_jax.generate import generate` then work."""

    def __call__(self, *args, **kwargs):
        return generate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
