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

// causal_conv1d_update: one thread per (batch, channel). TRIGGER: pdl_trigger() first, so that the
// programmatic dependent launched after it (mamba2_step's state update) starts its own loads early.
template <typename T, bool TRIGGER>
__global__ void __launch_bounds__(256) causal_conv1d_update_kernel(const CausalConv1dUpdateParams p) {
  if constexpr (TRIGGER) pdl_trigger();
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

// Vector path (dim a multiple of VEC = 16 / sizeof(T), 16-byte aligned operands): a thread owns VEC
// consecutive channels of one row, whose VEC x (W - 1) state values are contiguous, so its state, x, y,
// weights and bias each travel as whole 16-byte vectors, all loads issued before the arithmetic.
template <typename T, int W, bool TRIGGER>
__global__ void __launch_bounds__(256) causal_conv1d_update_vec_kernel(const CausalConv1dUpdateParams p) {
  if constexpr (TRIGGER) pdl_trigger();
  constexpr int VEC = 16 / sizeof(T), S = W - 1;
  using V = Vec<T, VEC>;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;  // vector index
  const int64_t D = p.dim;
  if (i * VEC >= p.batch * D) return;
  const int64_t e = i * VEC;  // b * D + d0
  const bool small = p.batch * D <= INT32_MAX;
  const int64_t b = small ? int64_t(uint32_t(e) / uint32_t(D)) : e / D;
  const int64_t d0 = e - b * D;
  const int64_t slot = p.state_indices ? p.state_indices[b] : b;
  if (p.state_indices && (slot < 0 || slot >= p.n_slots)) {  // not a slot of the pool: no state touched, y = 0
    V zero;
#pragma unroll
    for (int v = 0; v < VEC; ++v) zero.v[v] = from_f32<T>(0.0f);
    store_vec<T, VEC>(static_cast<T*>(p.y) + e, zero);
    return;
  }
  // st[k] holds the flat state values k * VEC ... (k + 1) * VEC - 1: value (channel v, tap q) is v * S + q.
  const T* s = static_cast<const T*>(p.conv_state) + (slot * D + d0) * S;
  V st[S];
#pragma unroll
  for (int k = 0; k < S; ++k) st[k] = load_vec<T, VEC>(s + k * VEC);
  const V xv = load_vec<T, VEC>(static_cast<const T*>(p.x) + e);
  float4 w4[VEC * W / 4], b4[VEC / 4];  // VEC is 4 or 8
  const float4* wp = reinterpret_cast<const float4*>(p.weight + d0 * W);
#pragma unroll
  for (int k = 0; k < VEC * W / 4; ++k) w4[k] = __ldg(wp + k);
  if (p.bias) {
#pragma unroll
    for (int k = 0; k < VEC / 4; ++k) b4[k] = __ldg(reinterpret_cast<const float4*>(p.bias + d0) + k);
  } else {
#pragma unroll
    for (int k = 0; k < VEC / 4; ++k) b4[k] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
  const float* w = reinterpret_cast<const float*>(w4);
  const float* bias = reinterpret_cast<const float*>(b4);
  V out, ns[S];
#pragma unroll
  for (int v = 0; v < VEC; ++v) {
    float acc = bias[v];
#pragma unroll
    for (int q = 0; q < S; ++q) acc = fmaf(w[v * W + q], to_f32(st[(v * S + q) / VEC].v[(v * S + q) % VEC]), acc);
    acc = fmaf(w[v * W + S], to_f32(xv.v[v]), acc);
    out.v[v] = from_f32<T>(p.silu ? silu(acc) : acc);
#pragma unroll
    for (int q = 0; q < S; ++q) {
      const int f = v * S + q;
      ns[f / VEC].v[f % VEC] = q + 1 < S ? st[(f + 1) / VEC].v[(f + 1) % VEC] : xv.v[v];
    }
  }
  T* nsp = static_cast<T*>(p.new_conv_state) + (slot * D + d0) * S;
#pragma unroll
  for (int k = 0; k < S; ++k) store_vec<T, VEC>(nsp + k * VEC, ns[k]);
  store_vec<T, VEC>(static_cast<T*>(p.y) + e, out);
}

template <typename T, int W, bool TRIGGER>
cudaError_t launch_conv_update_vec(const CausalConv1dUpdateParams& p, cudaStream_t stream, int block) {
  const int64_t n = p.batch * p.dim / (16 / sizeof(T));
  causal_conv1d_update_vec_kernel<T, W, TRIGGER><<<static_cast<unsigned>((n + block - 1) / block), block, 0, stream>>>(p);
  return cudaGetLastError();
}

// block: threads per block (0: 64 for the vector kernel, 128 for the one-channel one; the checker sweeps
// it); vec_ok = false keeps the one-channel kernel; TRIGGER as for the kernels.
// The one-channel kernel, measured on the H200 (D5120 W4 bf16, per launch of 64 back to back), block
// 32 / 64 / 128 / 256: B1 4.3 / 4.1 / 4.1 / 4.7 us, B64 8.9 / 6.0 / 4.9 / 4.9 us, B256 27.5 / 15.2 / 12.1 / 12.1 us.
template <typename T, bool TRIGGER = false>
cudaError_t launch_causal_conv1d_update(const CausalConv1dUpdateParams& p, cudaStream_t stream, int block = 0,
                                        bool vec_ok = true) {
  if (p.batch == 0 || p.dim == 0) return cudaSuccess;
  constexpr int64_t VEC = 16 / sizeof(T);
  if (vec_ok && p.dim % VEC == 0 && aligned16_host(p.x) && aligned16_host(p.y) && aligned16_host(p.conv_state) &&
      aligned16_host(p.new_conv_state) && aligned16_host(p.weight) && (p.bias == nullptr || aligned16_host(p.bias))) {
    // Measured on the H200 (D5120 W4 bf16, per launch of 64 back to back), block 32 / 64 / 128 / 256: B1 3.4 /
    // 3.3 / 3.3 / 3.8 us, B64 4.3 / 4.6 / 5.2 / 5.8 us, B256 11.4 / 11.1 / 11.3 / 11.4 us.
    if (block <= 0) block = 64;
    switch (p.width) {
      case 2: return launch_conv_update_vec<T, 2, TRIGGER>(p, stream, block);
      case 3: return launch_conv_update_vec<T, 3, TRIGGER>(p, stream, block);
      case 4: return launch_conv_update_vec<T, 4, TRIGGER>(p, stream, block);
      case 5: return launch_conv_update_vec<T, 5, TRIGGER>(p, stream, block);
      case 6: return launch_conv_update_vec<T, 6, TRIGGER>(p, stream, block);
      case 7: return launch_conv_update_vec<T, 7, TRIGGER>(p, stream, block);
      case 8: return launch_conv_update_vec<T, 8, TRIGGER>(p, stream, block);
      default: break;
    }
  }
  if (block <= 0) block = 128;
  const int64_t n = p.batch * p.dim;
  causal_conv1d_update_kernel<T, TRIGGER><<<static_cast<unsigned>((n + block - 1) / block), block, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace mamba_jax
