// CPU loops for the Mamba-1 ops. Framework-free: they take the Params structs of params.h and a
// range of work items, so the handler decides how to spread items over threads.
//
// Work item = (batch index, block of kLanes consecutive channels). Channels are the contiguous axis
// of every activation ([B, L, D]), so a block's loads and stores are contiguous, and the lane loops
// below compile to SIMD across channels. The state of a block ([N][kLanes] floats, 8 KB at N=256)
// stays in L1 for the whole sequence.
#pragma once

#include <algorithm>
#include <cstdint>

#include "mamba_jax/cpu_math.h"
#include "mamba_jax/dtypes.h"
#include "mamba_jax/params.h"

namespace mamba_jax {
namespace cpu {

constexpr int kLanes = 8;

inline int64_t num_channel_blocks(int64_t dim) { return (dim + kLanes - 1) / kLanes; }

#if defined(__GNUC__) && !defined(__clang__)
#define MJ_SIMD _Pragma("GCC ivdep")
#else
#define MJ_SIMD _Pragma("omp simd")
#endif

template <typename T>
inline void load_lanes(const T* src, int64_t n, float* dst) {
  for (int l = 0; l < kLanes; ++l) dst[l] = l < n ? to_float(src[l]) : 0.0f;
}

template <typename T>
inline void store_lanes(const float* src, int64_t n, T* dst) {
  for (int l = 0; l < n; ++l) dst[l] = from_float<T>(src[l]);
}

inline void load_param_lanes(const float* src, int64_t n, float fill, float* dst) {
  for (int l = 0; l < kLanes; ++l) dst[l] = (src != nullptr && l < n) ? src[l] : fill;
}

// Fills dt (after bias and softplus), du = dt * u and the raw u for one block and one step.
inline void prepare_dt(const float* u, float* dt, const float* bias, bool softplus, float* du) {
  MJ_SIMD for (int l = 0; l < kLanes; ++l) {
    float d = dt[l] + bias[l];
    d = softplus ? fast_softplus(d) : d;
    dt[l] = d;
    du[l] = d * u[l];
  }
}

// Gates y with D * u and silu(z) (when given).
inline void finish_y(float* y, const float* u, const float* dskip, const float* z, bool has_z) {
  MJ_SIMD for (int l = 0; l < kLanes; ++l) {
    float v = y[l] + dskip[l] * u[l];
    y[l] = has_z ? v * silu(z[l]) : v;
  }
}

// Group index of each lane; returns true when the whole block reads one group.
inline bool lane_groups(int64_t d0, int64_t nv, int64_t dim, int64_t ngroups, int64_t* g) {
  const int64_t per_group = dim / ngroups;
  for (int l = 0; l < kLanes; ++l) g[l] = (d0 + std::min<int64_t>(l, nv - 1)) / per_group;
  return g[0] == g[kLanes - 1];
}

// One recurrence step for a block: h = exp(dt A) h + du B;  y = <h, C>.
// Bv/Cv hold the group's B and C for each lane ([N][kLanes]) or, when uniform, just [N].
template <bool kUniform>
inline void scan_step(int64_t N, float (*h)[kLanes], const float (*At)[kLanes], const float* dt,
                      const float* du, const float* Bv, const float* Cv, float* y) {
  for (int l = 0; l < kLanes; ++l) y[l] = 0.0f;
  for (int64_t n = 0; n < N; ++n) {
    MJ_SIMD for (int l = 0; l < kLanes; ++l) {
      const float bn = kUniform ? Bv[n] : Bv[n * kLanes + l];
      const float cn = kUniform ? Cv[n] : Cv[n * kLanes + l];
      const float hn = fast_exp(dt[l] * At[n][l]) * h[n][l] + du[l] * bn;
      h[n][l] = hn;
      y[l] += hn * cn;
    }
  }
}

template <typename T>
inline void gather_bc(const T* base, int64_t group_stride, int64_t N, const int64_t* g, bool uniform,
                      float* out) {
  if (uniform) {
    const T* src = base + g[0] * group_stride;
    for (int64_t n = 0; n < N; ++n) out[n] = to_float(src[n]);
  } else {
    for (int64_t n = 0; n < N; ++n)
      for (int l = 0; l < kLanes; ++l) out[n * kLanes + l] = to_float(base[g[l] * group_stride + n]);
  }
}

template <typename T>
void selective_scan(const SelectiveScanParams& p, int64_t item_begin, int64_t item_end) {
  const int64_t N = p.dstate, D = p.dim;
  const int64_t nblocks = num_channel_blocks(D);
  alignas(64) float h[kMaxDstate][kLanes];
  alignas(64) float At[kMaxDstate][kLanes];
  alignas(64) float Bv[kMaxDstate * kLanes];
  alignas(64) float Cv[kMaxDstate * kLanes];
  for (int64_t item = item_begin; item < item_end; ++item) {
    const int64_t b = item / nblocks;
    const int64_t d0 = (item % nblocks) * kLanes;
    const int64_t nv = std::min<int64_t>(kLanes, D - d0);
    for (int64_t n = 0; n < N; ++n) {
      for (int l = 0; l < kLanes; ++l) {
        const bool on = l < nv;
        At[n][l] = on ? p.A[(d0 + l) * N + n] : 0.0f;
        h[n][l] = (on && p.initial_state) ? p.initial_state[(b * D + d0 + l) * N + n] : 0.0f;
      }
    }
    alignas(64) float dskip[kLanes], bias[kLanes];
    load_param_lanes(p.Dskip ? p.Dskip + d0 : nullptr, nv, 0.0f, dskip);
    load_param_lanes(p.delta_bias ? p.delta_bias + d0 : nullptr, nv, 0.0f, bias);
    int64_t g[kLanes];
    const bool uniform = lane_groups(d0, nv, D, p.ngroups, g);
    const T* u = static_cast<const T*>(p.u) + b * p.u_batch_stride + d0;
    const T* dl = static_cast<const T*>(p.delta) + b * p.u_batch_stride + d0;
    const T* z = p.z ? static_cast<const T*>(p.z) + b * p.u_batch_stride + d0 : nullptr;
    T* y = static_cast<T*>(p.y) + b * p.u_batch_stride + d0;
    const T* Bb = static_cast<const T*>(p.Bm) + b * p.bc_batch_stride;
    const T* Cb = static_cast<const T*>(p.Cm) + b * p.bc_batch_stride;
    for (int64_t t = 0; t < p.seqlen; ++t) {
      const int64_t off = t * p.u_seq_stride;
      alignas(64) float uu[kLanes], dt[kLanes], du[kLanes], zz[kLanes], yy[kLanes];
      load_lanes(u + off, nv, uu);
      load_lanes(dl + off, nv, dt);
      prepare_dt(uu, dt, bias, p.delta_softplus, du);
      gather_bc(Bb + t * p.bc_seq_stride, p.bc_group_stride, N, g, uniform, Bv);
      gather_bc(Cb + t * p.bc_seq_stride, p.bc_group_stride, N, g, uniform, Cv);
      if (uniform) scan_step<true>(N, h, At, dt, du, Bv, Cv, yy);
      else scan_step<false>(N, h, At, dt, du, Bv, Cv, yy);
      if (z) load_lanes(z + off, nv, zz);
      finish_y(yy, uu, dskip, zz, z != nullptr);
      store_lanes(yy, nv, y + off);
    }
    for (int64_t n = 0; n < N; ++n)
      for (int l = 0; l < nv; ++l) p.last_state[(b * D + d0 + l) * N + n] = h[n][l];
  }
}

template <typename T>
void selective_state_update(const StateUpdateParams& p, int64_t item_begin, int64_t item_end) {
  const int64_t N = p.dstate, D = p.dim;
  const int64_t nblocks = num_channel_blocks(D);
  alignas(64) float h[kMaxDstate][kLanes];
  alignas(64) float At[kMaxDstate][kLanes];
  alignas(64) float Bv[kMaxDstate * kLanes];
  alignas(64) float Cv[kMaxDstate * kLanes];
  for (int64_t item = item_begin; item < item_end; ++item) {
    const int64_t b = item / nblocks;
    const int64_t d0 = (item % nblocks) * kLanes;
    const int64_t nv = std::min<int64_t>(kLanes, D - d0);
    const float* s = p.state + (b * D + d0) * N;
    for (int64_t n = 0; n < N; ++n) {
      for (int l = 0; l < kLanes; ++l) {
        const bool on = l < nv;
        At[n][l] = on ? p.A[(d0 + l) * N + n] : 0.0f;
        h[n][l] = on ? s[l * N + n] : 0.0f;
      }
    }
    alignas(64) float dskip[kLanes], bias[kLanes], uu[kLanes], dt[kLanes], du[kLanes], zz[kLanes],
        yy[kLanes];
    load_param_lanes(p.Dskip ? p.Dskip + d0 : nullptr, nv, 0.0f, dskip);
    load_param_lanes(p.dt_bias ? p.dt_bias + d0 : nullptr, nv, 0.0f, bias);
    int64_t g[kLanes];
    const bool uniform = lane_groups(d0, nv, D, p.ngroups, g);
    const int64_t off = b * D + d0;
    load_lanes(static_cast<const T*>(p.x) + off, nv, uu);
    load_lanes(static_cast<const T*>(p.dt) + off, nv, dt);
    prepare_dt(uu, dt, bias, p.dt_softplus, du);
    const int64_t bc_off = b * p.ngroups * N;
    gather_bc(static_cast<const T*>(p.Bm) + bc_off, N, N, g, uniform, Bv);
    gather_bc(static_cast<const T*>(p.Cm) + bc_off, N, N, g, uniform, Cv);
    if (uniform) scan_step<true>(N, h, At, dt, du, Bv, Cv, yy);
    else scan_step<false>(N, h, At, dt, du, Bv, Cv, yy);
    if (p.z) load_lanes(static_cast<const T*>(p.z) + off, nv, zz);
    finish_y(yy, uu, dskip, zz, p.z != nullptr);
    store_lanes(yy, nv, static_cast<T*>(p.y) + off);
    float* ns = p.new_state + (b * D + d0) * N;
    for (int l = 0; l < nv; ++l)
      for (int64_t n = 0; n < N; ++n) ns[l * N + n] = h[n][l];
  }
}

// Causal depthwise conv: a window of the last W inputs per lane slides along the sequence.
template <typename T>
void causal_conv1d(const Conv1dParams& p, int64_t item_begin, int64_t item_end) {
  const int64_t D = p.dim, W = p.width, S = W - 1;
  const int64_t nblocks = num_channel_blocks(D);
  for (int64_t item = item_begin; item < item_end; ++item) {
    const int64_t b = item / nblocks;
    const int64_t d0 = (item % nblocks) * kLanes;
    const int64_t nv = std::min<int64_t>(kLanes, D - d0);
    alignas(64) float w[kMaxConvWidth][kLanes], win[kMaxConvWidth][kLanes], bias[kLanes];
    for (int64_t k = 0; k < W; ++k)
      for (int l = 0; l < kLanes; ++l) w[k][l] = l < nv ? p.weight[(d0 + l) * W + k] : 0.0f;
    load_param_lanes(p.bias ? p.bias + d0 : nullptr, nv, 0.0f, bias);
    // win[0..S-1] holds the S inputs before the current step, oldest first.
    const T* init = p.initial_state ? static_cast<const T*>(p.initial_state) + (b * D + d0) * S : nullptr;
    for (int64_t k = 0; k < S; ++k)
      for (int l = 0; l < kLanes; ++l) win[k][l] = (init && l < nv) ? to_float(init[l * S + k]) : 0.0f;
    const T* x = static_cast<const T*>(p.x) + b * p.seqlen * D + d0;
    T* y = static_cast<T*>(p.y) + b * p.seqlen * D + d0;
    for (int64_t t = 0; t < p.seqlen; ++t) {
      load_lanes(x + t * D, nv, win[S]);
      alignas(64) float acc[kLanes];
      MJ_SIMD for (int l = 0; l < kLanes; ++l) acc[l] = bias[l];
      for (int64_t k = 0; k < W; ++k) {
        MJ_SIMD for (int l = 0; l < kLanes; ++l) acc[l] += w[k][l] * win[k][l];
      }
      if (p.silu) {
        MJ_SIMD for (int l = 0; l < kLanes; ++l) acc[l] = silu(acc[l]);
      }
      store_lanes(acc, nv, y + t * D);
      for (int64_t k = 0; k < S; ++k)
        for (int l = 0; l < kLanes; ++l) win[k][l] = win[k + 1][l];
    }
    // After the loop win[0..S-1] holds the last S inputs (or initial-state entries if L < S).
    T* fin = static_cast<T*>(p.final_state) + (b * D + d0) * S;
    for (int l = 0; l < nv; ++l)
      for (int64_t k = 0; k < S; ++k) fin[l * S + k] = from_float<T>(win[k][l]);
  }
}

template <typename T>
void causal_conv1d_update(const Conv1dUpdateParams& p, int64_t item_begin, int64_t item_end) {
  const int64_t D = p.dim, W = p.width, S = W - 1;
  for (int64_t item = item_begin; item < item_end; ++item) {
    const int64_t b = item / D;
    const int64_t d = item % D;
    const T* s = static_cast<const T*>(p.conv_state) + (b * D + d) * S;
    float win[kMaxConvWidth];
    for (int64_t k = 0; k < S; ++k) win[k] = to_float(s[k]);
    win[S] = to_float(static_cast<const T*>(p.x)[b * D + d]);
    float acc = p.bias ? p.bias[d] : 0.0f;
    for (int64_t k = 0; k < W; ++k) acc += p.weight[d * W + k] * win[k];
    if (p.silu) acc = silu(acc);
    static_cast<T*>(p.y)[b * D + d] = from_float<T>(acc);
    T* ns = static_cast<T*>(p.new_conv_state) + (b * D + d) * S;
    // Store the exact inputs back (shifted), so the state never picks up rounding.
    for (int64_t k = 0; k < S - 1; ++k) ns[k] = s[k + 1];
    if (S > 0) ns[S - 1] = static_cast<const T*>(p.x)[b * D + d];
  }
}

}  // namespace cpu
}  // namespace mamba_jax
