"""Chunked Mamba-1 selective scan in pure JAX: the fast "xla" path, and what Apple's jax-metal runs.

Same math as `selective_scan_ref` in reference.py (a token-by-token `lax.scan`), reorganised so that the
number of sequential steps is about T + L/T instead of L:

  1. Split the sequence into nc = ceil(L / T) chunks of T positions (the tail is padded with dt = 0,
     u = 0, which leaves the state untouched, so the last state is exact).
  2. Local pass: one `lax.scan` over the T positions of a chunk, vectorised over all chunks at once,
     starting every chunk from a zero state. Per position it emits the chunk-local output
     y_loc[t] = <h_loc[t], C[t]> and the in-chunk log-decay prefix cumdt[t] = sum_{s<=t} dt[s]
     (a running sum in the carry: exact fp32, no reduce_window, no matmul).
  3. Chunk pass: a short `lax.scan` over the nc chunks carries the true state across chunk
     boundaries: h_start[c+1] = exp(A * cumdt_end[c]) * h_start[c] + h_loc_end[c].
  4. Correction, fully parallel: y[t] = y_loc[t] + sum_n C[t, n] exp(A[d, n] cumdt[t, d]) h_start[d, n].
     The [.., d, n] product is reduced over n inside one fusion; only [b, L, d] is written.

Numerics: fp32 throughout; every exponent is A * (a sum of dt >= 0 over positions inside one chunk),
so with A <= 0 and dt >= 0 (the Mamba parameterisation: A = -exp(A_log), dt softplus'd) nothing
exp's a positive number, however long the sequence. (With dt < 0 the reference grows too.)

Metal: only while (scan with a static length), elementwise math, single-operand reduce,
broadcast/reshape/transpose, concatenate, static and dynamic slices. See tests/metal_allowlist.py.

Shape legend: b batch, l seqlen, d dim, n dstate, g ngroups, p = d // g, c chunks, t position in chunk.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from ..elementwise import f32, pad_to, prep_dt, skip_and_gate

# Chunk sizes are powers of two between these bounds; see `default_chunk_size`.
MIN_CHUNK = 8
MAX_CHUNK = 128


def default_chunk_size(seqlen: int) -> int:
    """About sqrt(seqlen) (it minimises T + L/T sequential steps), a power of two in [8, 128].

    A sequence no longer than that chunk runs as one chunk of exactly seqlen positions (no padding).
    """
    if seqlen <= MIN_CHUNK:
        return max(seqlen, 1)
    t = 1 << max(0, round(math.log2(math.sqrt(seqlen))))
    t = min(max(t, MIN_CHUNK), MAX_CHUNK)
    return min(t, seqlen)


def _sum_over_states(term, n):
    """sum_{i < n} term(i) for term(i) -> [..., p]; term(None) gives the whole [..., n, p] product.

    Written as n - 1 adds of per-state [..., p] terms rather than a reduce over a broadcast product:
    XLA:CPU otherwise writes the [..., n, p] product to memory and reduces the short n axis slowly
    (the correction at L=2048, d=1536, n=16 on the 2-core CI machine: 147 ms as broadcast + reduce,
    45 ms as unrolled adds, which XLA emits as one elementwise fusion). Very wide states fall back
    to one (single-operand, Metal-safe) reduce to keep the program small.
    """
    if n > _MAX_UNROLLED_SUM:
        return jnp.sum(term(None), axis=-2)
    acc = term(0)
    for i in range(1, n):
        acc = acc + term(i)
    return acc


_MAX_UNROLLED_SUM = 64


def _at(v, i, axis=-1):
    """v[..., i] along `axis` (all of it when i is None, keeping a size-n axis for the fallback)."""
    if i is None:
        return v
    return lax.index_in_dim(v, i, axis=axis, keepdims=False)


def _readout_from_start(C_c, cumdt, A_g, h_start, n):
    """sum_n C[t, n] exp(A[n, p] cumdt[t, p]) h_start[n, p]: the part of y_t that the state entering
    the chunk contributes. C_c [T, b, c, g, n]; cumdt [T, b, c, g, p]; A_g [g, n, p];
    h_start [1, b, c, g, n, p] (or broadcastable). Returns [T, b, c, g, p]."""
    def term(i):
        if i is None:
            return C_c[..., None] * jnp.exp(cumdt[..., None, :] * A_g) * h_start
        return _at(C_c, i)[..., None] * jnp.exp(cumdt * A_g[:, i]) * _at(h_start, i, -2)
    return _sum_over_states(term, n)


def selective_scan_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None, *, delta_softplus=False,
                           initial_state=None, chunk_size=None, unroll=1):
    """Chunked selective scan, same contract as `selective_scan_ref`.

    Args:
      u, delta, z: [b, l, d] float32 | bfloat16 | float16.
      A: [d, n] float32. B, C: [b, l, g, n] (dtype of u); channel d reads group d // (d / g).
      D, delta_bias: optional [d] float32. initial_state: optional [b, d, n] float32.
      chunk_size: positions per chunk (default `default_chunk_size(l)`); chunk_size >= l is the
        plain token loop (one chunk).
      unroll: `lax.scan` unroll factor of the local pass (fewer loop iterations on GPU).

    Returns:
      (y [b, l, d] in u.dtype, last_state [b, d, n] float32).
    """
    batch, seqlen, dim = u.shape
    g, n = B.shape[2], B.shape[3]
    p = dim // g
    T = default_chunk_size(seqlen) if chunk_size is None else min(int(chunk_size), seqlen)
    if T < 1:
        raise ValueError(f"selective_scan_chunked: chunk_size must be >= 1, got {chunk_size}")
    nc = -(-seqlen // T)
    lp = nc * T

    u32 = u.astype(f32)
    dt = prep_dt(delta, delta_bias, delta_softplus)  # [b, l, d]; padded after softplus so pad dt = 0
    x = dt * u32
    # The state is kept as [.., g, n, p]: channels minor, so sums over n are adds of contiguous rows.
    A_g = jnp.swapaxes(A.astype(f32).reshape(g, p, n), 1, 2)  # [g, n, p]

    def chunked_tmajor(v, tail):
        # [b, l, *tail] -> [T, b, nc, *tail]: scan over positions in a chunk, all chunks in parallel.
        v = pad_to(v, lp).reshape(batch, nc, T, *tail)
        return jnp.moveaxis(v, 2, 0)

    dt_c = chunked_tmajor(dt, (g, p))
    x_c = chunked_tmajor(x, (g, p))
    B_c = chunked_tmajor(B.astype(f32), (g, n))
    C_c = chunked_tmajor(C.astype(f32), (g, n))

    def local_step(carry, xs):
        h, cum = carry  # h [b, c, g, n, p]; cum [b, c, g, p]
        dt_t, x_t, B_t, C_t = xs  # [b, c, g, p], [b, c, g, p], [b, c, g, n], [b, c, g, n]
        h = jnp.exp(dt_t[..., None, :] * A_g) * h + x_t[..., None, :] * B_t[..., None]
        y_t = _sum_over_states(lambda i: _at(h, i, -2) * _at(C_t, i)[..., None] if i is not None
                               else h * C_t[..., None], n)
        cum = cum + dt_t
        return (h, cum), (y_t, cum)

    h_zero = jnp.zeros((batch, nc, g, n, p), f32)
    cum_zero = jnp.zeros((batch, nc, g, p), f32)
    (h_loc_end, cum_end), (y_loc, cumdt) = lax.scan(local_step, (h_zero, cum_zero), (dt_c, x_c, B_c, C_c),
                                                    unroll=unroll)
    # y_loc, cumdt: [T, b, c, g, p]; h_loc_end [b, c, g, n, p]; cum_end [b, c, g, p]

    h0 = None
    if initial_state is not None:
        h0 = jnp.swapaxes(initial_state.astype(f32).reshape(batch, g, p, n), 2, 3)  # [b, g, n, p]

    if nc == 1:
        # One chunk (short sequences): the local pass is the whole scan; only h0 needs carrying.
        last = h_loc_end[:, 0]
        y = y_loc
        if h0 is not None:
            last = jnp.exp(cum_end[:, 0, :, None, :] * A_g) * h0 + last
            y = y + _readout_from_start(C_c, cumdt, A_g, h0[None, :, None], n)
    else:
        def chunk_step(h, xs):
            cum_c, hloc_c = xs  # [b, g, p], [b, g, n, p]
            return jnp.exp(cum_c[..., None, :] * A_g) * h + hloc_c, h

        h_init = jnp.zeros((batch, g, n, p), f32) if h0 is None else h0
        last, h_start = lax.scan(chunk_step, h_init,
                                 (jnp.moveaxis(cum_end, 1, 0), jnp.moveaxis(h_loc_end, 1, 0)))
        # h_start [c, b, g, n, p]: the state entering each chunk. The correction below is one fusion:
        # exp, products and the sum over n, writing only [T, b, c, g, p].
        h_start = jnp.moveaxis(h_start, 0, 1)[None]  # [1, b, c, g, n, p]
        y = y_loc + _readout_from_start(C_c, cumdt, A_g, h_start, n)

    y = jnp.moveaxis(y, 0, 2).reshape(batch, lp, dim)[:, :seqlen]
    y = skip_and_gate(y, u32, D, z)
    last = jnp.swapaxes(last, 2, 3).reshape(batch, dim, n)
    return y.astype(u.dtype), last


def selective_scan_xla(u, delta, A, B, C, D=None, z=None, delta_bias=None, *, delta_softplus=False,
                       initial_state=None):
    """The "xla" implementation of `selective_scan` (same contract as `selective_scan_ref`).

    The chunk size follows the default backend when the function is traced: on CPU the whole
    sequence is one chunk, i.e. a token loop in the channel-minor layout (CPU loop iterations cost
    little, and the chunked form's correction costs a second exp per element: measured 1.3-1.5x
    slower there); on every other backend (CUDA, METAL, mps, TPU) the chunked form, whose
    ~T + L/T sequential steps matter where a loop iteration costs microseconds. Both forms are
    exact and Metal-safe; the choice only affects speed (a program lowered on a CPU host for
    another platform gets the CPU form). It is deliberately not a `lax.platform_dependent`: that
    emits a `stablehlo.case`, which this path keeps out (see CONDITIONAL_OPS in tests/metal_allowlist.py).
    Gradients come from JAX autodiff of the chosen form (reversed while loops, elementwise math).
    """
    seqlen = u.shape[1]
    chunk = seqlen if jax.default_backend() == "cpu" else default_chunk_size(seqlen)
    return selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias, delta_softplus=delta_softplus,
                                  initial_state=initial_state, chunk_size=chunk)
