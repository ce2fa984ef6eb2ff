// CPU kernel of selective_scan. Framework-free: it takes SelectiveScanParams and a range of work
// items, so the handler decides how to spread items over threads.
//
// Item = (batch, run of blocks). Each chunk of steps is three passes: dt and dt * u for all its
// steps, the recurrence block by block (state and A in L1, B_t/C_t broadcast per state index),
// then D * u and the silu(z) gate. See the notes above scan_item.
//
// Measured on a 2-core KVM guest (Xeon, AVX-512): memory access order matters as much as the
// arithmetic. Walking a block of channels down many rows (a new page per row) ran 2-3x slower
// than passes that stream whole rows, so every loop here reads rows in order, as wide as it can.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "common/cpu_lanes.h"
#include "selective_scan/params.h"

namespace mamba_jax {
namespace cpu {

// Group index of each lane; returns true when the whole block reads one group.
inline bool lane_groups(int64_t d0, int64_t nv, int64_t dim, int64_t ngroups, int64_t* g) {
  const int64_t per_group = dim / ngroups;
  for (int l = 0; l < kLanes; ++l) g[l] = (d0 + std::min<int64_t>(l, nv - 1)) / per_group;
  return g[0] == g[kLanes - 1];
}

// Work item of the scan: (batch, a run of `blocks_per_item` consecutive blocks).
// Rows of [B, L, D] are dim * 4 bytes apart, so at every step a narrow item touches a new cache
// line and usually a new 4 KB page per row it reads; wide items share each page walk and let the
// hardware prefetchers stream along the row. The handler picks the width from the thread count
// (enough items to balance the threads), bounded so the item's state stays small.
constexpr int64_t kScanMaxStateVectors = 512;  // blocks * dstate vectors of state: 32 KB
inline int64_t scan_max_blocks_per_item(int64_t dstate) {
  return std::max<int64_t>(1, kScanMaxStateVectors / std::max<int64_t>(1, dstate));
}
// Widest items that still give every thread `items_per_thread` of them.
inline int64_t scan_blocks_per_item(int64_t batch, int64_t dim, int64_t dstate, int64_t threads,
                                    int64_t items_per_thread = 2) {
  const int64_t nblocks = num_channel_blocks(dim);
  const int64_t want_items = std::max<int64_t>(1, threads * items_per_thread);
  const int64_t per_batch = std::max<int64_t>(1, (want_items + batch - 1) / batch);
  const int64_t g = std::max<int64_t>(1, nblocks / per_batch);
  return std::min(g, scan_max_blocks_per_item(dstate));
}
inline int64_t scan_clamp_blocks_per_item(int64_t blocks_per_item, int64_t dstate) {
  return std::max<int64_t>(1, std::min(blocks_per_item, scan_max_blocks_per_item(dstate)));
}
inline int64_t selective_scan_num_items(int64_t batch, int64_t dim, int64_t dstate, int64_t blocks_per_item) {
  const int64_t per = scan_clamp_blocks_per_item(blocks_per_item, dstate);
  return batch * ((num_channel_blocks(dim) + per - 1) / per);
}

// Steps per chunk. Each chunk runs three passes over its steps: (1) dt, dt * u for every step
// (softplus: ~100 cycles of latency, independent across steps, so these overlap), (2) the
// recurrence, whose only chain across steps is one FMA per state entry, (3) D * u and the silu(z)
// gate. Fused into one loop, (1) and (3) put their latency on every step's critical path and a
// step's row loads could not start early; split, each pass's loads are independent and overlap.
constexpr int64_t kScanChunk = 16;

MJ_INLINE bool all_lanes(simd::vi m) {
  bool ok = true;
  for (int l = 0; l < kLanes; ++l) ok = ok && m[l] != 0;
  return ok;
}

// Pass (2) for one block and one chunk when all lanes read one group of B/C (broadcast scalars):
// h = exp2(dt A2) h + du B;  y = <h, C>. kN > 0 fixes dstate at compile time (full unrolling).
template <int kN, bool kInRange>
MJ_INLINE void scan_chunk_uniform(int64_t N, int64_t steps, vf* h, const vf* A2, const vf* dts, const vf* dus,
                                  const float* Bg, const float* Cg, int64_t bc_seq_stride, vf* ys) {
  if (kN > 0) N = kN;
  for (int64_t i = 0; i < steps; ++i) {
    const vf dt = dts[i], du = dus[i];
    const float* Bt = Bg + i * bc_seq_stride;
    const float* Ct = Cg + i * bc_seq_stride;
    vf y0 = simd::splat(0.0f), y1 = simd::splat(0.0f);  // two chains: half the add latency
    int64_t n = 0;
    for (; n + 1 < N; n += 2) {
      const vf t0 = dt * A2[n], t1 = dt * A2[n + 1];
      const vf e0 = kInRange ? exp2_inrange(t0) : exp2_fast(t0);
      const vf e1 = kInRange ? exp2_inrange(t1) : exp2_fast(t1);
      const vf h0 = e0 * h[n] + du * Bt[n];
      const vf h1 = e1 * h[n + 1] + du * Bt[n + 1];
      h[n] = h0;
      h[n + 1] = h1;
      y0 = y0 + h0 * Ct[n];
      y1 = y1 + h1 * Ct[n + 1];
    }
    if (n < N) {
      const vf h0 = exp2_fast(dt * A2[n]) * h[n] + du * Bt[n];
      h[n] = h0;
      y0 = y0 + h0 * Ct[n];
    }
    ys[i] = y0 + y1;
  }
}

// Pass (2) when the lanes of a block straddle groups (dim / ngroups not a multiple of kLanes): B and
// C are gathered per lane.
inline void scan_chunk_gather(int64_t N, int64_t steps, vf* h, const vf* A2, const vf* dts, const vf* dus,
                              const float* Bt, const float* Ct, int64_t bc_seq_stride, int64_t gs, const int64_t* g,
                              vf* ys) {
  for (int64_t i = 0; i < steps; ++i) {
    vf y0 = simd::splat(0.0f);
    for (int64_t n = 0; n < N; ++n) {
      alignas(64) float bv[kLanes], cv[kLanes];
      for (int l = 0; l < kLanes; ++l) {
        bv[l] = Bt[i * bc_seq_stride + g[l] * gs + n];
        cv[l] = Ct[i * bc_seq_stride + g[l] * gs + n];
      }
      const vf h0 = exp2_fast(dts[i] * A2[n]) * h[n] + dus[i] * simd::load(bv);
      h[n] = h0;
      y0 = y0 + h0 * simd::load(cv);
    }
    ys[i] = y0;
  }
}

// Per-block constants of an item.
struct ScanBlock {
  vf a_lo, a_hi, dskip, bias, dt_lo, dt_hi;
  int64_t d0, nv;
  int64_t g[kLanes];
  bool uniform;
};

// Per-thread scratch of the scan (reused across calls; grows to the largest item seen).
struct ScanWorkspace {
  std::vector<vf> vecs;
  std::vector<ScanBlock> blocks;
  std::vector<float> bc;  // B and C of a chunk as float, for 16-bit inputs
};

// Converts B (or C) rows [steps, groups g0..g0+ng) of a chunk to float: dst[(i * ng + g) * N + n].
template <typename T>
void convert_bc_rows(const T* src, int64_t seq_stride, int64_t gs, int64_t g0, int64_t ng, int64_t N,
                     int64_t steps, float* dst) {
  for (int64_t i = 0; i < steps; ++i)
    for (int64_t g = 0; g < ng; ++g) {
      const T* row = src + i * seq_stride + (g0 + g) * gs;
      float* out = dst + (i * ng + g) * N;
      for (int64_t n = 0; n < N; n += kLanes) {
        const int64_t m = std::min<int64_t>(kLanes, N - n);
        const vf v = load_lanes(row + n, m);
        for (int64_t l = 0; l < m; ++l) out[n + l] = v[l];
      }
    }
}

// One item: blocks [blk0, blk0 + nblk) of batch b, over the whole sequence.
template <typename T, int kN>
void scan_item(const SelectiveScanParams& p, int64_t b, int64_t blk0, int64_t nblk, ScanWorkspace& w) {
  const int64_t N = kN > 0 ? kN : p.dstate, D = p.dim, rs = p.u_seq_stride;
  // Block j: state h[j * N + n] and A2 = A log2(e) (so exp(dt A) = exp2(dt A2)) as vectors over
  // its channels; dt, dt * u and y of the chunk's steps at dts[j * kScanChunk + i], etc.
  w.vecs.resize(nblk * (2 * N + 3 * kScanChunk));
  w.blocks.resize(nblk);
  vf* h = w.vecs.data();
  vf* A2 = h + nblk * N;
  vf* dts = A2 + nblk * N;
  vf* dus = dts + nblk * kScanChunk;
  vf* ys = dus + nblk * kScanChunk;
  ScanBlock* blk = w.blocks.data();
  for (int64_t j = 0; j < nblk; ++j) {
    ScanBlock& k = blk[j];
    k.d0 = (blk0 + j) * kLanes;
    k.nv = std::min<int64_t>(kLanes, D - k.d0);
    k.uniform = lane_groups(k.d0, k.nv, D, p.ngroups, k.g);
    for (int64_t n = 0; n < N; ++n) {
      alignas(64) float a[kLanes] = {}, s[kLanes] = {};
      for (int64_t l = 0; l < k.nv; ++l) {
        a[l] = p.A[(k.d0 + l) * N + n] * kLog2e;
        s[l] = p.initial_state ? p.initial_state[(b * D + k.d0 + l) * N + n] : 0.0f;
      }
      const vf av = simd::load(a);
      A2[j * N + n] = av;
      h[j * N + n] = simd::load(s);
      k.a_lo = n == 0 ? av : vmin(k.a_lo, av);
      k.a_hi = n == 0 ? av : vmax(k.a_hi, av);
    }
    k.dskip = load_params(p.Dskip ? p.Dskip + k.d0 : nullptr, k.nv, 0.0f);
    k.bias = load_params(p.delta_bias ? p.delta_bias + k.d0 : nullptr, k.nv, 0.0f);
  }
  const int64_t boff = b * p.u_batch_stride;
  const T* u = static_cast<const T*>(p.u) + boff;
  const T* dl = static_cast<const T*>(p.delta) + boff;
  const T* z = p.z ? static_cast<const T*>(p.z) + boff : nullptr;
  T* y = static_cast<T*>(p.y) + boff;
  const T* Bb = static_cast<const T*>(p.Bm) + b * p.bc_batch_stride;
  const T* Cb = static_cast<const T*>(p.Cm) + b * p.bc_batch_stride;
  const int64_t gs = p.bc_group_stride;
  for (int64_t t0 = 0; t0 < p.seqlen; t0 += kScanChunk) {
    const int64_t steps = std::min<int64_t>(kScanChunk, p.seqlen - t0);
    // (1) dt and dt * u, and the range of dt over the chunk. Prefetches u and delta for the next
    // chunk (each load feeds ~100 cycles of softplus, so out-of-order execution alone cannot run
    // far enough ahead to hide a miss), and z and y for pass (3).
    const int64_t pf_steps = std::min<int64_t>(kScanChunk, p.seqlen - t0 - kScanChunk);
    for (int64_t i = 0; i < steps; ++i) {
      const int64_t off = (t0 + i) * rs;
      for (int64_t j = 0; j < nblk; ++j) {
        ScanBlock& k = blk[j];
        const int64_t o = off + k.d0;
        if (i < pf_steps) {
          __builtin_prefetch(u + o + kScanChunk * rs);
          __builtin_prefetch(dl + o + kScanChunk * rs);
        }
        if (z) __builtin_prefetch(z + o);
        __builtin_prefetch(y + o, 1);
        const vf dt = prepare_dt(load_lanes(dl + o, k.nv), k.bias, p.delta_softplus);
        dts[j * kScanChunk + i] = dt;
        dus[j * kScanChunk + i] = dt * load_lanes(u + o, k.nv);
        k.dt_lo = i == 0 ? dt : vmin(k.dt_lo, dt);
        k.dt_hi = i == 0 ? dt : vmax(k.dt_hi, dt);
      }
    }
    // (2) the recurrence, block by block. dt * A2 is bilinear, so its extremes over the chunk
    // are at the corners of [dt_lo, dt_hi] x [a_lo, a_hi] (rounding is monotone); when they lie
    // inside [-125, 126] exp2 needs no clamp. NaNs fail the test and take the clamped path.
    // B_t and C_t as float: the inner loop broadcasts one value per state index, which for
    // 16-bit types would be a scalar conversion each; convert the chunk's rows once instead.
    const float* Bt;
    const float* Ct;
    int64_t bss, bgs, gbase;  // seq and group strides of Bt/Ct, first group they hold
    if constexpr (std::is_same<T, float>::value) {
      Bt = Bb + t0 * p.bc_seq_stride;
      Ct = Cb + t0 * p.bc_seq_stride;
      bss = p.bc_seq_stride;
      bgs = gs;
      gbase = 0;
    } else {
      gbase = blk[0].g[0];
      const int64_t ng = blk[nblk - 1].g[kLanes - 1] - gbase + 1;
      w.bc.resize(2 * steps * ng * N);
      convert_bc_rows(Bb + t0 * p.bc_seq_stride, p.bc_seq_stride, gs, gbase, ng, N, steps, w.bc.data());
      convert_bc_rows(Cb + t0 * p.bc_seq_stride, p.bc_seq_stride, gs, gbase, ng, N, steps, w.bc.data() + steps * ng * N);
      Bt = w.bc.data();
      Ct = w.bc.data() + steps * ng * N;
      bss = ng * N;
      bgs = N;
    }
    for (int64_t j = 0; j < nblk; ++j) {
      const ScanBlock& k = blk[j];
      vf* hj = h + j * N;
      const vf* aj = A2 + j * N;
      const vf* dtj = dts + j * kScanChunk;
      const vf* duj = dus + j * kScanChunk;
      vf* yj = ys + j * kScanChunk;
      if (!k.uniform) {
        int64_t gl[kLanes];
        for (int l = 0; l < kLanes; ++l) gl[l] = k.g[l] - gbase;
        scan_chunk_gather(N, steps, hj, aj, dtj, duj, Bt, Ct, bss, bgs, gl, yj);
        continue;
      }
      const vf c0 = k.dt_lo * k.a_lo, c1 = k.dt_lo * k.a_hi, c2 = k.dt_hi * k.a_lo, c3 = k.dt_hi * k.a_hi;
      const vf lo = vmin(vmin(c0, c1), vmin(c2, c3)), hi = vmax(vmax(c0, c1), vmax(c2, c3));
      const bool in_range = all_lanes(lo >= simd::splat(-125.0f)) && all_lanes(hi <= simd::splat(126.0f));
      const float* Bg = Bt + (k.g[0] - gbase) * bgs;
      const float* Cg = Ct + (k.g[0] - gbase) * bgs;
      if (in_range)
        scan_chunk_uniform<kN, true>(N, steps, hj, aj, dtj, duj, Bg, Cg, bss, yj);
      else
        scan_chunk_uniform<kN, false>(N, steps, hj, aj, dtj, duj, Bg, Cg, bss, yj);
    }
    // (3) y = (y + D u) * silu(z).
    for (int64_t i = 0; i < steps; ++i) {
      const int64_t off = (t0 + i) * rs;
      for (int64_t j = 0; j < nblk; ++j) {
        const ScanBlock& k = blk[j];
        const int64_t o = off + k.d0;
        const vf zz = z ? load_lanes(z + o, k.nv) : simd::splat(0.0f);
        const vf yv = finish_y(ys[j * kScanChunk + i], load_lanes(u + o, k.nv), k.dskip, zz, z != nullptr);
        store_lanes(y + o, yv, k.nv);
      }
    }
  }
  for (int64_t j = 0; j < nblk; ++j)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t l = 0; l < blk[j].nv; ++l) p.last_state[(b * D + blk[j].d0 + l) * N + n] = h[j * N + n][l];
}

// Items [item_begin, item_end) of selective_scan_num_items(batch, dim, dstate, blocks_per_item), numbered
// batch-major.
template <typename T>
void selective_scan(const SelectiveScanParams& p, int64_t blocks_per_item, int64_t item_begin, int64_t item_end) {
  static thread_local ScanWorkspace ws;
  const int64_t nblocks = num_channel_blocks(p.dim);
  const int64_t per = scan_clamp_blocks_per_item(blocks_per_item, p.dstate);
  const int64_t groups = (nblocks + per - 1) / per;
  for (int64_t item = item_begin; item < item_end; ++item) {
    const int64_t b = item / groups;
    const int64_t blk0 = (item % groups) * per;
    const int64_t nblk = std::min<int64_t>(per, nblocks - blk0);
    if (p.dstate == 16) scan_item<T, 16>(p, b, blk0, nblk, ws);
    else scan_item<T, 0>(p, b, blk0, nblk, ws);
  }
}

}  // namespace cpu
}  // namespace mamba_jax
