// CUDA kernel of ssd_state_update (one Mamba-2 decode step), framework-free: it reads
// SsdStateUpdateParams (params.h, where the semantics are spelled out) and launches on the stream it
// is given.
//
// Memory-bound: the float32 state [B, H, P, N] is read and written once (in place when new_state
// aliases state); x, dt, B, C, z, y are ~1/N of that. A row (b, h, p) of N state values is spread over
// LPR lanes of a warp, each holding 4 * VPT consecutive values as float4s, and a thread takes RPT rows
// (all its loads issued before the first use); y_row = sum_n h[n] C[n] is a shuffle reduction over
// the LPR lanes. The decay exp(dt A) uses exp2_decay, accurate near 1 where errors would compound
// over many decode steps. Shapes that do not fit a vector layout (N not one of 16, 32, 64, 128, 256,
// or unaligned pointers) take a scalar path with one warp per row.
#pragma once

#include <cstdint>

#include "common/cuda_common.cuh"
#include "ssd_state_update/params.h"

namespace mamba_jax {
namespace cuda {
namespace ssd_update {

constexpr int kThreads = 256;

template <typename T>
MJ_DEVICE float head_dt(const SsdStateUpdateParams& p, int64_t b, int64_t h) {
  float d = to_f32(static_cast<const T*>(p.dt)[b * p.nheads + h]);
  if (p.dt_bias) d += p.dt_bias[h];
  if (p.dt_softplus) d = softplus(d);
  return fminf(fmaxf(d, p.dt_min), p.dt_max);
}

template <typename T>
MJ_DEVICE float4 load4(const T* src) {
  const Vec<T, 4> v = load_vec<T, 4>(src);
  return make_float4(to_f32(v.v[0]), to_f32(v.v[1]), to_f32(v.v[2]), to_f32(v.v[3]));
}

template <typename T, int VPT, int LPR, int RPT>
__global__ void __launch_bounds__(kThreads) ssd_state_update_vec(const SsdStateUpdateParams p, int64_t rows) {
  constexpr int kN = 4 * VPT * LPR;
  const int64_t gtid = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int sub = static_cast<int>(gtid % LPR);
  const int64_t first = (gtid / LPR) * RPT;
  const int64_t P = p.headdim, H = p.nheads;
  const int64_t heads_per_group = H / p.ngroups;

  float4 s[RPT][VPT], bv[RPT][VPT], cv[RPT][VPT];
  float xv[RPT], dv[RPT], av[RPT];
#pragma unroll
  for (int r = 0; r < RPT; ++r) {
    const int64_t row = first + r < rows ? first + r : rows - 1;  // duplicate the last row; not stored
    const int64_t bh = row / P, b = bh / H, h = bh % H;
    const int64_t grp = h / heads_per_group;
    const float* st = p.state + row * kN;
    const T* Bg = static_cast<const T*>(p.Bm) + (b * p.ngroups + grp) * kN;
    const T* Cg = static_cast<const T*>(p.Cm) + (b * p.ngroups + grp) * kN;
#pragma unroll
    for (int v = 0; v < VPT; ++v) {
      const int n = 4 * (sub + LPR * v);
      s[r][v] = *reinterpret_cast<const float4*>(st + n);
      bv[r][v] = load4(Bg + n);
      cv[r][v] = load4(Cg + n);
    }
    xv[r] = to_f32(static_cast<const T*>(p.x)[row]);
    dv[r] = head_dt<T>(p, b, h);
    av[r] = p.A[h];
  }
#pragma unroll
  for (int r = 0; r < RPT; ++r) {
    const int64_t row = first + r;
    const float decay = exp2_decay(dv[r] * av[r] * kLog2e);
    const float dx = dv[r] * xv[r];
    float acc = 0.0f;
#pragma unroll
    for (int v = 0; v < VPT; ++v) {
      float4 n4;
      n4.x = fmaf(decay, s[r][v].x, dx * bv[r][v].x);
      n4.y = fmaf(decay, s[r][v].y, dx * bv[r][v].y);
      n4.z = fmaf(decay, s[r][v].z, dx * bv[r][v].z);
      n4.w = fmaf(decay, s[r][v].w, dx * bv[r][v].w);
      acc = fmaf(n4.x, cv[r][v].x, acc);
      acc = fmaf(n4.y, cv[r][v].y, acc);
      acc = fmaf(n4.z, cv[r][v].z, acc);
      acc = fmaf(n4.w, cv[r][v].w, acc);
      if (row < rows) *reinterpret_cast<float4*>(p.new_state + row * kN + 4 * (sub + LPR * v)) = n4;
    }
#pragma unroll
    for (int o = LPR / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o, LPR);
    if (sub == 0 && row < rows) {
      const int64_t hp = row % (H * P);  // h * P + p
      float y = acc;
      if (p.Dskip) y = fmaf(p.Dskip[hp], xv[r], y);
      if (p.z) y *= silu(to_f32(static_cast<const T*>(p.z)[row]));
      static_cast<T*>(p.y)[row] = from_f32<T>(y);
    }
  }
}

// Any dstate, any alignment: one warp per row.
template <typename T>
__global__ void __launch_bounds__(kThreads) ssd_state_update_scalar(const SsdStateUpdateParams p, int64_t rows) {
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;  // whole warps leave together
  const int64_t N = p.dstate, P = p.headdim, H = p.nheads;
  const int64_t bh = row / P, b = bh / H, h = bh % H;
  const int64_t grp = h / (H / p.ngroups);
  const T* Bg = static_cast<const T*>(p.Bm) + (b * p.ngroups + grp) * N;
  const T* Cg = static_cast<const T*>(p.Cm) + (b * p.ngroups + grp) * N;
  const float d = head_dt<T>(p, b, h);
  const float decay = exp2_decay(d * p.A[h] * kLog2e);
  const float xv = to_f32(static_cast<const T*>(p.x)[row]);
  const float dx = d * xv;
  float acc = 0.0f;
  for (int64_t n = lane; n < N; n += 32) {
    const float v = fmaf(decay, p.state[row * N + n], dx * to_f32(Bg[n]));
    p.new_state[row * N + n] = v;
    acc = fmaf(v, to_f32(Cg[n]), acc);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (lane == 0) {
    float y = acc;
    if (p.Dskip) y = fmaf(p.Dskip[row % (H * P)], xv, y);
    if (p.z) y *= silu(to_f32(static_cast<const T*>(p.z)[row]));
    static_cast<T*>(p.y)[row] = from_f32<T>(y);
  }
}

template <typename T, int VPT, int LPR>
cudaError_t launch_vec(const SsdStateUpdateParams& p, int64_t rows, cudaStream_t stream) {
  // Two rows per thread once there are enough rows to fill the GPU twice over with one.
  const bool two = rows * LPR > (int64_t{1} << 19);
  const int64_t threads = two ? ((rows + 1) / 2) * LPR : rows * LPR;
  const unsigned blocks = static_cast<unsigned>((threads + kThreads - 1) / kThreads);
  if (two)
    ssd_state_update_vec<T, VPT, LPR, 2><<<blocks, kThreads, 0, stream>>>(p, rows);
  else
    ssd_state_update_vec<T, VPT, LPR, 1><<<blocks, kThreads, 0, stream>>>(p, rows);
  return cudaGetLastError();
}

}  // namespace ssd_update

template <typename T>
cudaError_t launch_ssd_state_update(const SsdStateUpdateParams& p, cudaStream_t stream) {
  using namespace ssd_update;
  const int64_t rows = p.batch * p.nheads * p.headdim;
  if (rows == 0 || p.dstate == 0) return cudaSuccess;
  const int64_t N = p.dstate;
  const bool aligned = aligned16_host(p.state) && aligned16_host(p.new_state) &&
                       (reinterpret_cast<uintptr_t>(p.Bm) % (4 * sizeof(T))) == 0 &&
                       (reinterpret_cast<uintptr_t>(p.Cm) % (4 * sizeof(T))) == 0;
  if (aligned) {
    if (N == 16) return launch_vec<T, 1, 4>(p, rows, stream);
    if (N == 32) return launch_vec<T, 1, 8>(p, rows, stream);
    if (N == 64) return launch_vec<T, 1, 16>(p, rows, stream);
    if (N == 128) return launch_vec<T, 1, 32>(p, rows, stream);
    if (N == 256) return launch_vec<T, 2, 32>(p, rows, stream);
  }
  const unsigned blocks = static_cast<unsigned>((rows * 32 + kThreads - 1) / kThreads);
  ssd_state_update_scalar<T><<<blocks, kThreads, 0, stream>>>(p, rows);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace mamba_jax
