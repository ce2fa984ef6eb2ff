// CUDA kernels of mamba1_step: a Mamba-1 decode step from in_proj's output to out_proj's input in three
// launches instead of the unfused path's conv update, x_proj, split, dt_proj, casts and state update.
//   1. conv_xproj: per block of kStepChannels channels and kStepRows batch rows: the conv update and
//      SiLU (the SSM input u), then u's partial x_proj products over those channels (the block's x_proj
//      rows staged in shared memory once for all its batch rows).
//   2. xproj_reduce: per batch row, the partial products summed over the channel blocks (a fixed
//      order: the result does not depend on scheduling).
//   3. dt_ssm: per block of kDtChannels channels and kStepRows batch rows: dt = dt_proj(dt_low),
//      softplus(dt + dt_bias), the state update, D skip and silu(z) gate.
// u, the x_proj output and dt are rounded to the activation dtype where the unfused path rounds them,
// so the fused step follows the unfused one up to summation order.
#pragma once

#include "causal_conv1d_update/causal_conv1d_update.cuh"
#include "common/cuda_common.cuh"
#include "common/limits.h"
#include "mamba1_step/params.h"

namespace mamba_jax {
namespace cuda {

constexpr int kStepRows = 4;      // batch rows per block of conv_xproj and dt_ssm
constexpr int kStepThreads = 128;  // conv_xproj
// xproj_reduce: kRedCols columns per block, kRedGroups threads per column summing interleaved blocks.
constexpr int kRedCols = 32, kRedGroups = 8;
// dt_ssm: kDtChannels channels per block; kDtLanes threads per channel (dt_proj's rows split between
// them, then the channel's states).
constexpr int kDtChannels = 32, kDtLanes = 8, kDtThreads = kDtChannels * kDtLanes;

template <typename T>
MJ_DEVICE float round_to(float x) { return to_f32(from_f32<T>(x)); }

// Slot of batch row `row` in the pools, or -1 when it is not a slot (the row then touches no state).
MJ_DEVICE int64_t step_slot(const Mamba1StepParams& p, int64_t row) {
  if (!p.state_indices) return row;
  const int64_t s = p.state_indices[row];
  return (s < 0 || s >= p.n_slots) ? -1 : s;
}

template <typename T>
__global__ void __launch_bounds__(kStepThreads) mamba1_step_conv_xproj(const Mamba1StepParams p) {
  extern __shared__ float smem[];
  const int64_t E = p.dim, J = p.cols, nb = p.blocks;
  const int64_t blk = blockIdx.x, c0 = blk * kStepChannels, row0 = int64_t(blockIdx.y) * kStepRows;
  const int nc = static_cast<int>(min(kStepChannels, E - c0));
  const int rows = static_cast<int>(min(int64_t(kStepRows), p.batch - row0));
  float* u_s = smem;                                                // [kStepRows][kStepChannels]
  T* w_s = reinterpret_cast<T*>(smem + kStepRows * kStepChannels);  // [nc][J]
  const T* w_g = static_cast<const T*>(p.x_proj) + c0 * J;  // the block's rows: nc * J contiguous elements
  // The block's x_proj rows go to shared memory in the background (all copies in flight at once)
  // while the conv update runs.
  constexpr int kVec = 16 / sizeof(T);
  if ((reinterpret_cast<uintptr_t>(w_g) & 15u) == 0 && (nc * J) % kVec == 0) {
    for (int64_t i = threadIdx.x; i < nc * J / kVec; i += kStepThreads) cp_async16(w_s + i * kVec, w_g + i * kVec);
    cp_async_commit();
  } else {
    for (int64_t i = threadIdx.x; i < nc * J; i += kStepThreads) w_s[i] = w_g[i];
  }

  const int W = static_cast<int>(p.width), S = W - 1;
  float* u_g = p.u();
  for (int i = threadIdx.x; i < kStepRows * kStepChannels; i += kStepThreads) {
    const int r = i / kStepChannels, cl = i % kStepChannels;
    const int64_t row = row0 + r, c = c0 + cl;
    float u = 0.0f;
    if (r < rows && cl < nc) {
      const int64_t slot = step_slot(p, row);
      if (slot >= 0) {
        const T* s = static_cast<const T*>(p.conv_state) + (slot * E + c) * S;
        T* ns = static_cast<T*>(p.new_conv_state) + (slot * E + c) * S;
        const T xv = static_cast<const T*>(p.xz)[row * 2 * E + c];
        u = round_to<T>(silu(conv_update_channel(s, ns, xv, p.conv_weight + c * W,
                                                 p.conv_bias ? p.conv_bias[c] : 0.0f, W)));
      }
      u_g[row * E + c] = u;
    }
    u_s[i] = u;
  }
  cp_async_wait_all();
  __syncthreads();

  float* partial = p.workspace;
  for (int64_t i = threadIdx.x; i < rows * J; i += kStepThreads) {
    const int r = static_cast<int>(i / J);
    const int64_t j = i - r * J, row = row0 + r;
    const float* u = u_s + r * kStepChannels;
    const T* w = w_s + j;
    float a0 = 0.0f, a1 = 0.0f;  // two chains: the FMAs of one output are not all serial
    if (nc == kStepChannels) {
#pragma unroll 16
      for (int cl = 0; cl < kStepChannels; cl += 2) {
        a0 = fmaf(u[cl], to_f32(w[cl * J]), a0);
        a1 = fmaf(u[cl + 1], to_f32(w[(cl + 1) * J]), a1);
      }
    } else {
      for (int cl = 0; cl < nc; ++cl) a0 = fmaf(u[cl], to_f32(w[cl * J]), a0);
    }
    partial[(row * nb + blk) * J + j] = a0 + a1;
  }
}

// x_proj's output: the partials of the channel blocks summed in a fixed order (thread g of a column
// sums blocks g, g + kRedGroups, ...; then the kRedGroups sums in order), rounded to T.
template <typename T>
__global__ void __launch_bounds__(kRedCols * kRedGroups) mamba1_step_xproj_reduce(const Mamba1StepParams p) {
  __shared__ float sums[kRedGroups][kRedCols];
  const int64_t J = p.cols, nb = p.blocks, row = blockIdx.y;
  const int cl = threadIdx.x % kRedCols, g = threadIdx.x / kRedCols;
  const int64_t j = int64_t(blockIdx.x) * kRedCols + cl;
  float acc = 0.0f;
  if (j < J) {
    const float* src = p.workspace + row * nb * J + j;
    constexpr int kBatch = 8;  // loads in flight per thread
    for (int64_t b0 = g; b0 < nb; b0 += kBatch * kRedGroups) {
      float v[kBatch];
#pragma unroll
      for (int k = 0; k < kBatch; ++k) {
        const int64_t b = b0 + k * kRedGroups;
        v[k] = b < nb ? src[b * J] : 0.0f;
      }
#pragma unroll
      for (int k = 0; k < kBatch; ++k) acc += v[k];
    }
  }
  sums[g][cl] = acc;
  __syncthreads();
  if (g == 0 && j < J) {
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < kRedGroups; ++k) s += sums[k][cl];
    p.x_dbl()[row * J + j] = round_to<T>(s);
  }
}

// Per block of kDtChannels channels and kStepRows batch rows: dt_proj (each of a channel's kDtLanes
// threads sums a contiguous part of dt_rank, its weights loaded once for all the block's rows), softplus,
// then the state update with the channel's kDtLanes threads on interleaved states, D and the gate.
template <typename T>
__global__ void __launch_bounds__(kDtThreads) mamba1_step_dt_ssm(const Mamba1StepParams p) {
  extern __shared__ float sm[];
  const int64_t E = p.dim, N = p.dstate, R = p.dt_rank, J = p.cols;
  const int64_t c0 = int64_t(blockIdx.x) * kDtChannels, row0 = int64_t(blockIdx.y) * kStepRows;
  const int rows = static_cast<int>(min(int64_t(kStepRows), p.batch - row0));
  float* dbc = sm;                                     // [kStepRows][J]: dt_low, B, C of the rows
  float* part = dbc + kStepRows * J;                   // [kDtLanes][kStepRows][kDtChannels]
  float* dt_s = part + kDtLanes * kStepRows * kDtChannels;  // [kStepRows][kDtChannels]
  float* u_s = dt_s + kStepRows * kDtChannels;               // [kStepRows][kDtChannels]
  const int tid = threadIdx.x;
  const float* x_dbl = p.x_dbl() + row0 * J;
  for (int64_t i = tid; i < rows * J; i += kDtThreads) dbc[i] = x_dbl[i];
  if (tid < kStepRows * kDtChannels) {
    const int r = tid / kDtChannels, cl = tid % kDtChannels;
    if (r < rows && c0 + cl < E) u_s[tid] = p.u()[(row0 + r) * E + c0 + cl];
  }
  __syncthreads();

  {  // dt_proj: thread (g, cl) sums dt_rank rows [g * Rg, (g + 1) * Rg) for channel c0 + cl
    const int cl = tid % kDtChannels, g = tid / kDtChannels;
    const int64_t c = c0 + cl, Rg = (R + kDtLanes - 1) / kDtLanes;
    const int64_t r_end = min(R, (g + 1) * Rg);
    float acc[kStepRows] = {};
    if (c < E) {
      const T* w = static_cast<const T*>(p.dt_proj) + c;
      constexpr int kBatch = 8;  // weight loads in flight per thread
      for (int64_t r0 = g * Rg; r0 < r_end; r0 += kBatch) {
        float wv[kBatch];
#pragma unroll
        for (int k = 0; k < kBatch; ++k) wv[k] = r0 + k < r_end ? to_f32(w[(r0 + k) * E]) : 0.0f;
#pragma unroll
        for (int k = 0; k < kBatch; ++k) {
          if (r0 + k >= r_end) break;
#pragma unroll
          for (int r = 0; r < kStepRows; ++r)
            if (r < rows) acc[r] = fmaf(dbc[r * J + r0 + k], wv[k], acc[r]);
        }
      }
    }
#pragma unroll
    for (int r = 0; r < kStepRows; ++r) part[(g * kStepRows + r) * kDtChannels + cl] = acc[r];
  }
  __syncthreads();
  if (tid < kStepRows * kDtChannels) {
    const int r = tid / kDtChannels, cl = tid % kDtChannels;
    const int64_t c = c0 + cl;
    if (r < rows && c < E) {
      float s = 0.0f;
#pragma unroll
      for (int g = 0; g < kDtLanes; ++g) s += part[(g * kStepRows + r) * kDtChannels + cl];
      dt_s[r * kDtChannels + cl] = softplus(round_to<T>(s) + p.dt_bias[c]);
    }
  }
  __syncthreads();

  // The state update: thread (ch, lane) owns states lane, lane + kDtLanes, ... of channel c0 + ch;
  // the lanes of a channel are kDtLanes consecutive threads of one warp (their <h, C> partials meet
  // through xor shuffles).
  const int lane = tid % kDtLanes, ch = tid / kDtLanes;
  const int64_t c = c0 + ch;
  const bool live = c < E;
  const float* A = p.A + (live ? c : 0) * N;
  for (int r = 0; r < rows; ++r) {
    const int64_t row = row0 + r, slot = live ? step_slot(p, row) : -1;
    float ypart = 0.0f, u = 0.0f;
    if (slot >= 0) {
      u = u_s[r * kDtChannels + ch];
      const float dt = dt_s[r * kDtChannels + ch], dt2 = dt * kLog2e, dtu = dt * u;
      const float* Bv = dbc + r * J + R;
      const float* Cv = Bv + N;
      const float* h_in = p.ssm_state + (slot * E + c) * N;
      float* h_out = p.new_ssm_state + (slot * E + c) * N;  // may be h_in: each state is read, then written
      constexpr int kBatch = 4;  // states per lane loaded together, before any of them is written
      for (int64_t n0 = lane; n0 < N; n0 += kBatch * kDtLanes) {
        float hv[kBatch], av[kBatch];
#pragma unroll
        for (int k = 0; k < kBatch; ++k) {
          const int64_t n = n0 + k * kDtLanes;
          hv[k] = n < N ? h_in[n] : 0.0f;
          av[k] = n < N ? A[n] : 0.0f;
        }
#pragma unroll
        for (int k = 0; k < kBatch; ++k) {
          const int64_t n = n0 + k * kDtLanes;
          if (n >= N) break;
          const float h = fmaf(exp2_decay(dt2 * av[k]), hv[k], dtu * Bv[n]);
          h_out[n] = h;
          ypart = fmaf(h, Cv[n], ypart);
        }
      }
    }
#pragma unroll
    for (int off = kDtLanes / 2; off > 0; off >>= 1) ypart += __shfl_xor_sync(0xffffffffu, ypart, off);
    if (live && lane == 0) {
      T* y = static_cast<T*>(p.y) + row * E + c;
      if (slot < 0) {
        *y = from_f32<T>(0.0f);
      } else {
        float acc = p.D ? fmaf(p.D[c], u, ypart) : ypart;
        acc *= silu(to_f32(static_cast<const T*>(p.xz)[row * 2 * E + E + c]));
        *y = from_f32<T>(acc);
      }
    }
  }
}

inline size_t mamba1_step_dt_ssm_smem(int64_t J) {
  return sizeof(float) * (kStepRows * J + (kDtLanes + 2) * kStepRows * kDtChannels);
}

template <typename T>
cudaError_t launch_mamba1_step(const Mamba1StepParams& p, cudaStream_t stream) {
  if (p.batch == 0 || p.dim == 0) return cudaSuccess;
  const int64_t J = p.cols, nb = p.blocks;
  const unsigned row_blocks = static_cast<unsigned>((p.batch + kStepRows - 1) / kStepRows);
  const size_t smem1 = sizeof(float) * kStepRows * kStepChannels + sizeof(T) * kStepChannels * J;
  cudaError_t e = cudaFuncSetAttribute(mamba1_step_conv_xproj<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(smem1));
  if (e != cudaSuccess) return e;
  const size_t smem3 = mamba1_step_dt_ssm_smem(J);
  e = cudaFuncSetAttribute(mamba1_step_dt_ssm<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem3));
  if (e != cudaSuccess) return e;
  mamba1_step_conv_xproj<T><<<dim3(static_cast<unsigned>(nb), row_blocks), kStepThreads, smem1, stream>>>(p);
  const dim3 g2(static_cast<unsigned>((J + kRedCols - 1) / kRedCols), static_cast<unsigned>(p.batch));
  mamba1_step_xproj_reduce<T><<<g2, kRedCols * kRedGroups, 0, stream>>>(p);
  const dim3 g3(static_cast<unsigned>((p.dim + kDtChannels - 1) / kDtChannels), row_blocks);
  mamba1_step_dt_ssm<T><<<g3, kDtThreads, smem3, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace mamba_jax
