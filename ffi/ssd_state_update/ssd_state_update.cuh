// CUDA kernel of ssd_state_update (one Mamba-2 decode step), framework-free: it reads
// SsdStateUpdateParams (params.h, where the semantics are spelled out) and launches on the stream it
// is given.
//
// Memory-bound: the float32 state [B, H, P, N] is read and written once (in place when new_state
// aliases state); x, dt, B, C, z, y are ~1/N of that. A row (b, h, p) of N state values is spread over
// LPR lanes of a warp, each holding 4 * VPT consecutive values as float4s, and a thread takes RPT rows
// (all its loads issued before the first use); y_row = sum_n h[n] C[n] is a shuffle reduction over
// the LPR lanes. A block works on rows of one (batch, head), so dt, B and C are per block and row
// indices are 32-bit (64-bit divisions are emulated: they once cost more than the memory traffic). The decay exp(dt A) uses exp2_decay, accurate near 1 where errors would compound
// over many decode steps. Shapes that do not fit a vector layout (N not one of 16, 32, 64, 128, 256,
// or unaligned pointers) take a scalar path with one warp per row.
//
// Both kernels load what only the caller provides (state rows, dt, dt_bias, A, D, z) before x, B and C.
// With PDL = true (mamba2_step: x, B and C are the output of the kernel before, and this one is its
// programmatic dependent) pdl_wait() sits between the two groups of loads.
#pragma once

#include <cstdint>

#include "common/cuda_common.cuh"
#include "common/limits.h"
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

// Grid: x = batch * nheads (one (b, h) per x), y = blocks over that head's P rows.
template <typename T, int VPT, int LPR, int RPT, bool PDL>
__global__ void __launch_bounds__(kThreads) ssd_state_update_vec(const SsdStateUpdateParams p) {
  constexpr int kN = 4 * VPT * LPR;
  const int P = static_cast<int>(p.headdim), H = static_cast<int>(p.nheads);
  const unsigned bh = blockIdx.x;
  const int h = static_cast<int>(bh % H), b = static_cast<int>(bh / H);
  const int grp = h / (H / static_cast<int>(p.ngroups));
  const int tid = blockIdx.y * kThreads + threadIdx.x;
  const int sub = tid % LPR;
  const int first = (tid / LPR) * RPT;  // row within the head
  const float d = head_dt<T>(p, b, h);
  const float decay = exp2_decay(d * p.A[h] * kLog2e);
  const int64_t base = static_cast<int64_t>(bh) * P;  // first row of this (b, h) in z and y
  const int64_t slot = p.state_indices ? p.state_indices[b] : b;
  if (p.state_indices && (slot < 0 || slot >= p.n_slots)) {  // not a slot of the pool (the whole block): no state, y = 0
    for (int r = 0; r < RPT; ++r)
      if (sub == 0 && first + r < P) static_cast<T*>(p.y)[base + first + r] = from_f32<T>(0.0f);
    return;
  }
  const int64_t sbase = (slot * H + h) * static_cast<int64_t>(P);  // first state row of this (b, h)

  float4 s[RPT][VPT], bv[VPT], cv[VPT];
  float xv[RPT], zv[RPT], dk[RPT];
#pragma unroll
  for (int r = 0; r < RPT; ++r) {
    const int pr = first + r < P ? first + r : P - 1;  // duplicate the last row; not stored
    const float* st = p.state + (sbase + pr) * kN;
#pragma unroll
    for (int v = 0; v < VPT; ++v) s[r][v] = *reinterpret_cast<const float4*>(st + 4 * (sub + LPR * v));
    zv[r] = p.z ? to_f32(static_cast<const T*>(p.z)[base + pr]) : 0.0f;
    dk[r] = p.Dskip ? p.Dskip[h * P + pr] : 0.0f;
  }
  if constexpr (PDL) pdl_wait();
  const T* Bg = static_cast<const T*>(p.Bm) + b * p.bc_stride + grp * kN;
  const T* Cg = static_cast<const T*>(p.Cm) + b * p.bc_stride + grp * kN;
  const T* xh = static_cast<const T*>(p.x) + b * p.x_stride + static_cast<int64_t>(h) * P;
#pragma unroll
  for (int v = 0; v < VPT; ++v) {
    const int n = 4 * (sub + LPR * v);
    bv[v] = load4(Bg + n);
    cv[v] = load4(Cg + n);
  }
#pragma unroll
  for (int r = 0; r < RPT; ++r) xv[r] = to_f32(xh[first + r < P ? first + r : P - 1]);
#pragma unroll
  for (int r = 0; r < RPT; ++r) {
    const int pr = first + r;
    const float dx = d * xv[r];
    float acc = 0.0f;
#pragma unroll
    for (int v = 0; v < VPT; ++v) {
      float4 n4;
      n4.x = fmaf(decay, s[r][v].x, dx * bv[v].x);
      n4.y = fmaf(decay, s[r][v].y, dx * bv[v].y);
      n4.z = fmaf(decay, s[r][v].z, dx * bv[v].z);
      n4.w = fmaf(decay, s[r][v].w, dx * bv[v].w);
      acc = fmaf(n4.x, cv[v].x, acc);
      acc = fmaf(n4.y, cv[v].y, acc);
      acc = fmaf(n4.z, cv[v].z, acc);
      acc = fmaf(n4.w, cv[v].w, acc);
      if (pr < P) *reinterpret_cast<float4*>(p.new_state + (sbase + pr) * kN + 4 * (sub + LPR * v)) = n4;
    }
#pragma unroll
    for (int o = LPR / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o, LPR);
    if (sub == 0 && pr < P) {
      float y = fmaf(dk[r], xv[r], acc);
      if (p.z) y *= silu(zv[r]);
      static_cast<T*>(p.y)[base + pr] = from_f32<T>(y);
    }
  }
}

// Any dstate, any alignment: one warp per row; lane l holds states l, l + 32, ... in registers.
constexpr int kScalarStates = (kMaxDstate + 31) / 32;

template <typename T, bool PDL>
__global__ void __launch_bounds__(kThreads) ssd_state_update_scalar(const SsdStateUpdateParams p, int64_t rows) {
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;  // whole warps leave together
  const int64_t N = p.dstate, P = p.headdim, H = p.nheads;
  const int64_t bh = row / P, b = bh / H, h = bh % H;
  const int64_t slot = p.state_indices ? p.state_indices[b] : b;
  if (p.state_indices && (slot < 0 || slot >= p.n_slots)) {  // not a slot of the pool: no state touched, y = 0
    if (lane == 0) static_cast<T*>(p.y)[row] = from_f32<T>(0.0f);
    return;
  }
  const int64_t srow = (slot * H + h) * P + row % P;  // this row's state row in the pool
  const float d = head_dt<T>(p, b, h);
  const float decay = exp2_decay(d * p.A[h] * kLog2e);
  float sv[kScalarStates];
#pragma unroll
  for (int k = 0; k < kScalarStates; ++k) {
    const int64_t n = lane + 32 * k;
    sv[k] = n < N ? p.state[srow * N + n] : 0.0f;
  }
  const float zv = p.z ? to_f32(static_cast<const T*>(p.z)[row]) : 0.0f;
  const float dk = p.Dskip ? p.Dskip[row % (H * P)] : 0.0f;
  if constexpr (PDL) pdl_wait();
  const int64_t grp = h / (H / p.ngroups);
  const T* Bg = static_cast<const T*>(p.Bm) + b * p.bc_stride + grp * N;
  const T* Cg = static_cast<const T*>(p.Cm) + b * p.bc_stride + grp * N;
  const float xv = to_f32(static_cast<const T*>(p.x)[b * p.x_stride + h * P + row % P]);
  const float dx = d * xv;
  float acc = 0.0f;
#pragma unroll
  for (int k = 0; k < kScalarStates; ++k) {
    const int64_t n = lane + 32 * k;
    if (n < N) {
      const float v = fmaf(decay, sv[k], dx * to_f32(Bg[n]));
      p.new_state[srow * N + n] = v;
      acc = fmaf(v, to_f32(Cg[n]), acc);
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (lane == 0) {
    float y = acc;
    if (p.Dskip) y = fmaf(dk, xv, y);
    if (p.z) y *= silu(zv);
    static_cast<T*>(p.y)[row] = from_f32<T>(y);
  }
}

// kernel<<<grid, kThreads, 0, stream>>>(args...), as a programmatic dependent launch when PDL.
template <bool PDL, typename... KArgs, typename... Args>
cudaError_t launch(void (*kernel)(KArgs...), dim3 grid, cudaStream_t stream, Args... args) {
  if constexpr (PDL) {
    return launch_pdl(kernel, grid, dim3(kThreads), 0, stream, args...);
  } else {
    kernel<<<grid, kThreads, 0, stream>>>(args...);
    return cudaGetLastError();
  }
}

template <typename T, int VPT, int LPR, bool PDL>
cudaError_t launch_vec(const SsdStateUpdateParams& p, cudaStream_t stream) {
  // Two rows per thread once there are enough rows to fill the GPU twice over with one.
  const int64_t rows = p.batch * p.nheads * p.headdim;
  const int rpt = rows * LPR > (int64_t{1} << 19) ? 2 : 1;
  const int64_t threads = ((p.headdim + rpt - 1) / rpt) * LPR;  // per (b, h)
  const dim3 grid(static_cast<unsigned>(p.batch * p.nheads), static_cast<unsigned>((threads + kThreads - 1) / kThreads));
  if (rpt == 2) return launch<PDL>(ssd_state_update_vec<T, VPT, LPR, 2, PDL>, grid, stream, p);
  return launch<PDL>(ssd_state_update_vec<T, VPT, LPR, 1, PDL>, grid, stream, p);
}

}  // namespace ssd_update

// PDL: launched as a programmatic dependent of the kernel before it on the stream, which writes x, B
// and C (mamba2_step).
template <typename T, bool PDL = false>
cudaError_t launch_ssd_state_update(const SsdStateUpdateParams& p, cudaStream_t stream) {
  using namespace ssd_update;
  const int64_t rows = p.batch * p.nheads * p.headdim;
  if (rows == 0 || p.dstate == 0) return cudaSuccess;
  const int64_t N = p.dstate;
  const bool aligned = aligned16_host(p.state) && aligned16_host(p.new_state) &&
                       (reinterpret_cast<uintptr_t>(p.Bm) % (4 * sizeof(T))) == 0 &&
                       (reinterpret_cast<uintptr_t>(p.Cm) % (4 * sizeof(T))) == 0 && p.bc_stride % 4 == 0;
  // The vector kernel indexes rows of one head in 32 bits and puts batch * nheads on grid.x.
  const bool fits = p.headdim * p.dstate < (int64_t{1} << 30) && p.batch * p.nheads < (int64_t{1} << 31);
  if (aligned && fits) {
    if (N == 16) return launch_vec<T, 1, 4, PDL>(p, stream);
    if (N == 32) return launch_vec<T, 1, 8, PDL>(p, stream);
    if (N == 64) return launch_vec<T, 1, 16, PDL>(p, stream);
    if (N == 128) return launch_vec<T, 1, 32, PDL>(p, stream);
    if (N == 256) return launch_vec<T, 2, 32, PDL>(p, stream);
  }
  const unsigned blocks = static_cast<unsigned>((rows * 32 + kThreads - 1) / kThreads);
  return launch<PDL>(ssd_state_update_scalar<T, PDL>, dim3(blocks), stream, p, rows);
}

}  // namespace cuda
}  // namespace mamba_jax
