// CUDA kernel of add_rms_norm (decode: rows = batch, F = d_model). Framework-free:
// AddRmsNormParams in, cudaGetLastError() of the launch out.
#pragma once

#include <algorithm>

#include "add_rms_norm/params.h"
#include "common/cuda_common.cuh"

namespace mamba_jax {
namespace cuda {

// E consecutive elements of T at src as float: whole 16-byte (or smaller) vectors when E > 1.
template <typename T, int E>
MJ_DEVICE void load_chunk(const T* src, float* out) {
  constexpr int V = E < 16 / int(sizeof(T)) ? E : 16 / int(sizeof(T));
#pragma unroll
  for (int j = 0; j < E; j += V) {
    const Vec<T, V> v = load_vec<T, V>(src + j);
#pragma unroll
    for (int k = 0; k < V; ++k) out[j + k] = to_f32(v.v[k]);
  }
}

template <typename T, int E>
MJ_DEVICE void store_chunk(T* dst, const float* in) {
  constexpr int V = E < 16 / int(sizeof(T)) ? E : 16 / int(sizeof(T));
#pragma unroll
  for (int j = 0; j < E; j += V) {
    Vec<T, V> v;
#pragma unroll
    for (int k = 0; k < V; ++k) v.v[k] = from_f32<T>(in[j + k]);
    store_vec<T, V>(dst + j, v);
  }
}

// Sum of v over the block (blockDim.x a multiple of 32, at most 1024), returned to every thread.
MJ_DEVICE float block_sum(float v) {
  __shared__ float warp_sums[32];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = lane < warps ? warp_sums[lane] : 0.0f;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// fn(c, a, b) for every chunk c = c0, c0 + stride, ... below `chunks`: for the first K, a and b are
// ra[k] and rb[k] (already loaded); the rest are loaded from pa and pb one chunk at a time.
template <int E, int K, typename A, typename B, typename Fn>
MJ_DEVICE void for_each_chunk(int64_t c0, int64_t stride, int64_t chunks, float (&ra)[K][E], float (&rb)[K][E],
                              const A* pa, const B* pb, Fn&& fn) {
#pragma unroll
  for (int k = 0; k < K; ++k)
    if (c0 + k * stride < chunks) fn(c0 + k * stride, ra[k], rb[k]);
  for (int64_t c = c0 + K * stride; c < chunks; c += stride) {
    float a[E], b[E];
    load_chunk<A, E>(pa + c * E, a);
    load_chunk<B, E>(pb + c * E, b);
    fn(c, a, b);
  }
}

// One block per row; thread t owns the chunks t, t + blockDim.x, ... of E consecutive features
// (E = 8 on the vector path, 1 otherwise). Its first K chunks are loaded together (all loads issued
// before the first store, which could otherwise alias them) and stay in registers between the two
// passes; a row longer than K * blockDim.x chunks goes through the rest one chunk at a time and reads
// it back from h_new, which the same thread wrote. H, Y, S, O: the storage types of h (and h_new),
// y, scale and x.
template <typename H, typename Y, typename S, typename O, int E, int K>
__global__ void __launch_bounds__(256) add_rms_norm_kernel(const AddRmsNormParams p) {
  const int64_t F = p.features, row = blockIdx.x;
  const int64_t chunks = F / E;  // E divides F (E = 1 unless F % 8 == 0)
  const H* h = static_cast<const H*>(p.h) + row * F;
  const Y* y = static_cast<const Y*>(p.y) + row * F;
  H* hn = static_cast<H*>(p.h_new) + row * F;
  O* x = static_cast<O*>(p.x) + row * F;
  const S* scale = static_cast<const S*>(p.scale);
  const int64_t c0 = threadIdx.x, stride = blockDim.x;

  // h_new = round_H(h + y) as float; w holds y, later scale.
  float v[K][E], w[K][E];
  float ss = 0.0f;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int64_t c = c0 + k * stride;
    if (c < chunks) {
      load_chunk<H, E>(h + c * E, v[k]);
      load_chunk<Y, E>(y + c * E, w[k]);
    }
  }
  // Pass 1: h_new stored, its squares (as stored) summed.
  auto add_store = [&](int64_t c, float* a, float* b) {
#pragma unroll
    for (int j = 0; j < E; ++j) a[j] += b[j];
    store_chunk<H, E>(hn + c * E, a);
#pragma unroll
    for (int j = 0; j < E; ++j) {
      a[j] = to_f32(from_f32<H>(a[j]));
      ss = fmaf(a[j], a[j], ss);
    }
  };
  for_each_chunk<E, K>(c0, stride, chunks, v, w, h, y, add_store);
  const float inv = rsqrtf(block_sum(ss) / static_cast<float>(F) + p.eps);
  // Pass 2: x = h_new * inv * scale.
  auto scale_store = [&](int64_t c, float* a, float* sc) {
    float out[E];
#pragma unroll
    for (int j = 0; j < E; ++j) out[j] = a[j] * inv * sc[j];
    store_chunk<O, E>(x + c * E, out);
  };
#pragma unroll
  for (int k = 0; k < K; ++k)
    if (c0 + k * stride < chunks) load_chunk<S, E>(scale + (c0 + k * stride) * E, w[k]);
  for_each_chunk<E, K>(c0, stride, chunks, v, w, hn, scale, scale_store);
}

template <typename H, typename Y, typename S, typename O>
cudaError_t launch_add_rms_norm_typed(const AddRmsNormParams& p, cudaStream_t stream, int block, bool vec_ok) {
  constexpr int kVec = 8;
  const bool vec = vec_ok && p.features % kVec == 0 && aligned16_host(p.h) && aligned16_host(p.y) &&
                   aligned16_host(p.scale) && aligned16_host(p.h_new) && aligned16_host(p.x);
  const int64_t chunks = vec ? p.features / kVec : p.features;
  // Default: one thread per chunk up to 256 threads, whole warps (F 768 bf16: 96 threads; F 2560: 256).
  if (block <= 0) block = static_cast<int>(std::min<int64_t>(256, (chunks + 31) / 32 * 32));
  const unsigned grid = static_cast<unsigned>(p.rows);
  if (vec)
    add_rms_norm_kernel<H, Y, S, O, kVec, 4><<<grid, block, 0, stream>>>(p);
  else
    add_rms_norm_kernel<H, Y, S, O, 1, 16><<<grid, block, 0, stream>>>(p);
  return cudaGetLastError();
}

// block: threads per block (0: as above; else a multiple of 32 up to 256, the checker sweeps it);
// vec_ok = false keeps the scalar path. Rows or F of 0 launch nothing.
template <typename T>
cudaError_t launch_add_rms_norm(const AddRmsNormParams& p, cudaStream_t stream, int block = 0, bool vec_ok = true) {
  if (p.rows == 0 || p.features == 0) return cudaSuccess;
  if (p.rows > INT32_MAX) return cudaErrorInvalidConfiguration;  // one block per row: grid.x < 2^31
  return with_add_rms_norm_types<T>(p, [&](auto ht, auto st, auto ot) {
    return launch_add_rms_norm_typed<typename decltype(ht)::type, T, typename decltype(st)::type,
                                     typename decltype(ot)::type>(p, stream, block, vec_ok);
  });
}

}  // namespace cuda
}  // namespace mamba_jax
