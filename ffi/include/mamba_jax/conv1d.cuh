// CUDA kernels for the causal depthwise conv1d (prefill) and its one-step update (decode).
// Framework-free: Params structs of params.h in, cudaGetLastError() of the launch out.
//
// causal_conv1d is memory-bound (one read of x, one write of y). A thread owns VEC consecutive
// channels (one 16-byte vector: 8 bf16/f16 or 4 f32) and TR consecutive steps: it issues all
// TR + W - 1 row loads at once (the W - 1 rows before its run are re-read from L2 by the
// neighbouring run), then slides the window in registers. A warp covers 32 vectors of one row,
// so every load and store is a coalesced 512-byte (bf16) row segment.
#pragma once

#include "mamba_jax/cuda_common.cuh"
#include "mamba_jax/params.h"

namespace mamba_jax {
namespace cuda {

constexpr int kConvThreads = 128;
constexpr int kConvSteps = 8;  // TR: steps per thread

template <typename T, int W, int VEC>
__global__ void __launch_bounds__(kConvThreads)
causal_conv1d_kernel(const Conv1dParams p, int64_t nruns) {
  constexpr int S = W - 1, TR = kConvSteps;
  using V = Vec<T, VEC>;
  const int64_t D = p.dim, L = p.seqlen;
  const int64_t cv = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t d0 = cv * VEC;
  if (d0 >= D) return;  // VEC > 1 only when VEC divides D

  float w[W][VEC], bias[VEC];
#pragma unroll
  for (int v = 0; v < VEC; ++v) {
#pragma unroll
    for (int k = 0; k < W; ++k) w[k][v] = p.weight[(d0 + v) * W + k];
    bias[v] = p.bias ? p.bias[d0 + v] : 0.0f;
  }

  for (int64_t b = blockIdx.z; b < p.batch; b += gridDim.z) {
    const T* x = static_cast<const T*>(p.x) + b * L * D + d0;
    T* y = static_cast<T*>(p.y) + b * L * D + d0;
    const T* init = p.initial_state ? static_cast<const T*>(p.initial_state) + (b * D + d0) * S : nullptr;
    for (int64_t r = blockIdx.y; r < nruns; r += gridDim.y) {
      const int64_t t0 = r * TR;
      // raw[i] is the input at step t0 - S + i: from x, from the initial state before step 0, else 0.
      V raw[TR + S];
#pragma unroll
      for (int i = 0; i < TR + S; ++i) {
        const int64_t tt = t0 - S + i;
        if (tt >= 0 && tt < L) {
          raw[i] = load_vec<T, VEC>(x + tt * D);
        } else {
#pragma unroll
          for (int v = 0; v < VEC; ++v)
            raw[i].v[v] = (tt < 0 && init != nullptr) ? init[v * S + (S + tt)] : from_f32<T>(0.0f);
        }
      }
#pragma unroll
      for (int i = 0; i < TR; ++i) {
        const int64_t t = t0 + i;
        if (t < L) {
          V out;
#pragma unroll
          for (int v = 0; v < VEC; ++v) {
            float acc = bias[v];
#pragma unroll
            for (int k = 0; k < W; ++k) acc = fmaf(w[k][v], to_f32(raw[i + k].v[v]), acc);
            out.v[v] = from_f32<T>(p.silu ? silu(acc) : acc);
          }
          store_vec<T, VEC>(y + t * D, out);
        }
      }
      // The run holding the last step (or the only run, when L == 0) writes the final state: the
      // inputs at steps L - S ... L - 1 (exact copies, no rounding). raw[i] is step t0 - S + i, i.e.
      // final-state slot k = t0 + i - L; indexing raw only by the unrolled i keeps it in registers.
      if ((t0 <= L - 1 && L - 1 < t0 + TR) || (L == 0 && r == 0)) {
        T* fin = static_cast<T*>(p.final_state) + (b * D + d0) * S;
#pragma unroll
        for (int i = 0; i < TR + S; ++i) {
          const int64_t k = t0 + i - L;
          if (k >= 0 && k < S) {
#pragma unroll
            for (int v = 0; v < VEC; ++v) fin[v * S + k] = raw[i].v[v];
          }
        }
      }
    }
  }
}

template <typename T, int W>
cudaError_t launch_conv_width(const Conv1dParams& p, cudaStream_t stream) {
  constexpr int EV = 16 / sizeof(T);
  const bool vec = p.dim % EV == 0 && aligned16_host(p.x) && aligned16_host(p.y);
  const int vecw = vec ? EV : 1;
  const int64_t nvec = p.dim / vecw;
  const int64_t nruns = p.seqlen > 0 ? (p.seqlen + kConvSteps - 1) / kConvSteps : 1;
  const dim3 grid(static_cast<unsigned>((nvec + kConvThreads - 1) / kConvThreads),
                  static_cast<unsigned>(nruns < 65535 ? nruns : 65535),
                  static_cast<unsigned>(p.batch < 65535 ? p.batch : 65535));
  if (vec)
    causal_conv1d_kernel<T, W, EV><<<grid, kConvThreads, 0, stream>>>(p, nruns);
  else
    causal_conv1d_kernel<T, W, 1><<<grid, kConvThreads, 0, stream>>>(p, nruns);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_causal_conv1d(const Conv1dParams& p, cudaStream_t stream) {
  if (p.batch == 0 || p.dim == 0) return cudaSuccess;
  switch (p.width) {
    case 2: return launch_conv_width<T, 2>(p, stream);
    case 3: return launch_conv_width<T, 3>(p, stream);
    case 4: return launch_conv_width<T, 4>(p, stream);
    case 5: return launch_conv_width<T, 5>(p, stream);
    case 6: return launch_conv_width<T, 6>(p, stream);
    case 7: return launch_conv_width<T, 7>(p, stream);
    case 8: return launch_conv_width<T, 8>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

// causal_conv1d_update: one thread per (batch, channel); reads its whole state before writing, so
// the in-place (aliased) update is safe.
template <typename T>
__global__ void __launch_bounds__(256) causal_conv1d_update_kernel(const Conv1dUpdateParams p) {
  const int64_t bd = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (bd >= p.batch * p.dim) return;
  // 32-bit division when it fits (64-bit division is a long software sequence on the GPU).
  const int64_t d = p.batch * p.dim <= INT32_MAX ? int64_t(uint32_t(bd) % uint32_t(p.dim)) : bd % p.dim;
  const int W = static_cast<int>(p.width), S = W - 1;
  const T* s = static_cast<const T*>(p.conv_state) + bd * S;
  T* ns = static_cast<T*>(p.new_conv_state) + bd * S;
  T win[kMaxConvWidth];
#pragma unroll
  for (int k = 0; k < kMaxConvWidth - 1; ++k)
    if (k < S) win[k] = s[k];
  const T xv = static_cast<const T*>(p.x)[bd];
  float acc = p.bias ? p.bias[d] : 0.0f;
#pragma unroll
  for (int k = 0; k < kMaxConvWidth; ++k) {
    if (k < S) acc = fmaf(p.weight[d * W + k], to_f32(win[k]), acc);
    else if (k == S) acc = fmaf(p.weight[d * W + k], to_f32(xv), acc);
  }
  static_cast<T*>(p.y)[bd] = from_f32<T>(p.silu ? silu(acc) : acc);
#pragma unroll
  for (int k = 0; k < kMaxConvWidth - 1; ++k) {
    if (k + 1 < S) ns[k] = win[k + 1];
    else if (k + 1 == S) ns[k] = xv;
  }
}

template <typename T>
cudaError_t launch_causal_conv1d_update(const Conv1dUpdateParams& p, cudaStream_t stream) {
  if (p.batch == 0 || p.dim == 0) return cudaSuccess;
  const int64_t n = p.batch * p.dim;
  causal_conv1d_update_kernel<T><<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace mamba_jax
