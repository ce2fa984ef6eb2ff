// CUDA kernel of causal_conv1d_update (decode). Framework-free: CausalConv1dUpdateParams in,
// cudaGetLastError() of the launch out.
#pragma once

#include "causal_conv1d_update/params.h"
#include "common/cuda_common.cuh"
#include "common/limits.h"

namespace mamba_jax {
namespace cuda {

// One channel's conv step: the W-1 previous inputs from s (oldest first) and the new input xv against
// the channel's weights w[0..W); writes the shifted window (ending with xv) to ns and returns the output
// before the activation. Reads all of s before writing ns, so s may be ns (the in-place update).
template <typename T>
MJ_DEVICE float conv_update_channel(const T* s, T* ns, const T xv, const float* w, float bias, int W) {
  const int S = W - 1;
  T win[kMaxConvWidth];
#pragma unroll
  for (int k = 0; k < kMaxConvWidth - 1; ++k)
    if (k < S) win[k] = s[k];
  float acc = bias;
#pragma unroll
  for (int k = 0; k < kMaxConvWidth; ++k) {
    if (k < S) acc = fmaf(w[k], to_f32(win[k]), acc);
    else if (k == S) acc = fmaf(w[k], to_f32(xv), acc);
  }
#pragma unroll
  for (int k = 0; k < kMaxConvWidth - 1; ++k) {
    if (k + 1 < S) ns[k] = win[k + 1];
    else if (k + 1 == S) ns[k] = xv;
  }
  return acc;
}

// causal_conv1d_update: one thread per (batch, channel).
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
  const T xv = static_cast<const T*>(p.x)[bd];
  const float acc = conv_update_channel(s, ns, xv, p.weight + d * W, p.bias ? p.bias[d] : 0.0f, W);
  static_cast<T*>(p.y)[bd] = from_f32<T>(p.silu ? silu(acc) : acc);
}

// block: threads per block (0: 128; the checker sweeps it). Measured on the H200 (D5120 W4 bf16, per
// launch of 64 back to back), block 32 / 64 / 128 / 256: B1 4.3 / 4.1 / 4.1 / 4.7 us, B64 8.9 / 6.0 / 4.9 /
// 4.9 us, B256 27.5 / 15.2 / 12.1 / 12.1 us.
template <typename T>
cudaError_t launch_causal_conv1d_update(const CausalConv1dUpdateParams& p, cudaStream_t stream, int block = 0) {
  if (p.batch == 0 || p.dim == 0) return cudaSuccess;
  if (block <= 0) block = 128;
  const int64_t n = p.batch * p.dim;
  causal_conv1d_update_kernel<T><<<static_cast<unsigned>((n + block - 1) / block), block, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace mamba_jax
