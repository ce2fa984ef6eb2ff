// CPU kernel of ssd_scan. Framework-free: it takes SsdScanParams (params.h, where the semantics
// are spelled out) and a range of work items, so the handler decides how to spread items over threads.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common/cpu_lanes.h"
#include "common/limits.h"
#include "ssd_scan/params.h"

namespace mamba_jax {
namespace cpu {

// dt after bias, softplus (log1p(e^x), x above 20 taken as is) and the clip to [lo, hi]; NaN stays NaN.
inline float ssd_dt(float raw, float bias, bool softplus, float lo, float hi) {
  float d = raw + bias;
  if (softplus) d = d > 20.0f ? d : std::log1p(std::exp(d));
  return std::min(std::max(d, lo), hi);
}

// The CPU kernel walks the recurrence step by step, with one work item per (batch, head). Lanes
// run along headdim, so x_t, z_t and y_t rows load and store as vectors and B_t[n], C_t[n] are
// broadcasts; the state of an item is held as [ceil(P / kLanes)][N] vectors. Steps go in chunks
// of up to kSsdSteps: for one vector of channels and one state index the chunk's steps run with
// the state in a register and one y accumulator per step, so the state makes one trip through L1
// per chunk instead of one per step. A chunk never crosses a seq_idx change, so restarts and
// per-sequence stores fall between chunks.
//
// Within a chunk the decay is factored out: with Lam_t = decay_0 ... decay_t,
//   h_t = Lam_t g_t,  g_t = h_{-1} + sum_{s <= t} (dt_s x_s / Lam_s) B_s,  y_t = Lam_t (g_t . C_t),
// two FMAs per state entry and step instead of a multiply and two FMAs. Each term of y_t still
// enters scaled by its own decay Lam_t / Lam_s <= 1, so rounding is that of the plain recurrence;
// chunks whose Lam falls below kSsdMinDecay (1 / Lam would grow large) take the plain form.
constexpr int kSsdSteps = 8;
constexpr float kSsdMinDecay = 0x1p-40f;

struct SsdScanWorkspace {
  std::vector<vf> h;      // [npv][N] state
  std::vector<vf> xs;     // [kSsdSteps][npv] x of the chunk's steps
  std::vector<vf> u;      // [kSsdSteps][npv] dt * x (plain form) or dt * x / Lam (factored form)
  std::vector<vf> ys;     // [kSsdSteps][npv] h C
  std::vector<float> bc;  // B then C of the chunk as float, [kSsdSteps][kMaxDstate] each
  float decay[kSsdSteps];  // decay_t (plain form) or Lam_t (factored form)
};

// kT steps (the chunk's, padded with steps that leave the state unchanged) for one vector of
// channels. Plain: h = decay_t h + u_t B_t[n], y_t += h C_t[n]. Factored: g = g + u_t B_t[n],
// y_t += g C_t[n], then y_t *= Lam_t and h = Lam_{kT-1} g.
template <int kT, bool kFactored>
MJ_INLINE void ssd_chunk_vector(int64_t N, vf* h, const float* decay, const vf* u_in, int64_t npv, const float* Bc,
                                const float* Cc, vf* ys) {
  vf d[kT], u[kT], acc[kT];
  for (int t = 0; t < kT; ++t) {
    d[t] = simd::splat(decay[t]);
    u[t] = u_in[t * npv];
    acc[t] = simd::splat(0.0f);
  }
  for (int64_t n = 0; n < N; ++n) {
    vf hv = h[n];
    // Rows kMaxDstate apart: every B_t[n], C_t[n] is a constant offset from Bc + n.
    for (int t = 0; t < kT; ++t) {
      const float b = Bc[t * kMaxDstate + n], c = Cc[t * kMaxDstate + n];
      hv = kFactored ? hv + u[t] * b : d[t] * hv + u[t] * b;
      acc[t] = acc[t] + hv * c;
    }
    h[n] = kFactored ? hv * d[kT - 1] : hv;
  }
  for (int t = 0; t < kT; ++t) ys[t * npv] = kFactored ? acc[t] * d[t] : acc[t];
}

template <bool kFactored>
MJ_INLINE void ssd_chunk_vector(int64_t steps, int64_t N, vf* h, const float* decay, const vf* u, int64_t npv,
                                const float* Bc, const float* Cc, vf* ys) {
  if (steps > 4) ssd_chunk_vector<8, kFactored>(N, h, decay, u, npv, Bc, Cc, ys);
  else if (steps > 2) ssd_chunk_vector<4, kFactored>(N, h, decay, u, npv, Bc, Cc, ys);
  else if (steps > 1) ssd_chunk_vector<2, kFactored>(N, h, decay, u, npv, Bc, Cc, ys);
  else ssd_chunk_vector<1, kFactored>(N, h, decay, u, npv, Bc, Cc, ys);
}

// Copies the state of one (batch, head) [P, N] (row stride N) into / out of the lane layout.
inline void ssd_state_to_lanes(const float* src, int64_t P, int64_t N, vf* h) {
  const int64_t npv = num_channel_blocks(P);
  for (int64_t v = 0; v < npv; ++v)
    for (int64_t n = 0; n < N; ++n) {
      alignas(64) float t[kLanes] = {};
      if (src)
        for (int64_t l = 0; l < std::min<int64_t>(kLanes, P - v * kLanes); ++l) t[l] = src[(v * kLanes + l) * N + n];
      h[v * N + n] = simd::load(t);
    }
}

inline void ssd_state_from_lanes(const vf* h, int64_t P, int64_t N, float* dst) {
  const int64_t npv = num_channel_blocks(P);
  for (int64_t v = 0; v < npv; ++v) {
    const int64_t nv = std::min<int64_t>(kLanes, P - v * kLanes);
    for (int64_t n = 0; n < N; ++n) {
      const vf hv = h[v * N + n];
      for (int64_t l = 0; l < nv; ++l) dst[(v * kLanes + l) * N + n] = hv[l];
    }
  }
}

// Prefetches `count` elements at p, one 64-byte line at a time (rw: for writing).
template <typename T>
MJ_INLINE void prefetch_row(const T* p, int64_t count, int rw = 0) {
  const char* c = reinterpret_cast<const char*>(p);
  for (int64_t o = 0; o < count * int64_t(sizeof(T)); o += 64) {
    if (rw) __builtin_prefetch(c + o, 1);
    else __builtin_prefetch(c + o, 0);
  }
}

// Steps [t0, t0 + steps) of item (b, hd), steps <= kSsdSteps.
template <typename T>
void ssd_scan_chunk(const SsdScanParams& p, int64_t b, int64_t hd, int64_t t0, int64_t steps, SsdScanWorkspace& w) {
  const int64_t P = p.headdim, N = p.dstate, npv = num_channel_blocks(P);
  const int64_t g = hd / (p.nheads / p.ngroups);
  const float A = p.A[hd];
  const float bias = p.dt_bias ? p.dt_bias[hd] : 0.0f;
  const int64_t xoff = b * p.x_batch_stride + hd * p.x_head_stride;
  const T* xb = static_cast<const T*>(p.x) + xoff;
  const T* zb = p.z ? static_cast<const T*>(p.z) + xoff : nullptr;
  T* yb = static_cast<T*>(p.y) + xoff;
  const T* dtb = static_cast<const T*>(p.dt) + b * p.dt_batch_stride + hd;
  const int64_t bc_off = b * p.bc_batch_stride + g * p.bc_group_stride;
  const T* Bb = static_cast<const T*>(p.Bm) + bc_off;
  const T* Cb = static_cast<const T*>(p.Cm) + bc_off;
  float* Bc = w.bc.data();
  float* Cc = Bc + kSsdSteps * kMaxDstate;
  // Rows of one item are x_seq_stride apart (a new page per step for wide rows), which the
  // hardware prefetchers do not follow: fetch the next chunk's rows now, and this chunk's y and z.
  for (int64_t i = 0; i < steps; ++i) {
    const int64_t t = t0 + i, tn = t + kSsdSteps;
    if (tn < p.seqlen) {
      prefetch_row(xb + tn * p.x_seq_stride, P);
      prefetch_row(Bb + tn * p.bc_seq_stride, N);
      prefetch_row(Cb + tn * p.bc_seq_stride, N);
      __builtin_prefetch(dtb + tn * p.dt_seq_stride);
    }
    if (zb) prefetch_row(zb + t * p.x_seq_stride, P);
    prefetch_row(yb + t * p.x_seq_stride, P, 1);
  }
  // dt and decay per step; padding steps (decay 1, u = 0, B = C = 0) keep the state.
  float dts[kSsdSteps];
  float lam = 1.0f;
  for (int64_t i = 0; i < kSsdSteps; ++i) {
    dts[i] = 0.0f;
    w.decay[i] = 1.0f;
    if (i < steps) {
      dts[i] = ssd_dt(to_float(dtb[(t0 + i) * p.dt_seq_stride]), bias, p.dt_softplus, p.dt_min, p.dt_max);
      w.decay[i] = std::exp(dts[i] * A);
    }
    lam *= w.decay[i];
  }
  const bool factored = lam >= kSsdMinDecay;  // false for NaN
  if (factored)
    for (int64_t i = 0; i < kSsdSteps; ++i) {
      if (i) w.decay[i] *= w.decay[i - 1];
      dts[i] /= w.decay[i];
    }
  for (int64_t i = 0; i < kSsdSteps; ++i) {
    const T* xr = xb + (t0 + i) * p.x_seq_stride;
    for (int64_t v = 0; v < npv; ++v) {
      const vf xv = i < steps ? load_lanes(xr + v * kLanes, std::min<int64_t>(kLanes, P - v * kLanes)) : simd::splat(0.0f);
      w.xs[i * npv + v] = xv;
      w.u[i * npv + v] = dts[i] * xv;
    }
    const T* Br = Bb + (t0 + i) * p.bc_seq_stride;
    const T* Cr = Cb + (t0 + i) * p.bc_seq_stride;
    for (int64_t n = 0; n < N; n += kLanes) {
      const int64_t m = std::min<int64_t>(kLanes, N - n);
      store_lanes(Bc + i * kMaxDstate + n, i < steps ? load_lanes(Br + n, m) : simd::splat(0.0f), m);
      store_lanes(Cc + i * kMaxDstate + n, i < steps ? load_lanes(Cr + n, m) : simd::splat(0.0f), m);
    }
  }
  for (int64_t v = 0; v < npv; ++v) {
    vf* hv = w.h.data() + v * N;
    if (factored) ssd_chunk_vector<true>(steps, N, hv, w.decay, w.u.data() + v, npv, Bc, Cc, w.ys.data() + v);
    else ssd_chunk_vector<false>(steps, N, hv, w.decay, w.u.data() + v, npv, Bc, Cc, w.ys.data() + v);
  }
  for (int64_t i = 0; i < steps; ++i) {
    const int64_t ro = (t0 + i) * p.x_seq_stride;
    for (int64_t v = 0; v < npv; ++v) {
      const int64_t nv = std::min<int64_t>(kLanes, P - v * kLanes);
      const vf dskip = load_params(p.Dskip ? p.Dskip + hd * P + v * kLanes : nullptr, nv, 0.0f);
      const vf zz = zb ? load_lanes(zb + ro + v * kLanes, nv) : simd::splat(0.0f);
      const vf yv = finish_y(w.ys[i * npv + v], w.xs[i * npv + v], dskip, zz, zb != nullptr);
      store_lanes(yb + ro + v * kLanes, yv, nv);
    }
  }
}

// Item (b, hd) over the whole sequence.
template <typename T>
void ssd_scan_item(const SsdScanParams& p, int64_t b, int64_t hd, SsdScanWorkspace& w) {
  const int64_t P = p.headdim, N = p.dstate, L = p.seqlen, npv = num_channel_blocks(P);
  w.h.resize(npv * N);
  w.xs.resize(kSsdSteps * npv);
  w.u.resize(kSsdSteps * npv);
  w.ys.resize(kSsdSteps * npv);
  w.bc.resize(2 * kSsdSteps * kMaxDstate);
  const float* init =
      p.initial_state ? p.initial_state + b * p.state_batch_stride + hd * p.state_head_stride : nullptr;
  ssd_state_to_lanes(init, P, N, w.h.data());
  float* fin = p.final_state + b * p.final_batch_stride + hd * p.final_head_stride;
  const int32_t* seq = p.seq_idx ? p.seq_idx + b * p.seq_idx_batch_stride : nullptr;
  if (p.has_seq_idx)
    for (int64_t s = 0; s < p.num_sequences; ++s) std::fill_n(fin + s * p.final_seq_stride, P * N, 0.0f);
  for (int64_t t0 = 0; t0 < L;) {
    int64_t t1 = std::min<int64_t>(L, t0 + kSsdSteps);
    if (seq)
      for (int64_t t = t0 + 1; t < t1; ++t)
        if (seq[t] != seq[t - 1]) {
          t1 = t;
          break;
        }
    ssd_scan_chunk<T>(p, b, hd, t0, t1 - t0, w);
    if (seq && (t1 == L || seq[t1] != seq[t1 - 1])) {
      const int64_t s = seq[t1 - 1];
      if (s >= 0 && s < p.num_sequences) ssd_state_from_lanes(w.h.data(), P, N, fin + s * p.final_seq_stride);
      if (t1 < L) std::fill(w.h.begin(), w.h.end(), simd::splat(0.0f));
    }
    t0 = t1;
  }
  if (!p.has_seq_idx) ssd_state_from_lanes(w.h.data(), P, N, fin);
}

inline int64_t ssd_scan_num_items(const SsdScanParams& p) { return p.batch * p.nheads; }

// Items [item_begin, item_end) of ssd_scan_num_items, numbered batch-major.
template <typename T>
void ssd_scan(const SsdScanParams& p, int64_t item_begin, int64_t item_end) {
  static thread_local SsdScanWorkspace ws;
  for (int64_t item = item_begin; item < item_end; ++item) ssd_scan_item<T>(p, item / p.nheads, item % p.nheads, ws);
}

}  // namespace cpu
}  // namespace mamba_jax
