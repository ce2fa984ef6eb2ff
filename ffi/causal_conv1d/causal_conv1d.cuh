// CUDA kernel of causal_conv1d (prefill), the causal depthwise conv1d over a sequence.
// Framework-free: CausalConv1dParams in, cudaGetLastError() of the launch out.
//
// causal_conv1d is memory-bound (one read of x, one write of y, channels last). Both kernels give a
// thread consecutive channels and a span of steps: it keeps the last W - 1 inputs in registers, reads
// the W - 1 rows before its span once (the halo, from L2: the neighbouring span read them), and a
// warp's loads and stores are coalesced row segments. The vector kernel (dim a multiple of the vector,
// no seq_idx) takes 8-byte vectors of channels; the other kernel one channel and any seq_idx.
#pragma once

#include "causal_conv1d/params.h"
#include "common/cuda_common.cuh"

namespace mamba_jax {
namespace cuda {

constexpr int kConvThreads = 128;
constexpr int kConvRows = 4;  // R: steps a thread loads and computes at a time
// Threads wanted in flight for one launch (a few per resident slot of 132 SMs x 2048 threads):
// short spans when batch x channels is small, long ones (fewer halo re-reads) when it is large.
constexpr int64_t kConvWantThreads = 132 * 2048 * 2;

// Input at step tt < 0 (before the sequence): the initial state ([channel][W - 1], oldest first), or
// zero without one. Shared by both kernels' window set-up.
template <typename T, int VEC>
MJ_DEVICE Vec<T, VEC> conv_input_before_start(const T* init, int64_t tt, int S) {
  Vec<T, VEC> r;
#pragma unroll
  for (int v = 0; v < VEC; ++v) r.v[v] = init != nullptr ? init[v * S + (S + tt)] : from_f32<T>(0.0f);
  return r;
}

// Thread (channel vector cv, span s, batch b) computes steps [s * span, min(L, (s + 1) * span)) of
// VEC channels. It keeps a window of the last W - 1 inputs in registers, so each x row is read once
// per span (plus W - 1 halo rows at the span start), and loads the next R rows while computing the
// current R. The block's weights and bias are staged once through shared memory ([W][channels]),
// so each thread reads its VEC x W taps as conflict-free vector loads.
template <typename T, int W, int VEC>
__global__ void __launch_bounds__(kConvThreads)
causal_conv1d_kernel(const CausalConv1dParams p, int64_t span) {
  constexpr int S = W - 1, R = kConvRows, CH = kConvThreads * VEC;
  using V = Vec<T, VEC>;
  __shared__ __align__(16) float s_w[W][CH];
  __shared__ __align__(16) float s_b[CH];
  const int64_t D = p.dim, L = p.seqlen;
  const int64_t c_begin = int64_t(blockIdx.x) * CH;
  const int nc = static_cast<int>(D - c_begin < CH ? D - c_begin : CH);
  for (int i = threadIdx.x; i < nc * W; i += kConvThreads) s_w[i % W][i / W] = p.weight[c_begin * W + i];
  for (int i = threadIdx.x; i < nc; i += kConvThreads) s_b[i] = p.bias ? p.bias[c_begin + i] : 0.0f;
  __syncthreads();
  const int lc = threadIdx.x * VEC;  // first channel of this thread within the block
  if (lc >= nc) return;               // VEC > 1 only when VEC divides D, so a vector is whole
  const int64_t d0 = c_begin + lc;

  float w[W][VEC], bias[VEC];
#pragma unroll
  for (int v = 0; v < VEC; ++v) {
#pragma unroll
    for (int k = 0; k < W; ++k) w[k][v] = s_w[k][lc + v];
    bias[v] = s_b[lc + v];
  }

  auto row = [&](const T* x, const T* init, int64_t tt) -> V {
    // Input at step tt: x, the initial state before step 0, zero after the end.
    if (tt >= 0 && tt < L) return load_vec<T, VEC>(x + tt * D);
    if (tt < 0) return conv_input_before_start<T, VEC>(init, tt, S);
    V r;
#pragma unroll
    for (int v = 0; v < VEC; ++v) r.v[v] = from_f32<T>(0.0f);
    return r;
  };

  for (int64_t b = blockIdx.z; b < p.batch; b += gridDim.z) {
    const T* x = static_cast<const T*>(p.x) + b * L * D + d0;
    T* y = static_cast<T*>(p.y) + b * L * D + d0;
    const T* init = p.initial_state ? static_cast<const T*>(p.initial_state) + (b * D + d0) * S : nullptr;
    T* fin = static_cast<T*>(p.final_state) + (b * D + d0) * S;
    for (int64_t t_begin = blockIdx.y * span; t_begin < L || (L == 0 && t_begin == 0); t_begin += gridDim.y * span) {
      const int64_t t_end = t_begin + span < L ? t_begin + span : L;
      // win[i] is the input at step t0 - S + i: S history rows, then the R rows being computed.
      V win[S + R];
#pragma unroll
      for (int i = 0; i < S + R; ++i) win[i] = row(x, init, t_begin - S + i);
      if (L == 0) {  // no steps: the final state is the initial state (or zeros)
#pragma unroll
        for (int k = 0; k < S; ++k)
#pragma unroll
          for (int v = 0; v < VEC; ++v) fin[v * S + k] = win[k].v[v];
        break;
      }
      for (int64_t t0 = t_begin; t0 < t_end; t0 += R) {
        V nxt[R];
        if (t0 + R < t_end) {
#pragma unroll
          for (int i = 0; i < R; ++i) nxt[i] = row(x, init, t0 + R + i);
        }
#pragma unroll
        for (int i = 0; i < R; ++i) {
          const int64_t t = t0 + i;
          if (t < t_end) {
            V out;
            // Packed sequences: tap k reads step t - S + k, kept when seq_idx does not change up to t.
            bool keep[W];
            const int32_t* seq = p.seq_idx ? p.seq_idx + b * L : nullptr;
            keep[W - 1] = true;
#pragma unroll
            for (int k = W - 2; k >= 0; --k) {
              const int64_t tt = t - S + k;
              keep[k] = keep[k + 1] && (seq == nullptr || seq[tt >= 0 ? tt : 0] == seq[tt + 1 >= 0 ? tt + 1 : 0]);
            }
#pragma unroll
            for (int v = 0; v < VEC; ++v) {
              float acc = bias[v];
#pragma unroll
              for (int k = 0; k < W; ++k) acc = keep[k] ? fmaf(w[k][v], to_f32(win[i + k].v[v]), acc) : acc;
              out.v[v] = from_f32<T>(p.silu ? silu(acc) : acc);
            }
            store_vec<T, VEC>(y + t * D, out);
          }
        }
        // The rows holding the last step write the final state: inputs at steps L - S ... L - 1
        // (exact copies). win[i] is step t0 - S + i, i.e. final-state slot k = t0 + i - L; indexing
        // win only by the unrolled i keeps it in registers.
        if (t0 <= L - 1 && L - 1 < t0 + R) {
#pragma unroll
          for (int i = 0; i < S + R; ++i) {
            const int64_t k = t0 + i - L;
            if (k >= 0 && k < S) {
#pragma unroll
              for (int v = 0; v < VEC; ++v) fin[v * S + k] = win[i].v[v];
            }
          }
        }
#pragma unroll
        for (int i = 0; i < S; ++i) win[i] = win[R + i];
#pragma unroll
        for (int i = 0; i < R; ++i) win[S + i] = nxt[i];
      }
    }
  }
}

// The vector path (dim a multiple of VEC = VB / sizeof(T), VB-byte aligned rows; no seq_idx): no shared
// memory. A thread loads its VEC x W weights and bias once, then walks its span P rows at a time: the
// P row vectors are loaded before any is used (P x VB bytes in flight per thread; occupancy supplies
// the rest), and the last W - 1 inputs stay in registers as float (exact for every T), so a row is
// read once per span plus the W - 1 halo rows at the span start. A warp reads and writes 32 x VB
// contiguous bytes per row.
template <typename T, int W, int VB, int P>
__global__ void __launch_bounds__(kConvThreads)
causal_conv1d_vec_kernel(const CausalConv1dParams p, int64_t span) {
  constexpr int VEC = VB / sizeof(T), S = W - 1;
  using V = Vec<T, VEC>;
  const int64_t D = p.dim, L = p.seqlen;
  const int64_t d0 = (int64_t(blockIdx.x) * kConvThreads + threadIdx.x) * VEC;
  if (d0 >= D) return;
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
    T* fin = static_cast<T*>(p.final_state) + (b * D + d0) * S;
    for (int64_t t_begin = blockIdx.y * span; t_begin < L || (L == 0 && t_begin == 0); t_begin += gridDim.y * span) {
      const int64_t t_end = t_begin + span < L ? t_begin + span : L;
      // hist[k] = input at step t - S + k for the next output step t.
      float hist[S > 0 ? S : 1][VEC];
#pragma unroll
      for (int k = 0; k < S; ++k) {
        const int64_t tt = t_begin - S + k;
        const V r = tt >= 0 ? load_vec<T, VEC>(x + tt * D) : conv_input_before_start<T, VEC>(init, tt, S);
#pragma unroll
        for (int v = 0; v < VEC; ++v) hist[k][v] = to_f32(r.v[v]);
      }
      auto step = [&](const V& cur, int64_t t) {
        float c[VEC];
        V out;
#pragma unroll
        for (int v = 0; v < VEC; ++v) {
          c[v] = to_f32(cur.v[v]);
          float acc = fmaf(w[S][v], c[v], bias[v]);
#pragma unroll
          for (int q = 0; q < S; ++q) acc = fmaf(w[q][v], hist[q][v], acc);
          out.v[v] = from_f32<T>(p.silu ? silu(acc) : acc);
        }
        store_vec<T, VEC>(y + t * D, out);
#pragma unroll
        for (int v = 0; v < VEC; ++v) {
#pragma unroll
          for (int q = 0; q + 1 < S; ++q) hist[q][v] = hist[q + 1][v];
          if (S > 0) hist[S - 1][v] = c[v];
        }
      };
      int64_t t0 = t_begin;
      for (; t0 + P <= t_end; t0 += P) {  // whole groups: P loads, then P outputs, no guards
        V buf[P];
        const T* xr = x + t0 * D;
#pragma unroll
        for (int i = 0; i < P; ++i, xr += D) buf[i] = load_vec<T, VEC>(xr);
#pragma unroll
        for (int i = 0; i < P; ++i) step(buf[i], t0 + i);
      }
      for (; t0 < t_end; ++t0) step(load_vec<T, VEC>(x + t0 * D), t0);
      // The span holding the last step (or the only one, L == 0) writes the final state: the inputs
      // at steps L - S ... L - 1, exact copies.
      if (t_end == L) {
#pragma unroll
        for (int k = 0; k < S; ++k)
#pragma unroll
          for (int v = 0; v < VEC; ++v) fin[v * S + k] = from_f32<T>(hist[k][v]);
      }
      if (L == 0) break;
    }
  }
}

constexpr int kConvVecBytes = 8;  // VB
constexpr int kConvVecRows = 16;  // P
constexpr int64_t kConvVecWantThreads = 132 * 512;

// VB, P: the vector kernel's bytes per vector and rows per group (the checker times other choices).
template <typename T, int W, int VB, int P>
cudaError_t launch_conv_width(const CausalConv1dParams& p, cudaStream_t stream, int64_t want_threads) {
  constexpr int EV = VB / sizeof(T);
  // Packed sequences (seq_idx) take the kernel that masks taps per step.
  const bool vec = p.dim % EV == 0 && aligned_host(p.x, VB) && aligned_host(p.y, VB) && p.seq_idx == nullptr;
  const int vecw = vec ? EV : 1;
  const int64_t nvec = p.dim / vecw;
  const int64_t R = vec ? P : kConvRows;
  if (want_threads <= 0) want_threads = vec ? kConvVecWantThreads : kConvWantThreads;
  // Span length: a multiple of R, long enough that batch x vectors x spans ~ want_threads and
  // that the span count fits gridDim.y.
  const int64_t units = p.seqlen > 0 ? (p.seqlen + R - 1) / R : 1;
  const int64_t lanes = p.batch * nvec;
  int64_t spans = (want_threads + lanes - 1) / lanes;
  if (spans > units) spans = units;
  if (spans < 1) spans = 1;
  int64_t span = ((units + spans - 1) / spans) * R;
  int64_t nspans = p.seqlen > 0 ? (p.seqlen + span - 1) / span : 1;
  if (nspans > 65535) {
    span = ((p.seqlen + 65535 - 1) / 65535 + R - 1) / R * R;
    nspans = (p.seqlen + span - 1) / span;
  }
  const int ch_per_block = kConvThreads * vecw;
  const dim3 grid(static_cast<unsigned>((p.dim + ch_per_block - 1) / ch_per_block), static_cast<unsigned>(nspans),
                  static_cast<unsigned>(p.batch < 65535 ? p.batch : 65535));
  if (vec)
    causal_conv1d_vec_kernel<T, W, VB, P><<<grid, kConvThreads, 0, stream>>>(p, span);
  else
    causal_conv1d_kernel<T, W, 1><<<grid, kConvThreads, 0, stream>>>(p, span);
  return cudaGetLastError();
}

// want_threads: how many threads the span length aims for, 0 = the path's default (tests pass small
// values to force long spans).
template <typename T, int VB = kConvVecBytes, int P = kConvVecRows>
cudaError_t launch_causal_conv1d(const CausalConv1dParams& p, cudaStream_t stream, int64_t want_threads = 0) {
  if (p.batch == 0 || p.dim == 0) return cudaSuccess;
  switch (p.width) {
    case 2: return launch_conv_width<T, 2, VB, P>(p, stream, want_threads);
    case 3: return launch_conv_width<T, 3, VB, P>(p, stream, want_threads);
    case 4: return launch_conv_width<T, 4, VB, P>(p, stream, want_threads);
    case 5: return launch_conv_width<T, 5, VB, P>(p, stream, want_threads);
    case 6: return launch_conv_width<T, 6, VB, P>(p, stream, want_threads);
    case 7: return launch_conv_width<T, 7, VB, P>(p, stream, want_threads);
    case 8: return launch_conv_width<T, 8, VB, P>(p, stream, want_threads);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace cuda
}  // namespace mamba_jax
