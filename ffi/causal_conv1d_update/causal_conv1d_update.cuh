// CUDA kernel of causal_conv1d_update (decode). Framework-free: CausalConv1dUpdateParams in,
// cudaGetLastError() of the launch out.
#pragma once

#include "causal_conv1d_update/params.h"
#include "common/cuda_common.cuh"
#include "common/limits.h"

namespace mamba_jax {
namespace cuda {

// causal_conv1d_update: one thread per (batch, channel); reads its whole state before writing, so
// the in-place (aliased) update is safe.
template <typename T>
__global__ void __launch_bounds__(256) causal_conv1d_update_kernel(const CausalConv1dUpdateParams p) {
  const int64_t bd = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (bd >= p.batch * p.dim) return;
  // 32-bit division when it fits (64-bit division is a long software sequence on the GPU).
  const int64_t d = p.batch * p.dim <= INT32_MAX ? int64_t(uint32_t(bd) % uint32_t(p.dim)) : bd % p.dim;
  const int W = static_cast<int>(p.width), S = W - 1;
  const int64_t slot = p.state_indices ? p.state_indices[(bd - d) / p.dim] : (bd - d) / p.dim;
  if (p.state_indices && (slot < 0 || slot >= p.n_slots)) {  // not a slot of the pool: no state touched, y = 0
    static_cast<T*>(p.y)[bd] = from_f32<T>(0.0f);
    return;
  }
  const T* s = static_cast<const T*>(p.conv_state) + (slot * p.dim + d) * S;
  T* ns = static_cast<T*>(p.new_conv_state) + (slot * p.dim + d) * S;
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
cudaError_t launch_causal_conv1d_update(const CausalConv1dUpdateParams& p, cudaStream_t stream) {
  if (p.batch == 0 || p.dim == 0) return cudaSuccess;
  const int64_t n = p.batch * p.dim;
  causal_conv1d_update_kernel<T><<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace mamba_jax
