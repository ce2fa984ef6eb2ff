"""Chunked SSD (Mamba-2 scan) in pure JAX: the "xla" path on GPUs and CPUs, and what Apple GPUs run.

Same math as `reference.ssd_scan_ref` (a token-by-token `lax.scan`), organised as matmuls over chunks of
T positions, with a = dt A (<= 0) the per-step log-decay of a head and cs its inclusive prefix sum inside
a chunk:

  1. cs = tri @ a per chunk, with tri the [T, T] lower-triangular ones matrix (a matmul, not cumsum:
     cumsum lowers to reduce_window, which jax-metal cannot run).
  2. Inside a chunk: y_t = sum_{s <= t} (C_t . B_s) exp(cs_t - cs_s) dt_s x_s, a masked [T, T] decay
     matrix per head times the per-group C B^T, then a [T, T] x [T, headdim] matmul.
  3. Chunk states: h_end = sum_s exp(cs_last - cs_s) dt_s x_s B_s^T ([headdim, dstate] per head).
  4. A `lax.scan` over the chunks (static length) carries the state across chunk boundaries:
     h_in[c + 1] = exp(cs_last[c]) h_in[c] + h_end[c].
  5. The carried state's part of the output: y_t += exp(cs_t) h_in C_t.

Packed sequences (seq_idx): r_t = 1 where seq_idx changes between t - 1 and t, rc its prefix sum in a
chunk (a matmul again; small integers, exact in float32). A position s reaches t only when rc_s == rc_t
(no change in (s, t]), the carried state reaches t only when rc_t == 0, and it crosses a chunk only
when the chunk holds no change. The state of each packed sequence after its last position is rebuilt
from its chunk's carried state and the chunk's inputs up to that position (a gather per sequence).

The tail is padded to whole chunks with dt = 0 and x = 0 (decay exp(0) = 1, no input), so the final
state is exact. All math is float32; matmuls ask for full float32 precision (HIGHEST), since GPUs
otherwise round float32 operands to TF32. Every exponent is a sum of dt A over positions in one
chunk, so with A <= 0 and dt >= 0 nothing exp's a positive number, however long the sequence. A decay
exp(cs_t - cs_s) taken from two prefix sums carries a relative error of about |cs| x 6e-8 (|cs| reaches
~100 over a chunk of 256 at Mamba-2's A and dt), so y's error scales with the sum of its terms' absolute
values: ~1e-5 of it in float32 (the CUDA kernel, whose chunks are 64 positions whatever chunk_size
says, sums over fewer positions: ~1e-6 on the same test case).

Metal: only dot_general, elementwise math, single-operand reduce, while (scan with a static
length), broadcast/reshape/transpose, concatenate, slices and gather. See metal_allowlist.py.

Shape legend: b batch, l seqlen, h nheads = g * k, g ngroups, k heads per group, p headdim,
n dstate, c chunks, t / s positions in a chunk, S num_sequences.
"""

from __future__ import annotations

import functools
import math

import jax.numpy as jnp
from jax import lax

from ..elementwise import pad_to, prep_dt, skip_and_gate

f32 = jnp.float32
_einsum = functools.partial(jnp.einsum, precision=lax.Precision.HIGHEST)


def prep_dt_limited(dt, dt_bias, dt_softplus, dt_limit):
    """fp32 clip(softplus?(dt + dt_bias), dt_min, dt_max)."""
    lo, hi = dt_limit
    dt = prep_dt(dt, dt_bias, dt_softplus)
    if lo > -math.inf or hi < math.inf:
        dt = jnp.clip(dt, lo, hi)
    return dt


def per_channel_D(D, nheads: int, headdim: int):
    """D [nheads] or [nheads, headdim] -> [nheads, headdim] float32 (None stays None)."""
    if D is None:
        return None
    D = jnp.asarray(D, f32)
    return jnp.broadcast_to(D[:, None] if D.ndim == 1 else D, (nheads, headdim))


def _lower_tri(T: int):
    """tri[t, s] = 1.0 where s <= t."""
    t = lax.broadcasted_iota(jnp.int32, (T, T), 0)
    s = lax.broadcasted_iota(jnp.int32, (T, T), 1)
    return (s <= t).astype(f32)


def _masked_exp(mask, v):
    # exp(v) where mask, else 0; the masked-out v may be positive (s > t), so it is never exp'd.
    return jnp.exp(jnp.where(mask, v, -jnp.inf))


def ssd_scan_xla(x, dt, A, B, C, *, chunk_size=256, D=None, z=None, dt_bias=None, dt_softplus=False,
                 dt_limit=(0.0, math.inf), initial_state=None, return_final_state=False, seq_idx=None,
                 num_sequences=None):
    """Chunked SSD; the contract of `mamba_jax.ops.ssd_scan`, on already-checked arguments.

    Args:
      x, z: [b, l, h, p] float32 | bfloat16 | float16. dt: [b, l, h] (dtype of x).
      A, dt_bias: [h] float32. B, C: [b, l, g, n] (dtype of x); head i reads group i // (h // g).
      D: [h] or [h, p] float32. initial_state: [b, h, p, n] float32. seq_idx: [b, l] int32.
      chunk_size: positions per chunk; a sequence no longer than that is one chunk of exactly l.
      num_sequences: with seq_idx and return_final_state, how many per-sequence final states.

    Returns:
      y [b, l, h, p] in x.dtype, or (y, final_state) with final_state [b, h, p, n] float32, or
      [b, num_sequences, h, p, n] with seq_idx.
    """
    batch, seqlen, nheads, headdim = x.shape
    g, n = B.shape[2], B.shape[3]
    k = nheads // g
    T = min(int(chunk_size), seqlen)
    nc = -(-seqlen // T)
    lp = nc * T

    x32 = x.astype(f32)
    dt32 = prep_dt_limited(dt, dt_bias, dt_softplus, dt_limit)  # [b, l, h]; padded below, so pad dt = 0

    xc = pad_to(x32, lp).reshape(batch, nc, T, g, k, headdim)
    Bc = pad_to(B.astype(f32), lp).reshape(batch, nc, T, g, n)
    Cc = pad_to(C.astype(f32), lp).reshape(batch, nc, T, g, n)
    dtc = jnp.moveaxis(pad_to(dt32, lp).reshape(batch, nc, T, g, k), 2, -1)  # [b, c, g, k, T]
    a = dtc * A.astype(f32).reshape(g, k, 1)
    tri = _lower_tri(T)
    cs = _einsum("bcgks,ts->bcgkt", a, tri)  # inclusive prefix sums of dt A per chunk
    cs_last = cs[..., -1]  # [b, c, g, k]

    causal = tri > 0  # [t, s]
    if seq_idx is None:
        rc = None
        pair_ok = causal
        to_end = None
        from_start = None
        crosses = None
    else:
        sid = seq_idx.astype(jnp.int32)
        r = jnp.concatenate([jnp.zeros((batch, 1), f32), (sid[:, 1:] != sid[:, :-1]).astype(f32)], axis=1)
        rc = _einsum("bcs,ts->bct", pad_to(r, lp).reshape(batch, nc, T), tri)  # changes in [0, t]
        same = rc[..., :, None] == rc[..., None, :]  # [b, c, t, s]: no change in (s, t] (for s <= t)
        pair_ok = (causal & same)[:, :, None, None]  # [b, c, 1, 1, t, s]
        to_end = (rc == rc[..., -1:])[:, :, None, None]  # [b, c, 1, 1, s]: s reaches the chunk's end
        from_start = (rc == 0)[:, :, None, None]  # [b, c, 1, 1, t]: the carried state reaches t
        crosses = (rc[..., -1] == 0)[:, :, None, None]  # [b, c, 1, 1]: the carry crosses the chunk

    # Inside each chunk: y_diag[t] = sum_s (C_t . B_s) exp(cs_t - cs_s) dt_s x_s.
    CB = _einsum("bctgn,bcsgn->bcgts", Cc, Bc)
    decay = _masked_exp(pair_ok, cs[..., :, None] - cs[..., None, :])  # [b, c, g, k, t, s]
    scores = CB[:, :, :, None] * decay * dtc[..., None, :]
    y = _einsum("bcgkts,bcsgkp->bctgkp", scores, xc)

    # Each chunk's own contribution to the state at its end: [b, c, g, k, p, n].
    w_end = jnp.exp(cs_last[..., None] - cs) * dtc
    if to_end is not None:
        w_end = jnp.where(to_end, w_end, 0.0)
    states = _einsum("bcsgn,bcsgkp->bcgkpn", Bc, xc * jnp.moveaxis(w_end, -1, 2)[..., None])

    # Across chunks: the state entering each chunk.
    chunk_decay = jnp.exp(cs_last)
    if crosses is not None:
        chunk_decay = jnp.where(crosses, chunk_decay, 0.0)
    if initial_state is None:
        h0 = jnp.zeros((batch, g, k, headdim, n), f32)
    else:
        h0 = initial_state.astype(f32).reshape(batch, g, k, headdim, n)

    def chunk_step(h, xs):
        dec, st = xs
        return dec[..., None, None] * h + st, h

    last, h_in = lax.scan(chunk_step, h0, (jnp.moveaxis(chunk_decay, 1, 0), jnp.moveaxis(states, 1, 0)))
    h_in = jnp.moveaxis(h_in, 0, 1)  # [b, c, g, k, p, n]

    # The carried state's part of the output: exp(cs_t) h_in C_t.
    w_in = jnp.exp(cs)
    if from_start is not None:
        w_in = jnp.where(from_start, w_in, 0.0)
    y = y + _einsum("bctgn,bcgkpn->bctgkp", Cc, h_in) * jnp.moveaxis(w_in, -1, 2)[..., None]

    y = y.reshape(batch, lp, nheads, headdim)[:, :seqlen]
    y = skip_and_gate(y, x32, per_channel_D(D, nheads, headdim), z).astype(x.dtype)
    if not return_final_state:
        return y
    if seq_idx is None:
        return y, last.reshape(batch, nheads, headdim, n)
    final = _sequence_final_states(seq_idx, num_sequences, T, h_in, cs, rc, dtc, xc, Bc)
    return y, final.reshape(batch, num_sequences, nheads, headdim, n)


def _sequence_final_states(seq_idx, num_sequences, T, h_in, cs, rc, dtc, xc, Bc):
    """The state after the last position of each packed sequence: [b, S, g, k, p, n] (zeros for an id
    that never occurs). For the last position j (in chunk ci) of sequence s:
    h = [rc_j == 0] exp(cs_j) h_in[ci] + sum_{s' <= j, rc_s' == rc_j} exp(cs_j - cs_s') dt_s' x_s' B_s'^T."""
    batch, seqlen = seq_idx.shape
    S = int(num_sequences)
    if S == 0:
        return jnp.zeros((batch, 0) + h_in.shape[2:], f32)
    ids = lax.broadcasted_iota(jnp.int32, (1, S, 1), 1)
    pos = lax.broadcasted_iota(jnp.int32, (1, 1, seqlen), 2)
    last_pos = jnp.max(jnp.where(seq_idx.astype(jnp.int32)[:, None, :] == ids, pos, -1), axis=-1)  # [b, S]
    present = last_pos >= 0
    last_pos = jnp.maximum(last_pos, 0)
    ci = lax.div(last_pos, jnp.int32(T))  # both >= 0; jnp's // would add a remainder op
    j = last_pos - ci * T

    bi = jnp.arange(batch, dtype=jnp.int32)[:, None]
    take = lambda v: v[bi, ci]  # [b, c, ...] -> [b, S, ...]: the chunk holding each sequence's end
    h_in_s, cs_s, rc_s, dt_s, x_s, B_s = map(take, (h_in, cs, rc, dtc, xc, Bc))
    t = lax.broadcasted_iota(jnp.int32, (1, 1, T), 2)
    at_j = t == j[..., None]  # [b, S, T]
    cs_j = jnp.sum(jnp.where(at_j[:, :, None, None], cs_s, 0.0), axis=-1)  # [b, S, g, k]
    rc_j = jnp.sum(jnp.where(at_j, rc_s, 0.0), axis=-1)  # [b, S]
    upto = (t <= j[..., None]) & (rc_s == rc_j[..., None])  # [b, S, T]
    w = _masked_exp(upto[:, :, None, None], cs_j[..., None] - cs_s) * dt_s  # [b, S, g, k, T]
    h = _einsum("bstgn,bstgkp->bsgkpn", B_s, x_s * jnp.moveaxis(w, -1, 2)[..., None])
    carried = jnp.where((rc_j == 0)[..., None, None], jnp.exp(cs_j), 0.0)
    h = h + carried[..., None, None] * h_in_s
    return jnp.where(present[..., None, None, None, None], h, 0.0)
