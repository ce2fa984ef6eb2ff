// CUDA kernel of selective_state_update (decode): one step, memory-bound on the float32 state
// (read + write once). Framework-free: SelectiveStateUpdateParams and a cudaStream_t in,
// cudaGetLastError() of the launch out.
//
// Two kernels. The tile kernel (dstate = 4 x TPC x NV, the usual sizes) issues every load of a thread
// (its NV float4s of state first, then A, B, C and the row's scalars) before any arithmetic or store, so
// a thread waits for one memory latency. The generic kernel (any dstate) lets tpc lanes share one
// (batch, channel) and walks the row float4 by float4 (or state by state); in place, each load is
// ordered behind the previous store (they may alias). In both, the lanes' <h, C> partials meet
// through xor shuffles.
#pragma once

#include "common/cuda_common.cuh"
#include "selective_state_update/params.h"

namespace mamba_jax {
namespace cuda {

constexpr int kUpdateThreads = 256;

// The row's batch index, channel, state row (slot * dim + channel; slot 0 for a row outside the pool,
// whose state is then read but not written) and B/C group. 32-bit division when it fits.
struct UpdateRow {
  int64_t b, d, sd, g;
  bool pooled_out;
};

MJ_DEVICE UpdateRow update_row(const SelectiveStateUpdateParams& p, int64_t bd) {
  UpdateRow r;
  const int64_t D = p.dim;
  const bool small = p.batch * D <= INT32_MAX;
  r.b = small ? int64_t(uint32_t(bd) / uint32_t(D)) : bd / D;
  r.d = bd - r.b * D;
  const int64_t slot = p.state_indices ? p.state_indices[r.b] : r.b;
  r.pooled_out = p.state_indices && (slot < 0 || slot >= p.n_slots);
  r.sd = (r.pooled_out ? 0 : slot) * D + r.d;
  const int64_t per_group = D / p.ngroups;
  r.g = small ? int64_t(uint32_t(r.d) / uint32_t(per_group)) : r.d / per_group;
  return r;
}

// Tile kernel: TPC lanes per row, lane j owning float4s j, j + TPC, ..., so a warp's k-th state load
// covers 32 / TPC rows x 16 TPC contiguous bytes. Declared with at least 1 block per SM, as measured on
// the H200 (ptxas then gives it 48 registers); capped at 32 registers (8 blocks) it was slower (B256
// 53.6 against 46.0 us).
template <typename T, int TPC, int NV>
__global__ void __launch_bounds__(kUpdateThreads, 1)
selective_state_update_tile_kernel(const SelectiveStateUpdateParams p) {
  constexpr int N = 4 * TPC * NV;
  using V4 = Vec<T, 4>;
  const int64_t gid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int j = threadIdx.x % TPC;
  const int64_t bd = gid / TPC;
  const bool active = bd < p.batch * p.dim;
  float ypart = 0.0f, xv = 0.0f, zv = 0.0f, dskip = 0.0f;
  bool pooled_out = false;
  if (active) {
    const UpdateRow r = update_row(p, bd);
    pooled_out = r.pooled_out;
    const float4* s_in = reinterpret_cast<const float4*>(p.state + r.sd * N) + j;
    float4 h[NV], a[NV];
    V4 bq[NV], cq[NV];
#pragma unroll
    for (int k = 0; k < NV; ++k) h[k] = __ldcs(s_in + k * TPC);
    const float4* A4 = reinterpret_cast<const float4*>(p.A + r.d * N) + j;
    const T* Bp = static_cast<const T*>(p.Bm) + (r.b * p.ngroups + r.g) * N + 4 * j;
    const T* Cp = static_cast<const T*>(p.Cm) + (r.b * p.ngroups + r.g) * N + 4 * j;
#pragma unroll
    for (int k = 0; k < NV; ++k) {
      a[k] = __ldg(A4 + k * TPC);
      bq[k] = load_vec<T, 4>(Bp + 4 * k * TPC);
      cq[k] = load_vec<T, 4>(Cp + 4 * k * TPC);
    }
    xv = to_f32(static_cast<const T*>(p.x)[bd]);
    float dt = to_f32(static_cast<const T*>(p.dt)[bd]) + (p.dt_bias ? p.dt_bias[r.d] : 0.0f);
    zv = p.z ? to_f32(static_cast<const T*>(p.z)[bd]) : 0.0f;
    dskip = p.Dskip ? p.Dskip[r.d] : 0.0f;
    if (p.dt_softplus) dt = softplus(dt);
    const float dt2 = dt * kLog2e, dtx = dt * xv;
#pragma unroll
    for (int k = 0; k < NV; ++k) {
      float hv[4] = {h[k].x, h[k].y, h[k].z, h[k].w};
      const float av[4] = {a[k].x, a[k].y, a[k].z, a[k].w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        hv[i] = fmaf(exp2_decay(dt2 * av[i]), hv[i], dtx * to_f32(bq[k].v[i]));
        ypart = fmaf(hv[i], to_f32(cq[k].v[i]), ypart);
      }
      h[k] = make_float4(hv[0], hv[1], hv[2], hv[3]);
    }
    if (!pooled_out) {
      float4* s_out = reinterpret_cast<float4*>(p.new_state + r.sd * N) + j;
#pragma unroll
      for (int k = 0; k < NV; ++k) __stcs(s_out + k * TPC, h[k]);
    }
  }
#pragma unroll
  for (int off = TPC / 2; off > 0; off >>= 1) ypart += __shfl_xor_sync(0xffffffffu, ypart, off);
  if (active && j == 0) {
    float y = ypart + dskip * xv;
    if (p.z) y *= silu(zv);
    static_cast<T*>(p.y)[bd] = from_f32<T>(pooled_out ? 0.0f : y);
  }
}

template <typename T, bool kVec>
__global__ void __launch_bounds__(kUpdateThreads)
selective_state_update_kernel(const SelectiveStateUpdateParams p, int tpc_log2) {
  const int tpc = 1 << tpc_log2;
  const int64_t gid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int j = threadIdx.x & (tpc - 1);
  const int64_t bd = gid >> tpc_log2;  // b * dim + d
  const int64_t N = p.dstate;
  const bool active = bd < p.batch * p.dim;
  float ypart = 0.0f, xv = 0.0f;
  int64_t d = 0;
  bool pooled_out = false;  // a row whose slot is outside the pool: no state touched, y = 0
  if (active) {
    const UpdateRow r = update_row(p, bd);
    d = r.d;
    pooled_out = r.pooled_out;
    const float* s_in = p.state + r.sd * N;
    float* s_out = p.new_state + r.sd * N;  // may be s_in (in place): each element is read before written
    const float* A = p.A + d * N;
    const T* Bp = static_cast<const T*>(p.Bm) + (r.b * p.ngroups + r.g) * N;
    const T* Cp = static_cast<const T*>(p.Cm) + (r.b * p.ngroups + r.g) * N;
    xv = to_f32(static_cast<const T*>(p.x)[bd]);
    float dt = to_f32(static_cast<const T*>(p.dt)[bd]) + (p.dt_bias ? p.dt_bias[d] : 0.0f);
    if (p.dt_softplus) dt = softplus(dt);
    const float dt2 = dt * kLog2e, dtx = dt * xv;
    if (pooled_out) {
    } else if constexpr (kVec) {
      using V4 = Vec<T, 4>;
#pragma unroll 4
      for (int64_t q = j; q < N / 4; q += tpc) {
        const float4 hs = __ldcs(reinterpret_cast<const float4*>(s_in) + q);
        const float4 a = __ldg(reinterpret_cast<const float4*>(A) + q);
        const V4 bq = load_vec<T, 4>(Bp + 4 * q);
        const V4 cq = load_vec<T, 4>(Cp + 4 * q);
        float hv[4] = {hs.x, hs.y, hs.z, hs.w};
        const float av[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          hv[i] = fmaf(exp2_decay(dt2 * av[i]), hv[i], dtx * to_f32(bq.v[i]));
          ypart = fmaf(hv[i], to_f32(cq.v[i]), ypart);
        }
        __stcs(reinterpret_cast<float4*>(s_out) + q, make_float4(hv[0], hv[1], hv[2], hv[3]));
      }
    } else {
      for (int64_t n = j; n < N; n += tpc) {
        const float hv = fmaf(exp2_decay(dt2 * A[n]), s_in[n], dtx * to_f32(Bp[n]));
        ypart = fmaf(hv, to_f32(Cp[n]), ypart);
        s_out[n] = hv;
      }
    }
  }
  for (int off = tpc / 2; off > 0; off >>= 1) ypart += __shfl_xor_sync(0xffffffffu, ypart, off);
  if (active && j == 0) {
    float y = ypart + (p.Dskip ? p.Dskip[d] * xv : 0.0f);
    if (p.z) y *= silu(to_f32(static_cast<const T*>(p.z)[bd]));
    static_cast<T*>(p.y)[bd] = from_f32<T>(pooled_out ? 0.0f : y);
  }
}

template <typename T, int TPC>
cudaError_t launch_update_tile(const SelectiveStateUpdateParams& p, cudaStream_t stream, int block) {
  const int64_t threads = p.batch * p.dim * TPC;
  const unsigned blocks = static_cast<unsigned>((threads + block - 1) / block);
  switch (p.dstate / (4 * TPC)) {
    case 1: selective_state_update_tile_kernel<T, TPC, 1><<<blocks, block, 0, stream>>>(p); break;
    case 2: selective_state_update_tile_kernel<T, TPC, 2><<<blocks, block, 0, stream>>>(p); break;
    case 4: selective_state_update_tile_kernel<T, TPC, 4><<<blocks, block, 0, stream>>>(p); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

// tpc_log2 / block: lanes per (batch, channel) row and threads per block, picked here when negative / 0;
// tile_ok = false keeps the generic kernel (the checker sweeps them).
template <typename T>
cudaError_t launch_selective_state_update(const SelectiveStateUpdateParams& p, cudaStream_t stream, int tpc_log2 = -1,
                                          int block = 0, bool tile_ok = true) {
  if (p.batch == 0 || p.dim == 0) return cudaSuccess;
  const bool vec = p.dstate % 4 == 0 && aligned_host(p.state, 16) && aligned_host(p.new_state, 16) &&
                   aligned_host(p.A, 16) && aligned_host(p.Bm, 4 * sizeof(T)) && aligned_host(p.Cm, 4 * sizeof(T));
  if (block <= 0 || block > kUpdateThreads) block = 128;
  // Tile kernel: dstate / 4 = TPC x NV with TPC in {1, 2, 4, 8} and NV in {1, 2, 4}.
  const int64_t q4 = p.dstate / 4;
  // A row outside the pool reads slot 0 in the tile kernel (and writes nothing): an empty pool (refused
  // in Python) keeps the generic kernel, which reads nothing for such rows.
  if (vec && tile_ok && !(p.state_indices != nullptr && p.n_slots == 0)) {
    int tl = tpc_log2;
    if (tl < 0) {  // default: 2 float4s per lane where dstate allows
      tl = 0;
      while ((int64_t(2) << tl) < q4 && tl < 3) ++tl;
    }
    const int64_t tpc = int64_t(1) << tl, nv = q4 / tpc;
    if (tl <= 3 && tpc * nv == q4 && (nv == 1 || nv == 2 || nv == 4)) {
      switch (tl) {
        case 0: return launch_update_tile<T, 1>(p, stream, block);
        case 1: return launch_update_tile<T, 2>(p, stream, block);
        case 2: return launch_update_tile<T, 4>(p, stream, block);
        default: return launch_update_tile<T, 8>(p, stream, block);
      }
    }
  }
  const int64_t rows = p.batch * p.dim;
  // Generic kernel, vector path: two float4 of state per lane where dstate allows (measured on the H200
  // at B256 D5120 N16, state from DRAM, 128-thread blocks: 1, 2, 4 lanes per row = 70.3, 53.0, 81.3 us).
  if (tpc_log2 < 0) {
    const int64_t per_lane_items = vec ? q4 : p.dstate;
    const int64_t items_per_lane = vec ? 2 : 1;
    tpc_log2 = 0;
    while ((int64_t(1) << tpc_log2) * items_per_lane < per_lane_items && tpc_log2 < 5) ++tpc_log2;
  }
  const int64_t threads = rows << tpc_log2;
  const unsigned blocks = static_cast<unsigned>((threads + block - 1) / block);
  if (vec)
    selective_state_update_kernel<T, true><<<blocks, block, 0, stream>>>(p, tpc_log2);
  else
    selective_state_update_kernel<T, false><<<blocks, block, 0, stream>>>(p, tpc_log2);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace mamba_jax
