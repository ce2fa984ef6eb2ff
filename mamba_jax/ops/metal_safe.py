"""Metal-safe replacements for a few jax.numpy / jax.random functions used around the model.

Apple's jax-metal rejects variadic reductions (what `jnp.argmax` lowers to), uint32 tensors (what
`jax.random`'s threefry and float-bit tricks use) and integer shifts; see `metal_allowlist.py`.
These functions use only float32 / int32 / bool and single-operand reductions, and compute the same
thing (argmax: exactly `jnp.argmax`; the others as documented).

    metal_safe_argmax(x, axis=-1)            == jnp.argmax(x, axis) (first maximum; first NaN wins)
    metal_safe_uniform(seed, counter, shape) uniform [0, 1) float32 from an int32-arithmetic hash
    metal_safe_gumbel(seed, counter, shape)  standard Gumbel noise from the same stream
    metal_safe_top_k_mask(x, k)              x >= (k-th largest of x) along the last axis
    metal_safe_top_p_mask(logits, top_p)     the smallest most-likely set holding top_p of the mass
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

f32 = jnp.float32
i32 = jnp.int32


def metal_safe_argmax(x, axis: int = -1):
    """Index of the first maximum of `x` along `axis` (int32), like `jnp.argmax`, without a variadic reduce.

    max, then the smallest index where x equals it (a min over where(x == max, iota, size)). As in
    `jnp.argmax`, a NaN counts as the maximum: the first NaN's index is returned.

    Args:
      x: [..., n, ...] float (any float dtype) or int32.
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


# -------------------------------------------------------------------------------------- random numbers
# A counter-based hash in 31-bit integer arithmetic, with no bitwise ops at all (jax-metal's support
# for them is not documented): values live in [0, 2^31); products wrap modulo 2^32 in int32 and are
# brought back modulo 2^31 by `_wrap31`; "h >> k" is h // 2^k; a rotation is two of those added.
# Each round: multiply by an odd constant (spreads low bits up), add the square of the high 15 bits
# (a nonlinear push of high bits down), rotate by 13. Four rounds; measured on 400k draws per stream
# (tests/test_metal_path.py keeps a smaller version): lag-1 and cross-stream correlations < 0.003,
# 16x16 pair chi-square within 1.7 sigma. Not cryptographic; plenty for sampling tokens. (Additions in
# place of the xors of a classic mixer were tried first and left visible correlations.)
_M31 = 2 ** 31
_ROUND_MULTIPLIERS = (0x2C1B3C6D, 0x297A2D39, 0x6B3C5A65, 0x5BD1E995)  # odd, < 2^31
_STREAM_MULTIPLIER = 0x3C6EF371


def _wrap31(h):
    """h (int32, read as a 32-bit pattern) -> h mod 2^31 in [0, 2^31).

    For h < 0, h + 2^31 is written h - INT32_MIN, which stays in int32 range.
    """
    return jnp.where(h < 0, h - i32(-_M31), h)


def _mix(h):
    """One bijection-ish scramble of [0, 2^31) (int32 in, int32 out)."""
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


def metal_safe_uniform(seed, counter, shape):
    """Uniform float32 in [0, 1) of `shape` from int32 `seed` and `counter` (e.g. the decode step).

    The same (seed, counter, shape) always gives the same numbers; different counters give
    independent-looking streams. 24 random bits per number (the float32 mantissa).
    """
    h = _hash(seed, counter, tuple(shape))
    return lax.div(h, i32(1 << 7)).astype(f32) * f32(1.0 / (1 << 24))


def metal_safe_gumbel(seed, counter, shape):
    """Standard Gumbel noise -log(-log(U)) of `shape` (float32); argmax(logits + it) samples softmax(logits)."""
    u = metal_safe_uniform(seed, counter, shape)
    tiny = f32(1.0 / (1 << 25))  # keeps both logs finite: U in [2^-25, 1 - 2^-25]
    u = jnp.clip(u, tiny, 1.0 - tiny)
    return -jnp.log(-jnp.log(u))


def metal_safe_top_k_mask(x, k: int, *, iterations: int = 64):
    """True where x >= the k-th largest value along the last axis (ties at the k-th kept).

    Bisection on the value: the largest t with count(x >= t) >= k, searched in [min, max] of the
    finite values, then snapped to min{x_i : x_i >= t}. After `iterations` halvings the interval is
    narrower than the float spacing of any value farther than (max - min) * 2^-40 from zero, so the
    threshold is the exact k-th largest value (int32 counts, float32 compares; no sort, no uint32).
    Rows with fewer than k values above -inf keep everything. NaNs are never kept.
    x [..., V] float32, k >= 1 (static).
    """
    x = jnp.asarray(x, f32)
    V = x.shape[-1]
    if k >= V:
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
    return (x >= kth[..., None]) | (keep_all[..., None] & (x == x))


def _bisect_threshold(lo, hi, ok_at, iterations):
    """The largest t in [lo, hi] (to float precision) with ok_at(t), for ok_at true at lo and
    monotone (true, then false as t grows). lo, hi [...] float32 and finite. A while loop, so the
    program stays small whatever `iterations` is."""

    def body(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) * 0.5
        ok = ok_at(mid)
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

    # hi itself may satisfy ok_at (ties at the maximum); test it once so the loop's hi is "not ok".
    top_ok = ok_at(hi)
    lo, _ = lax.fori_loop(0, iterations, body, (lo, hi))
    return jnp.where(top_ok, hi, lo)


def metal_safe_top_p_mask(logits, top_p, *, iterations: int = 64):
    """True on the smallest set of most likely tokens whose probability sum reaches `top_p`.

    The threshold is the largest probability t with sum(p[p >= t]) >= top_p (bisection on t in
    [0, max p], as in `metal_safe_top_k_mask`); tokens with p >= t are kept, ties at the edge too.
    logits [..., V] float32; top_p a float or a float32 array broadcastable to logits[..., 0].
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
    t = jnp.min(jnp.where(p >= t[..., None], p, jnp.inf), axis=-1)  # snap to an actual probability
    return p >= t[..., None]
