// CUDA kernel for the small-batch projections of a decode step: y[M, N] = x[M, K] @ w[K, N], M <= 8,
// float32 accumulation. Framework-free: LinearParams in, cudaGetLastError() of the launch out.
//
// Why a kernel of our own: at decode batch sizes XLA rewrites a dot smaller than ~1e7 multiply-adds
// (mamba-130m's in_proj, every model's x_proj and dt_proj) into a multiply that materialises the
// whole [K, N] product in bf16 and a reduce over it: three passes over the weights' bytes and two
// kernels (measured on the H200: 7.7 us for mamba-130m's 4.7 MB in_proj). The work is reading w once.
//
// Layout: a block (128 threads) owns a tile of 8 vectors of VEC = 16 / sizeof(T) columns; its threads
// are 16 row groups x 8 column vectors, so each warp load is 4 rows x 128 contiguous bytes. A row
// group walks rows k = k0 + rg, k0 + rg + 16, ... with 8 rows' loads in flight, keeping M x VEC
// float sums; the 16 row groups meet in shared memory. To have enough blocks in flight for a tile
// count below the SM count, CL blocks (a thread-block cluster) split K, and rank 0 of the cluster
// adds the others' partial sums through distributed shared memory: one kernel, no workspace.
#pragma once

#include <cooperative_groups.h>

#include "common/cuda_common.cuh"
#include "linear/params.h"

namespace mamba_jax {
namespace cuda {

constexpr int kLinearThreads = 128;
constexpr int kLinearRowGroups = 16;
constexpr int kLinearColVecs = 8;
constexpr int kLinearUnroll = 8;
constexpr int kLinearMaxM = 8;

template <typename T, int MT, int CL>
MJ_DEVICE void linear_body(const LinearParams& p, int tile, int rank) {
  constexpr int VEC = 16 / sizeof(T), TN = kLinearColVecs * VEC, RG = kLinearRowGroups, U = kLinearUnroll;
  using V = Vec<T, VEC>;
  __shared__ __align__(16) float red[RG][MT][TN];
  const int tid = threadIdx.x, rg = tid / kLinearColVecs, cv = tid % kLinearColVecs;
  const int64_t K = p.k, N = p.n;
  const int64_t n0 = int64_t(tile) * TN + cv * VEC;
  const bool col_ok = n0 < N;  // N % VEC == 0: a vector is whole or absent
  const int64_t kc = (K + CL - 1) / CL;
  const int64_t k_begin = rank * kc, k_end = k_begin + kc < K ? k_begin + kc : K;
  const T* x = static_cast<const T*>(p.x);
  const T* w = static_cast<const T*>(p.w) + n0;

  float acc[MT][VEC];
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int v = 0; v < VEC; ++v) acc[m][v] = 0.0f;

  if (col_ok) {
    int64_t k = k_begin + rg;
    for (; k + (U - 1) * RG < k_end; k += U * RG) {  // U full rows in flight
      V wv[U];
#pragma unroll
      for (int u = 0; u < U; ++u) wv[u] = load_vec<T, VEC>(w + (k + u * RG) * N);
#pragma unroll
      for (int u = 0; u < U; ++u) {
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          const float xv = m < p.m ? to_f32(__ldg(x + m * K + k + u * RG)) : 0.0f;
#pragma unroll
          for (int v = 0; v < VEC; ++v) acc[m][v] = fmaf(xv, to_f32(wv[u].v[v]), acc[m][v]);
        }
      }
    }
    for (; k < k_end; k += RG) {
      const V wv = load_vec<T, VEC>(w + k * N);
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        const float xv = m < p.m ? to_f32(__ldg(x + m * K + k)) : 0.0f;
#pragma unroll
        for (int v = 0; v < VEC; ++v) acc[m][v] = fmaf(xv, to_f32(wv.v[v]), acc[m][v]);
      }
    }
  }
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int v = 0; v < VEC; ++v) red[rg][m][cv * VEC + v] = acc[m][v];
  __syncthreads();
  // Row groups -> red[0]: thread i sums output i (of MT x TN) over the 16 row groups.
  for (int i = tid; i < MT * TN; i += kLinearThreads) {
    const int m = i / TN, c = i % TN;
    float s = 0.0f;
#pragma unroll
    for (int g = 0; g < RG; ++g) s += red[g][m][c];
    red[0][m][c] = s;
  }
  if constexpr (CL > 1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    namespace cg = cooperative_groups;
    cg::cluster_group cluster = cg::this_cluster();
    cluster.sync();  // every block's red[0] is final
    if (rank == 0) {
      for (int i = tid; i < MT * TN; i += kLinearThreads) {
        const int m = i / TN, c = i % TN;
        float s = red[0][m][c];
#pragma unroll
        for (int r = 1; r < CL; ++r) s += cluster.map_shared_rank(&red[0][0][0], r)[m * TN + c];
        const int64_t n = int64_t(tile) * TN + c;
        if (m < p.m && n < N) static_cast<T*>(p.y)[m * N + n] = from_f32<T>(s);
      }
    }
    cluster.sync();  // keep every block's shared memory alive until rank 0 has read it
#else
    __trap();  // clusters need sm_90; the launcher uses CL = 1 below that
#endif
  } else {
    __syncthreads();
    for (int i = tid; i < MT * TN; i += kLinearThreads) {
      const int m = i / TN, c = i % TN;
      const int64_t n = int64_t(tile) * TN + c;
      if (m < p.m && n < N) static_cast<T*>(p.y)[m * N + n] = from_f32<T>(red[0][m][c]);
    }
  }
}

// Launched with a cluster of CL blocks along x (cudaLaunchKernelEx), so blockIdx.x % CL is the rank.
template <typename T, int MT, int CL>
__global__ void __launch_bounds__(kLinearThreads) linear_cluster_kernel(const LinearParams p) {
  linear_body<T, MT, CL>(p, blockIdx.x / CL, blockIdx.x % CL);
}

template <int CL, typename Kernel>
cudaError_t launch_cluster(Kernel kernel, unsigned blocks, cudaStream_t stream, const LinearParams& p) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(blocks);
  cfg.blockDim = dim3(kLinearThreads);
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = CL;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cudaLaunchKernelEx(&cfg, kernel, p);
}

template <typename T, int MT>
__global__ void __launch_bounds__(kLinearThreads) linear_kernel(const LinearParams p) {
  linear_body<T, MT, 1>(p, blockIdx.x, 0);
}

// Blocks a launch aims for (~2 per SM of an H100/H200, 132 SMs); the checker times others.
constexpr int64_t kLinearWantBlocks = 264;

// major: the device's compute capability major version.
template <typename T, int MT>
cudaError_t launch_linear_m(const LinearParams& p, cudaStream_t stream, int major, int64_t want_blocks) {
  constexpr int TN = kLinearColVecs * (16 / sizeof(T));
  const int64_t tiles = (p.n + TN - 1) / TN;
  // Clusters split K until the grid reaches want_blocks; each K slice keeps >= 64 rows.
  // Clusters need compute capability 9.0 (Hopper); below that every block takes all of K.
  cudaError_t e = cudaSuccess;
  int cl = 1;
  while (major >= 9 && cl < 8 && tiles * cl < want_blocks && p.k / (2 * cl) >= 64) cl *= 2;
  const unsigned blocks = static_cast<unsigned>(tiles * cl);
  switch (cl) {
    case 1: linear_kernel<T, MT><<<blocks, kLinearThreads, 0, stream>>>(p); break;
    case 2: e = launch_cluster<2>(linear_cluster_kernel<T, MT, 2>, blocks, stream, p); break;
    case 4: e = launch_cluster<4>(linear_cluster_kernel<T, MT, 4>, blocks, stream, p); break;
    default: e = launch_cluster<8>(linear_cluster_kernel<T, MT, 8>, blocks, stream, p); break;
  }
  if (e != cudaSuccess) return e;
  return cudaGetLastError();
}

// Any M: chunks of up to 8 rows (each chunk reads w once more; the callers keep M <= 8).
// Needs N % (16 / sizeof(T)) == 0 and 16-byte aligned w (the handler checks both).
template <typename T>
cudaError_t launch_linear(const LinearParams& p, cudaStream_t stream, int64_t want_blocks = kLinearWantBlocks) {
  if (p.m == 0 || p.n == 0) return cudaSuccess;
  int major = 0;
  const cudaError_t ce = current_device_attribute(cudaDevAttrComputeCapabilityMajor, &major);
  if (ce != cudaSuccess) return ce;
  for (int64_t m0 = 0; m0 < p.m; m0 += kLinearMaxM) {
    LinearParams q = p;
    q.m = p.m - m0 < kLinearMaxM ? p.m - m0 : kLinearMaxM;
    q.x = static_cast<const T*>(p.x) + m0 * p.k;
    q.y = static_cast<T*>(p.y) + m0 * p.n;
    cudaError_t e;
    if (q.m == 1) e = launch_linear_m<T, 1>(q, stream, major, want_blocks);
    else if (q.m == 2) e = launch_linear_m<T, 2>(q, stream, major, want_blocks);
    else if (q.m <= 4) e = launch_linear_m<T, 4>(q, stream, major, want_blocks);
    else e = launch_linear_m<T, 8>(q, stream, major, want_blocks);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

}  // namespace cuda
}  // namespace mamba_jax
