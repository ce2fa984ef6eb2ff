// CUDA kernels of mamba1_step: a Mamba-1 decode step from in_proj's output to out_proj's input in three
// launches instead of the unfused path's conv update, x_proj, split, dt_proj, casts and state update.
//   1. conv_xproj: per block of kStepChannels channels and kStepRows batch rows: the conv update and
//      SiLU (the SSM input u), then u's partial x_proj products over those channels (the block's x_proj
//      rows staged in shared memory once for all its batch rows).
//   2. xproj_reduce: per batch row, the partial products summed over the channel blocks (a fixed
//      order: the result does not depend on scheduling).
//   3. dt_ssm: per block of kDtChannels channels and up to kStepRows batch rows: dt = dt_proj(dt_low),
//      softplus(dt + dt_bias), the state update, D skip and silu(z) gate.
// Kernels 2 and 3 are programmatic dependent launches (sm_90+, see launch_pdl): each is scheduled while
// the one before still runs, and dt_ssm loads its weights and states before it waits.
// u, the x_proj output and dt are rounded to the activation dtype where the unfused path rounds them,
// so the fused step follows the unfused one up to summation order.
#pragma once

#include "causal_conv1d_update/causal_conv1d_update.cuh"
#include "common/cuda_common.cuh"
#include "common/limits.h"
#include "mamba1_step/params.h"

namespace mamba_jax {
namespace cuda {

constexpr int kStepRows = 4;      // batch rows per block of conv_xproj (dt_ssm: up to this many)
constexpr int kStepThreads = 128;  // conv_xproj
// xproj_reduce: kRedCols columns per block, kRedGroups threads per column summing interleaved blocks.
constexpr int kRedCols = 8, kRedGroups = 32;
// dt_ssm: kDtChannels channels per block; kDtLanes threads per channel (dt_proj's ranks interleaved
// between them, then the channel's states).
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
  pdl_trigger();  // the reduce may be scheduled now; it waits for this grid before reading
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
  pdl_trigger();  // dt_ssm may start its own loads now
  pdl_wait();     // conv_xproj's partials
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

// dt_ssm holds in registers up to kDtMaxRanks of dt_proj's weights and kDtMaxStates states (and A) per
// thread and row; larger dt_rank / dstate run the rest from memory.
constexpr int kDtMaxRanks = 24, kDtMaxStates = 4;

// Per block of kDtChannels channels and ROWS batch rows (the last block may hold fewer: `rows`): dt_proj
// (thread (g, cl) sums ranks g, g + kDtLanes, ... of channel c0 + cl for every row), softplus, then the state
// update with a channel's kDtLanes threads on interleaved states, D and the gate. Everything that does not
// come from the step's earlier kernels (dt_proj's weights, the states, A, z, D, dt_bias) is loaded first, so
// those loads are in flight together while x_proj's output and u are read.
template <typename T, int ROWS>
__global__ void __launch_bounds__(kDtThreads) mamba1_step_dt_ssm(const Mamba1StepParams p) {
  extern __shared__ float sm[];
  const int E = static_cast<int>(p.dim), N = static_cast<int>(p.dstate), R = static_cast<int>(p.dt_rank),
            J = static_cast<int>(p.cols);
  const int c0 = blockIdx.x * kDtChannels;
  const int64_t row0 = int64_t(blockIdx.y) * ROWS;
  const int rows = static_cast<int>(min(int64_t(ROWS), p.batch - row0));
  float* dbc = sm;                                      // [ROWS][J]: dt_low, B, C of the rows (0 past rows)
  float* part = dbc + ROWS * J;                         // [kDtLanes][ROWS][kDtChannels]
  float* dt_s = part + kDtLanes * ROWS * kDtChannels;   // [ROWS][kDtChannels]
  float* u_s = dt_s + ROWS * kDtChannels;               // [ROWS][kDtChannels]
  const int tid = threadIdx.x;

  // dt_proj's role of this thread: channel cd, ranks g + k * kDtLanes.
  const int cl = tid % kDtChannels, g = tid / kDtChannels, cd = c0 + cl;
  const T* wcol = static_cast<const T*>(p.dt_proj) + (cd < E ? cd : 0);
  T wv[kDtMaxRanks];
#pragma unroll
  for (int k = 0; k < kDtMaxRanks; ++k) {
    const int r = g + k * kDtLanes;
    wv[k] = (cd < E && r < R) ? wcol[int64_t(r) * E] : from_f32<T>(0.0f);
  }
  // The state update's role: channel c, states lane + k * kDtLanes, for each row.
  const int lane = tid % kDtLanes, ch = tid / kDtLanes, c = c0 + ch;
  const bool live = c < E;
  const float* A = p.A + int64_t(live ? c : 0) * N;
  float av[kDtMaxStates], hv[ROWS][kDtMaxStates], zv[ROWS];
  int64_t slot[ROWS];
#pragma unroll
  for (int k = 0; k < kDtMaxStates; ++k) av[k] = (live && lane + k * kDtLanes < N) ? A[lane + k * kDtLanes] : 0.0f;
#pragma unroll
  for (int q = 0; q < ROWS; ++q) {
    slot[q] = (live && q < rows) ? step_slot(p, row0 + q) : -1;
    const float* h_in = p.ssm_state + (slot[q] >= 0 ? (slot[q] * E + c) * N : 0);
#pragma unroll
    for (int k = 0; k < kDtMaxStates; ++k)
      hv[q][k] = (slot[q] >= 0 && lane + k * kDtLanes < N) ? h_in[lane + k * kDtLanes] : 0.0f;
    zv[q] = (slot[q] >= 0 && lane == 0) ? to_f32(static_cast<const T*>(p.xz)[(row0 + q) * 2 * E + E + c]) : 0.0f;
  }
  const float d_skip = (live && p.D) ? p.D[c] : 0.0f;
  const float bias = (tid < ROWS * kDtChannels && cd < E) ? p.dt_bias[cd] : 0.0f;

  // x_proj's output and u, from the step's earlier kernels (launched as a programmatic dependent, this
  // kernel may have started before they finished).
  pdl_wait();
  const float* x_dbl = p.x_dbl() + row0 * J;
  for (int i = tid; i < ROWS * J; i += kDtThreads) dbc[i] = i < rows * J ? x_dbl[i] : 0.0f;
  if (tid < ROWS * kDtChannels) {
    const int q = tid / kDtChannels;
    u_s[tid] = (q < rows && cd < E) ? p.u()[(row0 + q) * E + cd] : 0.0f;
  }
  __syncthreads();

  {  // dt_proj
    float acc[ROWS] = {};
#pragma unroll
    for (int k = 0; k < kDtMaxRanks; ++k) {
      const int r = g + k * kDtLanes;
      if (r < R) {
        const float w = to_f32(wv[k]);
#pragma unroll
        for (int q = 0; q < ROWS; ++q) acc[q] = fmaf(dbc[q * J + r], w, acc[q]);
      }
    }
    for (int r = g + kDtMaxRanks * kDtLanes; r < R; r += kDtLanes) {
      const float w = cd < E ? to_f32(wcol[int64_t(r) * E]) : 0.0f;
#pragma unroll
      for (int q = 0; q < ROWS; ++q) acc[q] = fmaf(dbc[q * J + r], w, acc[q]);
    }
#pragma unroll
    for (int q = 0; q < ROWS; ++q) part[(g * ROWS + q) * kDtChannels + cl] = acc[q];
  }
  __syncthreads();
  if (tid < ROWS * kDtChannels) {  // thread (q, cl): the rank parts summed in lane order, softplus
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < kDtLanes; ++k) s += part[k * ROWS * kDtChannels + tid];
    dt_s[tid] = softplus(round_to<T>(s) + bias);
  }
  __syncthreads();

  // The state update; the kDtLanes threads of a channel are consecutive lanes of one warp (their <h, C>
  // partials meet through xor shuffles).
#pragma unroll
  for (int q = 0; q < ROWS; ++q) {
    if (q >= rows) break;  // the same for the whole block
    float ypart = 0.0f, u = 0.0f;
    if (slot[q] >= 0) {
      u = u_s[q * kDtChannels + ch];
      const float dt = dt_s[q * kDtChannels + ch], dt2 = dt * kLog2e, dtu = dt * u;
      const float* Bv = dbc + q * J + R;
      const float* Cv = Bv + N;
      const int64_t base = (slot[q] * E + c) * N;
      float* h_out = p.new_ssm_state + base;  // may be the input state: each state is read before it is written
#pragma unroll
      for (int k = 0; k < kDtMaxStates; ++k) {
        const int n = lane + k * kDtLanes;
        if (n < N) {
          const float h = fmaf(exp2_decay(dt2 * av[k]), hv[q][k], dtu * Bv[n]);
          h_out[n] = h;
          ypart = fmaf(h, Cv[n], ypart);
        }
      }
      for (int n = lane + kDtMaxStates * kDtLanes; n < N; n += kDtLanes) {
        const float h = fmaf(exp2_decay(dt2 * A[n]), p.ssm_state[base + n], dtu * Bv[n]);
        h_out[n] = h;
        ypart = fmaf(h, Cv[n], ypart);
      }
    }
#pragma unroll
    for (int off = kDtLanes / 2; off > 0; off >>= 1) ypart += __shfl_xor_sync(0xffffffffu, ypart, off);
    if (live && lane == 0) {
      T* y = static_cast<T*>(p.y) + (row0 + q) * E + c;
      *y = slot[q] < 0 ? from_f32<T>(0.0f) : from_f32<T>(fmaf(d_skip, u, ypart) * silu(zv[q]));
    }
  }
}

inline size_t mamba1_step_dt_ssm_smem(int64_t J, int rows) {
  return sizeof(float) * (rows * J + (kDtLanes + 2) * rows * kDtChannels);
}

template <typename T, int ROWS>
cudaError_t launch_mamba1_step_dt_ssm(const Mamba1StepParams& p, cudaStream_t stream) {
  const size_t smem = mamba1_step_dt_ssm_smem(p.cols, ROWS);
  cudaError_t e = cudaFuncSetAttribute(mamba1_step_dt_ssm<T, ROWS>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(smem));
  if (e != cudaSuccess) return e;
  const dim3 grid(static_cast<unsigned>((p.dim + kDtChannels - 1) / kDtChannels),
                  static_cast<unsigned>((p.batch + ROWS - 1) / ROWS));
  return launch_pdl(mamba1_step_dt_ssm<T, ROWS>, grid, dim3(kDtThreads), smem, stream, p);
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
  mamba1_step_conv_xproj<T><<<dim3(static_cast<unsigned>(nb), row_blocks), kStepThreads, smem1, stream>>>(p);
  const dim3 g2(static_cast<unsigned>((J + kRedCols - 1) / kRedCols), static_cast<unsigned>(p.batch));
  e = launch_pdl(mamba1_step_xproj_reduce<T>, g2, dim3(kRedCols * kRedGroups), 0, stream, p);
  if (e != cudaSuccess) return e;
  // dt_ssm's rows per block: as many as the batch has, up to kStepRows (registers hold each row's states)
  e = p.batch == 1 ? launch_mamba1_step_dt_ssm<T, 1>(p, stream)
      : p.batch == 2 ? launch_mamba1_step_dt_ssm<T, 2>(p, stream)
                     : launch_mamba1_step_dt_ssm<T, kStepRows>(p, stream);
  if (e != cudaSuccess) return e;
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace mamba_jax
