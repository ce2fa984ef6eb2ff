// CUDA kernels of mamba1_step: a Mamba-1 decode step from in_proj's output to out_proj's input in three
// launches instead of the unfused path's conv update, x_proj, split, dt_proj, casts and state update.
//   1. conv_xproj: per block of kStepChannels channels and kStepRows batch rows: the conv update and
//      SiLU (the SSM input u), then u's partial x_proj products over those channels (the block's x_proj
//      rows staged in shared memory once for all its batch rows).
//   2. xproj_reduce: per batch row, the partial products summed over the channel blocks (a fixed
//      order: the result does not depend on scheduling).
//   3. dt_ssm: per (channel block, batch row): dt = dt_proj(dt_low), softplus(dt + dt_bias), the state
//      update, D skip and silu(z) gate.
// u, the x_proj output and dt are rounded to the activation dtype where the unfused path rounds them,
// so the fused step follows the unfused one up to summation order.
#pragma once

#include "causal_conv1d_update/causal_conv1d_update.cuh"
#include "common/cuda_common.cuh"
#include "common/limits.h"
#include "mamba1_step/params.h"

namespace mamba_jax {
namespace cuda {

constexpr int kStepRows = 4;      // batch rows per block of conv_xproj
constexpr int kStepThreads = 128;

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
  float* u_s = smem;                                           // [kStepRows][kStepChannels]
  T* w_s = reinterpret_cast<T*>(smem + kStepRows * kStepChannels);  // [nc][J]
  const T* w_g = static_cast<const T*>(p.x_proj) + c0 * J;  // the block's rows: nc * J contiguous elements
  constexpr int kVec = 16 / sizeof(T);
  if ((reinterpret_cast<uintptr_t>(w_g) & 15u) == 0 && (nc * J) % kVec == 0) {
    const uint4* src = reinterpret_cast<const uint4*>(w_g);
    uint4* dst = reinterpret_cast<uint4*>(w_s);
    for (int64_t i = threadIdx.x; i < nc * J / kVec; i += kStepThreads) dst[i] = src[i];
  } else {
    for (int64_t i = threadIdx.x; i < nc * J; i += kStepThreads) w_s[i] = w_g[i];
  }

  const int W = static_cast<int>(p.width), S = W - 1;
  float* u_g = p.workspace + p.batch * (nb * J + J);
  for (int i = threadIdx.x; i < kStepRows * kStepChannels; i += kStepThreads) {
    const int r = i / kStepChannels, cl = i % kStepChannels;
    const int64_t row = row0 + r, c = c0 + cl;
    float u = 0.0f;
    if (row < p.batch && cl < nc) {
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
  __syncthreads();

  float* partial = p.workspace;
  for (int64_t i = threadIdx.x; i < kStepRows * J; i += kStepThreads) {
    const int r = static_cast<int>(i / J);
    const int64_t j = i % J, row = row0 + r;
    if (row >= p.batch) continue;
    const float* u = u_s + r * kStepChannels;
    float acc = 0.0f;
    for (int cl = 0; cl < nc; ++cl) acc = fmaf(u[cl], to_f32(w_s[cl * J + j]), acc);
    partial[(row * nb + blk) * J + j] = acc;
  }
}

template <typename T>
__global__ void __launch_bounds__(kStepThreads) mamba1_step_xproj_reduce(const Mamba1StepParams p) {
  const int64_t J = p.cols, nb = p.blocks, row = blockIdx.y;
  const int64_t j = int64_t(blockIdx.x) * kStepThreads + threadIdx.x;
  if (j >= J) return;
  const float* partial = p.workspace + row * nb * J + j;
  float acc = 0.0f;
  for (int64_t b = 0; b < nb; ++b) acc += partial[b * J];
  p.workspace[p.batch * nb * J + row * J + j] = round_to<T>(acc);
}

template <typename T>
__global__ void __launch_bounds__(kStepThreads) mamba1_step_dt_ssm(const Mamba1StepParams p) {
  extern __shared__ float dbc[];  // [J]: dt_low, B, C of this row
  const int64_t E = p.dim, N = p.dstate, R = p.dt_rank, J = p.cols, nb = p.blocks;
  const int64_t row = blockIdx.y, c = int64_t(blockIdx.x) * kStepThreads + threadIdx.x;
  const float* x_dbl = p.workspace + p.batch * nb * J + row * J;
  for (int64_t i = threadIdx.x; i < J; i += kStepThreads) dbc[i] = x_dbl[i];
  __syncthreads();
  if (c >= E) return;
  T* y = static_cast<T*>(p.y) + row * E + c;
  const int64_t slot = step_slot(p, row);
  if (slot < 0) {
    *y = from_f32<T>(0.0f);
    return;
  }
  const T* wdt = static_cast<const T*>(p.dt_proj) + c;
  float dt = 0.0f;
#pragma unroll 8
  for (int64_t r = 0; r < R; ++r) dt = fmaf(dbc[r], to_f32(wdt[r * E]), dt);
  dt = softplus(round_to<T>(dt) + p.dt_bias[c]);
  const float u = p.workspace[p.batch * (nb * J + J) + row * E + c];
  const float dt2 = dt * kLog2e, dtu = dt * u;
  const float* A = p.A + c * N;
  const float* h_in = p.ssm_state + (slot * E + c) * N;
  float* h_out = p.new_ssm_state + (slot * E + c) * N;
  const float* Bv = dbc + R;
  const float* Cv = dbc + R + N;
  float acc = 0.0f;
  for (int64_t n = 0; n < N; ++n) {
    const float h = fmaf(exp2_decay(dt2 * A[n]), h_in[n], dtu * Bv[n]);
    h_out[n] = h;
    acc = fmaf(h, Cv[n], acc);
  }
  if (p.D) acc = fmaf(p.D[c], u, acc);
  acc *= silu(to_f32(static_cast<const T*>(p.xz)[row * 2 * E + E + c]));
  *y = from_f32<T>(acc);
}

template <typename T>
cudaError_t launch_mamba1_step(const Mamba1StepParams& p, cudaStream_t stream) {
  if (p.batch == 0 || p.dim == 0) return cudaSuccess;
  const int64_t J = p.cols, nb = p.blocks;
  const size_t smem1 = sizeof(float) * kStepRows * kStepChannels + sizeof(T) * kStepChannels * J;
  cudaError_t e = cudaFuncSetAttribute(mamba1_step_conv_xproj<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(smem1));
  if (e != cudaSuccess) return e;
  const dim3 g1(static_cast<unsigned>(nb), static_cast<unsigned>((p.batch + kStepRows - 1) / kStepRows));
  mamba1_step_conv_xproj<T><<<g1, kStepThreads, smem1, stream>>>(p);
  const dim3 g2(static_cast<unsigned>((J + kStepThreads - 1) / kStepThreads), static_cast<unsigned>(p.batch));
  mamba1_step_xproj_reduce<T><<<g2, kStepThreads, 0, stream>>>(p);
  const dim3 g3(static_cast<unsigned>((p.dim + kStepThreads - 1) / kStepThreads), static_cast<unsigned>(p.batch));
  mamba1_step_dt_ssm<T><<<g3, kStepThreads, sizeof(float) * J, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace mamba_jax
