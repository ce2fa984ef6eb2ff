"""Token sampling: greedy, temperature, top-k and top-p, one implementation for every backend.

    mode, temperature, top_p = sampling_mode(temperature=0.8, top_k=50, top_p=0.9, vocab_size=V)
    ids = sample(logits, mode, seed, step, temperature, top_p)        # inside jit: [b, V] -> [b]

Everything here also compiles on Apple's jax-metal (tests/metal_allowlist.py lists what may appear):
float32, int32 and bool only, single-operand reductions, no sort, no cumsum, no bitcasts, no integer
shifts. So:
  argmax        max, then the smallest index holding it (a min over where(x == max, iota, n)); the
                variadic reduce that `jnp.argmax` lowers to does not compile there.
  noise         Gumbel noise from a counter-based hash in int32 arithmetic, a function of (seed, step,
                element index); `jax.random`'s threefry works on uint32, which Metal lacks.
  top-k, top-p  thresholds found by bisection on the value instead of a sort; ties at the threshold
                are kept.

Shape legend: b batch, V logits width (columns at or beyond the vocabulary are padding, never sampled).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import jax.numpy as jnp
from jax import lax

f32 = jnp.float32
i32 = jnp.int32


def argmax(x, axis: int = -1):
    """Index of the first maximum of `x` along `axis` (int32), equal to `jnp.argmax`.

    As in `jnp.argmax`, a NaN counts as the maximum: the first NaN's index is returned.

    Args:
      x: float (any float dtype) or int32 array.
      axis: the axis to reduce.

    Returns:
      int32 array of x's shape without `axis`.
    """
    x = jnp.asarray(x)
    axis = axis % x.ndim
    n = x.shape[axis]
    iota = lax.broadcasted_iota(i32, x.shape, axis)
    m = jnp.max(x, axis=axis, keepdims=True)
    first_max = jnp.min(jnp.where(x == m, iota, n), axis=axis)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        return first_max
    first_nan = jnp.min(jnp.where(x != x, iota, n), axis=axis)
    # A row with a NaN has a NaN max, so no x == m: first_max is n there and first_nan is the answer.
    return jnp.where(first_nan < n, first_nan, jnp.minimum(first_max, n - 1))


# A counter-based hash in 31-bit integer arithmetic, without bitwise ops (jax-metal's support for them
# is not documented): values live in [0, 2^31); products wrap modulo 2^32 in int32 and are brought back
# modulo 2^31 by `_wrap31`; "h >> k" is h // 2^k; a rotation is two of those added. Each round
# multiplies by an odd constant (spreads low bits up), adds the square of the high 15 bits (pushes
# high bits down, nonlinearly) and rotates by 13. Not cryptographic; tests/test_sampling.py checks
# uniformity and the absence of lag-1 and cross-stream correlation.
_M31 = 2 ** 31
_ROUND_MULTIPLIERS = (0x2C1B3C6D, 0x297A2D39, 0x6B3C5A65, 0x5BD1E995)  # odd, < 2^31
_STREAM_MULTIPLIER = 0x3C6EF371


def _wrap31(h):
    """h (int32, read as a 32-bit pattern) -> h mod 2^31 in [0, 2^31).

    For h < 0, h + 2^31 is written h - INT32_MIN, which stays in int32 range.
    """
    return jnp.where(h < 0, h - i32(-_M31), h)


def _mix(h):
    """Scrambles [0, 2^31) (int32 in, int32 out)."""
    for mult in _ROUND_MULTIPLIERS:
        h = _wrap31(h * i32(mult))
        hi = lax.div(h, i32(1 << 16))  # < 2^15, so hi * hi fits
        h = _wrap31(h + hi * hi)
        h = _wrap31(h * i32(1 << 13)) + lax.div(h, i32(1 << 18))  # rotate left by 13 within 31 bits
    return h


def _hash(seed, counter, shape):
    """int32 in [0, 2^31) for every element of `shape`, from (seed, counter, flat element index)."""
    idx = jnp.zeros(shape, i32)
    stride = 1
    for ax in range(len(shape) - 1, -1, -1):
        idx = idx + lax.broadcasted_iota(i32, shape, ax) * i32(stride % _M31)
        stride *= shape[ax]
    seed = _wrap31(jnp.asarray(seed, i32))
    counter = jnp.asarray(counter, i32)
    key = _mix(_wrap31(_mix(seed) + counter * i32(_STREAM_MULTIPLIER)))
    return _mix(_wrap31(idx + key))


def uniform(seed, counter, shape):
    """Uniform float32 in [0, 1) of `shape` from int32 `seed` and `counter` (e.g. the decode step).

    The same (seed, counter, shape) always gives the same numbers; different counters give
    independent-looking streams. 24 random bits per number (the float32 mantissa).
    """
    h = _hash(seed, counter, tuple(shape))
    return lax.div(h, i32(1 << 7)).astype(f32) * f32(1.0 / (1 << 24))


def gumbel(seed, counter, shape):
    """Standard Gumbel noise -log(-log(U)) of `shape` (float32); argmax(logits + it) samples softmax(logits)."""
    u = uniform(seed, counter, shape)
    tiny = f32(1.0 / (1 << 25))  # keeps both logs finite: U in [2^-25, 1 - 2^-25]
    u = jnp.clip(u, tiny, 1.0 - tiny)
    return -jnp.log(-jnp.log(u))


def _bisect_threshold(lo, hi, ok_at, iterations):
    """The largest t in [lo, hi] (to float precision) with ok_at(t), for ok_at true at lo and
    monotone (true, then false as t grows). lo, hi [...] float32 and finite. A loop, so the program
    stays small whatever `iterations` is."""

    def body(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) * 0.5
        ok = ok_at(mid)
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

    # hi itself may satisfy ok_at (ties at the maximum); test it once so the loop's hi is "not ok".
    top_ok = ok_at(hi)
    lo, _ = lax.fori_loop(0, iterations, body, (lo, hi))
    return jnp.where(top_ok, hi, lo)


def top_k_mask(logits, k: int, *, iterations: int = 64):
    """True where a logit is >= the k-th largest of its row (ties at the k-th kept).

    The threshold is the largest t with count(x >= t) >= k, found by bisection in [min, max] of the
    row's finite values and then snapped to min{x : x >= t}. After `iterations` halvings the interval
    is narrower than the float spacing of any value farther than (max - min) * 2^-40 from zero, so
    the threshold is exactly the k-th largest value. Rows with k or more +inf keep those; rows with
    fewer than k values above -inf keep everything but NaNs; NaNs are never kept.

    Args:
      logits: [..., V] float.
      k: >= 1 (static).

    Returns:
      [..., V] bool.
    """
    x = jnp.asarray(logits, f32)
    if k >= x.shape[-1]:
        return x == x
    finite = jnp.isfinite(x)
    lo = jnp.min(jnp.where(finite, x, jnp.inf), axis=-1)
    hi = jnp.max(jnp.where(finite, x, -jnp.inf), axis=-1)
    any_finite = lo <= hi
    lo = jnp.where(any_finite, lo, 0.0)
    hi = jnp.where(any_finite, hi, 0.0)

    def count_ge(t):
        return jnp.sum((x >= t[..., None]).astype(i32), axis=-1)

    keep_all = count_ge(jnp.where(any_finite, lo, jnp.inf)) < k  # the k-th largest is -inf
    t = _bisect_threshold(lo, hi, lambda t: count_ge(t) >= k, iterations)
    kth = jnp.min(jnp.where(x >= t[..., None], x, jnp.inf), axis=-1)
    kth = jnp.where(count_ge(jnp.full_like(kth, jnp.inf)) >= k, jnp.inf, kth)  # the bisection sees finite values only
    return (x >= kth[..., None]) | (keep_all[..., None] & (x == x))


def top_p_mask(logits, top_p, *, iterations: int = 64):
    """True on the smallest set of most likely tokens whose probability sum reaches `top_p`.

    With p = softmax(logits), the threshold is the largest probability t with sum(p[p >= t]) >=
    top_p (bisection on t in [0, max p], snapped to an actual probability); tokens with p >= t are
    kept, ties at the edge too.

    Args:
      logits: [..., V] float.
      top_p: a float or a float32 array broadcastable to logits[..., 0], in (0, 1].

    Returns:
      [..., V] bool.
    """
    logits = jnp.asarray(logits, f32)
    m = jnp.max(logits, axis=-1, keepdims=True)
    e = jnp.exp(logits - jnp.where(jnp.isfinite(m), m, 0.0))
    p = e / jnp.sum(e, axis=-1, keepdims=True)
    top_p = jnp.asarray(top_p, f32)

    def mass_ge(t):
        return jnp.sum(jnp.where(p >= t[..., None], p, 0.0), axis=-1) >= top_p

    lo = jnp.zeros(p.shape[:-1], f32)
    hi = jnp.max(p, axis=-1)
    t = _bisect_threshold(lo, hi, mass_ge, iterations)
    t = jnp.min(jnp.where(p >= t[..., None], p, jnp.inf), axis=-1)
    return p >= t[..., None]


@dataclasses.dataclass(frozen=True)
class SamplingMode:
    """The static (compile-time) part of a sampling configuration; temperature, top_p and the seed
    are runtime values."""

    greedy: bool
    top_k: Optional[int]  # None: no top-k filter
    use_top_p: bool
    vocab_size: int  # the real vocabulary: logits columns at or beyond it are never sampled


def sampling_mode(temperature: float, top_k: Optional[int], top_p: Optional[float],
                  vocab_size: int) -> tuple[SamplingMode, float, float]:
    """Checks the sampling settings and returns (mode, temperature, top_p) for `sample`.

    temperature 0 means greedy (top_k and top_p are then ignored); top_k >= vocab_size and top_p
    None or 1 filter nothing. Raises ValueError for a negative or non-finite temperature, top_p
    outside (0, 1] or top_k < 1.
    """
    temperature = float(temperature)
    if not np.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if top_p is not None:
        top_p = float(top_p)
        if not (0.0 < top_p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"top_k must be an int >= 1 or None, got {top_k!r}")
    greedy = temperature == 0.0
    mode = SamplingMode(
        greedy=greedy,
        top_k=None if greedy or top_k is None or top_k >= vocab_size else int(top_k),
        use_top_p=not greedy and top_p is not None and top_p < 1.0,
        vocab_size=int(vocab_size),
    )
    return mode, temperature, (1.0 if top_p is None else top_p)


def sample(logits, mode: SamplingMode, seed, step, temperature, top_p):
    """Draws one token per row.

    Args:
      logits: [b, V] float32.
      mode: from `sampling_mode`.
      seed, step: int32 scalars; the noise depends only on them and the shape, so a run is
        reproducible and its tokens do not depend on how the decode loop is chunked.
      temperature: float32 scalar > 0 (unused when greedy).
      top_p: float32 scalar in (0, 1] (used when mode.use_top_p).

    Returns:
      [b] int32 token ids, all < mode.vocab_size.
    """
    if mode.vocab_size < logits.shape[-1]:
        col = lax.broadcasted_iota(i32, logits.shape, logits.ndim - 1)
        logits = jnp.where(col < mode.vocab_size, logits, -jnp.inf)
    if mode.greedy:
        return argmax(logits)
    logits = logits / temperature
    if mode.top_k is not None:
        logits = jnp.where(top_k_mask(logits, mode.top_k), logits, -jnp.inf)
    if mode.use_top_p:
        logits = jnp.where(top_p_mask(logits, top_p), logits, -jnp.inf)
    # Gumbel-max: argmax(logits + Gumbel noise) is a draw from softmax(logits).
    return argmax(logits + gumbel(seed, step, logits.shape))
