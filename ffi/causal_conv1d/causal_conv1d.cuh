// CUDA kernel of causal_conv1d (prefill), the causal depthwise conv1d over a sequence.
// Framework-free: CausalConv1dParams in, cudaGetLastError() of the launch out.
//
// causal_conv1d is memory-bound (one read of x, one write of y). A thread owns VEC consecutive
// channels (one 16-byte vector: 8 bf16/f16 or 4 f32) and TR consecutive steps: it issues all
// TR + W - 1 row loads at once (the W - 1 rows before its run are re-read from L2 by the
// neighbouring run), then slides the window in registers. A warp covers 32 vectors of one row,
// so every load and store is a coalesced 512-byte (bf16) row segment.
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

// The vector path (dim a multiple of 16 / sizeof(T), 16-byte aligned rows): the same span
// decomposition, but x rows travel global -> shared memory by cp.async, NST groups of
// kConvStageRows rows ahead of the rows being computed, so a thread keeps up to NST x 8 x 16 bytes in
// flight without holding them in registers. Each thread reads back only the 16-byte column it
// copied, so no barrier is needed after the weights are in registers; the weight staging area is
// reused for the x stages. The W - 1 rows before the span (its halo) travel by cp.async too, with
// the first group, into the last slot (v4 loaded them synchronously: latency at every span start
// that short spans could not hide); the last slot's own group is issued once they are in registers.
// The last W - 1 inputs stay in registers as float (exact for every T).
// MINB > 0 asks ptxas for MINB resident blocks per SM (a register cap).
// Measured on the H200 (B4 L2048 D5120 W4 bf16). Kernel alone (three runs): threads wanted 67K / 135K /
// 270K / 540K = 0.080 / 0.074-0.075 / 0.067-0.069 / 0.069-0.071 ms with 3 stages; 2 stages 0.071-0.082;
// 2 stages capped at 5 blocks/SM 0.071-0.079. In the benchmark's jitted chain (full mode) 270K took
// 0.088 ms in two runs and 135K 0.092 in one. So 3 stages and ~270K threads.
constexpr int kConvStageRows = 8;
constexpr int kConvStages = 3;
constexpr int64_t kConvVecWantThreads = 132 * 1024 * 2;

template <typename T, int W, int NST, int MINB>
__global__ void __launch_bounds__(kConvThreads, MINB)
causal_conv1d_vec_kernel(const CausalConv1dParams p, int64_t span) {
  constexpr int VEC = 16 / sizeof(T), S = W - 1, R = kConvStageRows;
  constexpr int CH = kConvThreads * VEC;
  constexpr size_t kStageBytes = size_t(NST) * R * kConvThreads * 16;
  constexpr size_t kWeightBytes = size_t(W + 1) * CH * sizeof(float);
  constexpr size_t kSmemBytes = kStageBytes > kWeightBytes ? kStageBytes : kWeightBytes;
  static_assert(S <= R, "the halo fits in one slot");
  static_assert(NST >= 2, "the halo shares the last slot with a later group");
  using V = Vec<T, VEC>;
  __shared__ __align__(16) unsigned char smem[kSmemBytes];
  float* s_w = reinterpret_cast<float*>(smem);  // [W][CH], then the bias [CH]
  float* s_b = s_w + W * CH;
  const int64_t D = p.dim, L = p.seqlen;
  const int64_t c_begin = int64_t(blockIdx.x) * CH;
  const int nc = static_cast<int>(D - c_begin < CH ? D - c_begin : CH);
  for (int i = threadIdx.x; i < nc * W; i += kConvThreads) s_w[(i % W) * CH + i / W] = p.weight[c_begin * W + i];
  for (int i = threadIdx.x; i < nc; i += kConvThreads) s_b[i] = p.bias ? p.bias[c_begin + i] : 0.0f;
  __syncthreads();
  const int lc = threadIdx.x * VEC;
  float w[W][VEC], bias[VEC];
#pragma unroll
  for (int v = 0; v < VEC; ++v) {
#pragma unroll
    for (int k = 0; k < W; ++k) w[k][v] = lc < nc ? s_w[k * CH + lc + v] : 0.0f;
    bias[v] = lc < nc ? s_b[lc + v] : 0.0f;
  }
  __syncthreads();  // the weight area becomes the x stages
  if (lc >= nc) return;
  const int64_t d0 = c_begin + lc;
  V* stage = reinterpret_cast<V*>(smem) + threadIdx.x;  // (slot, row) at stage[(slot * R + row) * threads]
  V* halo = stage + (NST - 1) * R * kConvThreads;       // the last slot, rows 0 .. S - 1

  for (int64_t b = blockIdx.z; b < p.batch; b += gridDim.z) {
    const T* x = static_cast<const T*>(p.x) + b * L * D + d0;
    T* y = static_cast<T*>(p.y) + b * L * D + d0;
    const T* init = p.initial_state ? static_cast<const T*>(p.initial_state) + (b * D + d0) * S : nullptr;
    T* fin = static_cast<T*>(p.final_state) + (b * D + d0) * S;
    for (int64_t t_begin = blockIdx.y * span; t_begin < L || (L == 0 && t_begin == 0); t_begin += gridDim.y * span) {
      const int64_t t_end = t_begin + span < L ? t_begin + span : L;
      const int64_t nsub = (t_end - t_begin + R - 1) / R;
      auto issue = [&](int64_t k) {
        if (k < nsub) {
#pragma unroll
          for (int r = 0; r < R; ++r) {
            const int64_t t = t_begin + k * R + r;
            if (t < t_end) cp_async16(stage + ((k % NST) * R + r) * kConvThreads, x + t * D);
          }
        }
        cp_async_commit();  // one group per call, empty or not, so the group count stays k + 1
      };
      // Halo rows at steps >= 0 join group 0; those before the sequence come from the initial state.
#pragma unroll
      for (int k = 0; k < S; ++k) {
        const int64_t tt = t_begin - S + k;
        if (tt >= 0) cp_async16(halo + k * kConvThreads, x + tt * D);
      }
#pragma unroll
      for (int k = 0; k < NST - 1; ++k) issue(k);
      cp_async_wait_group<NST - 2>();  // group 0 (with the halo) has landed
      // hist[k] = input at step t - S + k for the next output step t (float: exact for every T).
      float hist[S > 0 ? S : 1][VEC];
#pragma unroll
      for (int k = 0; k < S; ++k) {
        const int64_t tt = t_begin - S + k;
        const V r = tt >= 0 ? halo[k * kConvThreads] : conv_input_before_start<T, VEC>(init, tt, S);
#pragma unroll
        for (int v = 0; v < VEC; ++v) hist[k][v] = to_f32(r.v[v]);
      }
      issue(NST - 1);  // the last slot is free again (this thread's halo column is in registers)
      for (int64_t k = 0; k < nsub; ++k) {
        cp_async_wait_group<NST - 1>();  // group k has landed
        const V* st = stage + (k % NST) * R * kConvThreads;
        const int rows = static_cast<int>(t_end - (t_begin + k * R) < R ? t_end - (t_begin + k * R) : R);
        auto row = [&](int r) {
          const V cur = st[r * kConvThreads];
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
          store_vec<T, VEC>(y + (t_begin + k * R + r) * D, out);
#pragma unroll
          for (int v = 0; v < VEC; ++v) {
#pragma unroll
            for (int q = 0; q + 1 < S; ++q) hist[q][v] = hist[q + 1][v];
            if (S > 0) hist[S - 1][v] = c[v];
          }
        };
        if (rows == R) {  // full group: straight-line code, no per-row guards
#pragma unroll
          for (int r = 0; r < R; ++r) row(r);
        } else {
#pragma unroll
          for (int r = 0; r < R; ++r)
            if (r < rows) row(r);
        }
        issue(k + NST);  // into the slot just read (its values are in registers now)
      }
      cp_async_wait_group<0>();
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

// NST, MINB: the vector kernel's stages and min blocks per SM (the checker times other choices).
template <typename T, int W, int NST, int MINB>
cudaError_t launch_conv_width(const CausalConv1dParams& p, cudaStream_t stream, int64_t want_threads) {
  constexpr int EV = 16 / sizeof(T);
  // Packed sequences (seq_idx) take the kernel that masks taps per step.
  const bool vec = p.dim % EV == 0 && aligned16_host(p.x) && aligned16_host(p.y) && p.seq_idx == nullptr;
  const int vecw = vec ? EV : 1;
  const int64_t nvec = p.dim / vecw;
  const int64_t R = vec ? kConvStageRows : kConvRows;
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
    causal_conv1d_vec_kernel<T, W, NST, MINB><<<grid, kConvThreads, 0, stream>>>(p, span);
  else
    causal_conv1d_kernel<T, W, 1><<<grid, kConvThreads, 0, stream>>>(p, span);
  return cudaGetLastError();
}

// want_threads: how many threads the span length aims for, 0 = the path's default (tests pass small
// values to force long spans).
template <typename T, int NST = kConvStages, int MINB = 0>
cudaError_t launch_causal_conv1d(const CausalConv1dParams& p, cudaStream_t stream, int64_t want_threads = 0) {
  if (p.batch == 0 || p.dim == 0) return cudaSuccess;
  switch (p.width) {
    case 2: return launch_conv_width<T, 2, NST, MINB>(p, stream, want_threads);
    case 3: return launch_conv_width<T, 3, NST, MINB>(p, stream, want_threads);
    case 4: return launch_conv_width<T, 4, NST, MINB>(p, stream, want_threads);
    case 5: return launch_conv_width<T, 5, NST, MINB>(p, stream, want_threads);
    case 6: return launch_conv_width<T, 6, NST, MINB>(p, stream, want_threads);
    case 7: return launch_conv_width<T, 7, NST, MINB>(p, stream, want_threads);
    case 8: return launch_conv_width<T, 8, NST, MINB>(p, stream, want_threads);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace cuda
}  // namespace mamba_jax
