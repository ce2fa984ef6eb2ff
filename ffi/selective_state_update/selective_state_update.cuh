// CUDA kernel of selective_state_update (decode): one step, memory-bound on the float32 state
// (read + write once). Framework-free: SelectiveStateUpdateParams and a cudaStream_t in,
// cudaGetLastError() of the launch out.
//
// tpc lanes share one (batch, channel); each lane owns float4s of state q = j, j + tpc, ... (kVec; their
// loads are unrolled so they are in flight together) or single states, and the lanes' <h, C>
// partials meet through xor shuffles.
#pragma once

#include "common/cuda_common.cuh"
#include "selective_state_update/params.h"

namespace mamba_jax {
namespace cuda {

constexpr int kUpdateThreads = 256;

template <typename T, bool kVec>
__global__ void __launch_bounds__(kUpdateThreads)
selective_state_update_kernel(const SelectiveStateUpdateParams p, int tpc_log2) {
  const int tpc = 1 << tpc_log2;
  const int64_t gid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int j = threadIdx.x & (tpc - 1);
  const int64_t bd = gid >> tpc_log2;  // b * dim + d
  const int64_t D = p.dim, N = p.dstate;
  const bool active = bd < p.batch * D;
  float ypart = 0.0f, xv = 0.0f;
  int64_t d = 0;
  bool pooled_out = false;  // a row whose slot is outside the pool: no state touched, y = 0
  if (active) {
    // 32-bit division when it fits (64-bit division is a long software sequence on the GPU).
    const bool small = p.batch * D <= INT32_MAX;
    const int64_t b = small ? int64_t(uint32_t(bd) / uint32_t(D)) : bd / D;
    d = bd - b * D;
    const int64_t slot = p.state_indices ? p.state_indices[b] : b;
    pooled_out = p.state_indices && (slot < 0 || slot >= p.n_slots);
    const int64_t sd = (pooled_out ? 0 : slot) * D + d;
    const int64_t per_group = D / p.ngroups;
    const int64_t g = small ? int64_t(uint32_t(d) / uint32_t(per_group)) : d / per_group;
    const float* s_in = p.state + sd * N;
    float* s_out = p.new_state + sd * N;  // may be s_in (in place): each element is read before written
    const float* A = p.A + d * N;
    const T* Bp = static_cast<const T*>(p.Bm) + (b * p.ngroups + g) * N;
    const T* Cp = static_cast<const T*>(p.Cm) + (b * p.ngroups + g) * N;
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

// tpc_log2 / block: lanes per (batch, channel) row and threads per block, picked here when negative / 0
// (the checker sweeps them).
template <typename T>
cudaError_t launch_selective_state_update(const SelectiveStateUpdateParams& p, cudaStream_t stream, int tpc_log2 = -1,
                                          int block = 0) {
  if (p.batch == 0 || p.dim == 0) return cudaSuccess;
  auto al = [](const void* q, uintptr_t a) { return (reinterpret_cast<uintptr_t>(q) & (a - 1)) == 0; };
  const bool vec = p.dstate % 4 == 0 && al(p.state, 16) && al(p.new_state, 16) && al(p.A, 16) &&
                   al(p.Bm, 4 * sizeof(T)) && al(p.Cm, 4 * sizeof(T));
  const int64_t rows = p.batch * p.dim;
  // Vector path: two float4 of state per lane where dstate allows (measured on the H200 at B256 D5120
  // N16, state from DRAM, 128-thread blocks: 1, 2, 4 lanes per row = 70.3, 53.0, 81.3 us. Two variants
  // measured slower and removed (benchmarks/NOTES-cuda.md): a lane loading both float4s before its first
  // store, 58.2 us; one float4 per lane with 32 registers (full occupancy), 65.0 us).
  if (tpc_log2 < 0) {
    const int64_t per_lane_items = vec ? p.dstate / 4 : p.dstate;
    const int64_t items_per_lane = vec ? 2 : 1;
    tpc_log2 = 0;
    while ((int64_t(1) << tpc_log2) * items_per_lane < per_lane_items && tpc_log2 < 5) ++tpc_log2;
  }
  // 128 threads per block: measured on the H200 (checker, state from DRAM, D5120 N16, 2 lanes per row)
  // 53.0 us at B256 and 16.0 us at B64 against 57.3 and 17.1 with 256.
  if (block <= 0 || block > kUpdateThreads) block = 128;
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
