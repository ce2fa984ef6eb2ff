// CUDA kernels of selective_scan (prefill): the lane kernel below, and the time-parallel kernel of
// scan_tp.cuh, which the launcher (end of file) takes wherever it applies.
// Framework-free: SelectiveScanParams and a cudaStream_t in; the launcher returns
// cudaGetLastError() of its launches and never allocates or synchronises.
//
// selective_scan: the work is B x D x N independent recurrences over L steps, each step costing one
// exp (MUFU.EX2, 16 per SM per clock) and four float ops. The kernel spreads the N states of one
// channel over G lanes of a warp (S = N/G states per lane, in registers), so that B x D x N lanes
// fill the chip without splitting the sequence, and keeps every exponential computed once.
// A block owns K = 16 consecutive channels of one batch row (two 16-byte bf16 vectors) and walks the
// sequence in chunks of TC steps staged through shared memory:
//   1. cp.async brings chunk k+1 (u, delta, z rows and the group's B, C rows) into the other stage
//      while chunk k is processed;
//   2. "prepare" turns chunk k into float32: dt = softplus(delta + bias), dt*u, and B, C, once per
//      (step, channel) instead of once per lane;
//   3. "compute" runs the recurrence; each lane's partial <h_t, C_t> over its S states is summed
//      over the G lanes with a transposed butterfly, so after G steps lane j holds y for step j
//      and finishes it (D skip, silu(z) gate) with no idle lanes;
//   4. y goes through shared memory and out as 16-byte row stores.
#pragma once

#include <algorithm>
#include <type_traits>

#include "common/cuda_common.cuh"
#include "selective_scan/params.h"
#include "selective_scan/scan_tp.cuh"

namespace mamba_jax {
namespace cuda {

// What one launch covers: channels [d_begin, d_end), all in groups of `per_group` channels.
// Sequence split (a grid too small for the chip): blockIdx.y is a piece of chunk_len steps (the last
// piece takes the rest). Pass kScanEnd runs pieces 0 .. P-2 from a zero state and leaves each one's end
// state and sum of dt in the next piece's "band" of y; scan_carry_kernel turns those into the state
// entering each piece; pass kScanFinal runs every piece from that state and writes y over the band.
// A block's band is y[b, piece start + r, d0 .. d0 + K) for the first rows r: only that block writes
// there, after reading it.
enum ScanPass : int { kScanWhole = 0, kScanEnd = 1, kScanFinal = 2 };
struct ScanLaunch {
  int64_t d_begin, d_end, per_group;
  int64_t channel_blocks;  // ceil((d_end - d_begin) / kChannels)
  bool vec_act;            // u/delta/z/y rows of a block are 16-byte aligned vectors
  bool vec_bc;             // B/C rows are 16-byte aligned vectors and dstate is the padded size
  int pass;                // ScanPass
  int64_t chunk_len, pieces;  // the split (pass != kScanWhole)
};

// Float f of the band of the block at channels d0 .. d0 + K of batch row b and the piece starting at
// step t0: K * sizeof(T) / 4 floats per y row. Slot c * (N + 1) + n holds channel c's state n, slot
// c * (N + 1) + N its sum of dt.
template <typename T, int K>
MJ_DEVICE float* scan_band(const SelectiveScanParams& p, int64_t b, int64_t t0, int64_t d0, int64_t f) {
  constexpr int kFpr = K * static_cast<int>(sizeof(T)) / 4;
  return reinterpret_cast<float*>(static_cast<T*>(p.y) + b * p.u_batch_stride + (t0 + f / kFpr) * p.dim + d0) +
         f % kFpr;
}

// Rows of y a band takes.
template <typename T, int K>
constexpr int64_t scan_band_rows(int64_t dstate) {
  return (K * (dstate + 1) + K * int64_t(sizeof(T)) / 4 - 1) / (K * int64_t(sizeof(T)) / 4);
}

// One thread per (b, d, n): the state entering piece q = exp(A * sum dt of piece q-1) * the state entering
// q-1 + piece q-1's end state from zero, written over the latter in piece q's band.
template <typename T, int K>
__global__ void __launch_bounds__(256) scan_carry_kernel(const SelectiveScanParams p, const ScanLaunch ln) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t N = p.dstate, D = p.dim;
  if (i >= p.batch * D * N) return;
  const int64_t n = i % N, d = (i / N) % D, b = i / (N * D);
  const int64_t d0 = d - d % K, c = d % K;
  const float a2 = p.A[d * N + n] * kLog2e;
  float h = p.initial_state ? p.initial_state[i] : 0.0f;
  for (int64_t q = 1; q < ln.pieces; ++q) {
    float* slot = scan_band<T, K>(p, b, q * ln.chunk_len, d0, c * (N + 1) + n);
    const float sdt = *scan_band<T, K>(p, b, q * ln.chunk_len, d0, c * (N + 1) + N);
    h = fmaf(exp2f(a2 * sdt), h, *slot);
    *slot = h;
  }
}

// S states per lane, G lanes per channel (S * G = padded dstate), K channels per block.
template <int S, int G, int K>
struct ScanCfg {
  static constexpr int kChannels = K;
  static constexpr int kThreads = K * G;
  static constexpr int kNpad = S * G;
  static constexpr int kChunkWanted = 1024 / kNpad;  // keep the B/C stages ~24 KB at most
  static constexpr int kChunk = kChunkWanted > 64 ? 64 : (kChunkWanted < G ? G : kChunkWanted);
  static_assert(kThreads % 32 == 0, "a block is whole warps");
  static_assert(kChunk % G == 0, "the butterfly covers G steps at a time");

  template <typename T>
  static constexpr size_t smem_bytes() {
    return kChunk * kChannels * sizeof(float2) + 2 * kChunk * kNpad * sizeof(float) +
           (2 * 3 * kChunk * kChannels + 2 * 2 * kChunk * kNpad + kChunk * kChannels) * sizeof(T);
  }
};

// f(v) for v = tid, tid + NT, ... below COUNT: a fixed trip count (unrolled, constant index math)
// instead of a loop bounded at run time.
template <int COUNT, int NT, typename F>
MJ_DEVICE void for_strided(int tid, F&& f) {
#pragma unroll
  for (int it = 0; it < (COUNT + NT - 1) / NT; ++it) {
    const int v = tid + it * NT;
    if (COUNT % NT == 0 || v < COUNT) f(v);
  }
}

// v[k] holds this lane's partial sum for step k (k < G). Afterwards v[0] holds the sum over the G
// lanes of the group for step j (this lane's index in the group). G - 1 shuffles per lane.
template <int G>
MJ_DEVICE void transpose_reduce(float (&v)[G], int j) {
#pragma unroll
  for (int half = G / 2; half >= 1; half /= 2) {
    const bool upper = (j & half) != 0;
#pragma unroll
    for (int i = 0; i < half; ++i) {
      const float send = upper ? v[i] : v[i + half];
      const float keep = upper ? v[i + half] : v[i];
      v[i] = keep + __shfl_xor_sync(0xffffffffu, send, half);
    }
  }
}

// UNR: step groups per iteration of the compute loop (2 lets one group's butterfly overlap the next
// group's scan; measured on the H200 1-3% slower than 1 at the four benchmark shapes, so 1 is the
// default). The body is shared by two kernels that differ only in what they tell the register
// allocator (see launch_scan_cfg's MB).
//
// Shared memory: the float32 B and C of a step are interleaved per lane, s_BC[t][j] = {B[j*S ..
// j*S+S-1], C[j*S .. j*S+S-1]}, so that a lane reads both with one access (one 16-byte load at S = 2).
// The staging of a chunk (cp.async of the raw rows, then their conversion to float32) has fixed trip
// counts where B/C rows are whole vectors of the padded dstate: v4 computed its B/C row indices with
// run-time divisions, and everything outside the recurrence cost ~9 of the ~24 instructions per
// state-step measured by Nsight Compute.
template <typename T, int S, int G, int K, int UNR>
MJ_DEVICE void selective_scan_body(const SelectiveScanParams& p, const ScanLaunch& ln) {
  using Cfg = ScanCfg<S, G, K>;
  constexpr int NP = Cfg::kNpad, TC = Cfg::kChunk, NT = Cfg::kThreads;
  constexpr int EV = 16 / sizeof(T);  // elements per 16-byte vector
  constexpr int VPR = K / EV;         // 16-byte vectors per block row of an activation
  static_assert(K % EV == 0, "a block row is whole vectors");

  extern __shared__ __align__(16) unsigned char smem[];
  float2* s_dtdu = reinterpret_cast<float2*>(smem);         // [TC][K]   (dt, dt * u)
  float* s_BC = reinterpret_cast<float*>(s_dtdu + TC * K);  // [TC][G][2S]  (B, C per lane)
  T* raw_act = reinterpret_cast<T*>(s_BC + 2 * TC * NP);    // [2 stages][u, delta, z][TC][K]
  T* raw_bc = raw_act + 2 * 3 * TC * K;                     // [2 stages][B, C][TC][NP]
  T* s_y = raw_bc + 2 * 2 * TC * NP;                        // [TC][K]

  const int tid = threadIdx.x;
  const int c = tid / G, j = tid % G;
  const int64_t b = blockIdx.x / ln.channel_blocks;
  const int64_t d0 = ln.d_begin + (blockIdx.x % ln.channel_blocks) * K;
  const int nch = static_cast<int>(ln.d_end - d0 < K ? ln.d_end - d0 : K);
  const int64_t D = p.dim, N = p.dstate;
  const int64_t grp = d0 / ln.per_group;
  // This block's piece of the sequence: steps [t_begin, t_begin + L).
  const int64_t piece = blockIdx.y;
  const bool split = ln.pass != kScanWhole, end_only = ln.pass == kScanEnd;
  const bool last_piece = !split || piece == ln.pieces - 1;
  const int64_t t_begin = split ? piece * ln.chunk_len : 0;
  const int64_t L = last_piece ? p.seqlen - t_begin : ln.chunk_len;

  const int64_t act_off = b * p.u_batch_stride + t_begin * D + d0;
  const T* u_g = static_cast<const T*>(p.u) + act_off;
  const T* dl_g = static_cast<const T*>(p.delta) + act_off;
  const T* z_g = (p.z && !end_only) ? static_cast<const T*>(p.z) + act_off : nullptr;
  T* y_g = static_cast<T*>(p.y) + act_off;
  const int64_t bc_off = b * p.bc_batch_stride + t_begin * p.bc_seq_stride + grp * p.bc_group_stride;
  const T* B_g = static_cast<const T*>(p.Bm) + bc_off;
  const T* C_g = static_cast<const T*>(p.Cm) + bc_off;

  // This lane's recurrence: channel d, states j*S ... j*S+S-1 (padding states stay zero).
  const int64_t d = d0 + c;
  const bool chan_ok = c < nch;
  float A2[S], h[S];
#pragma unroll
  for (int s = 0; s < S; ++s) {
    const int64_t n = int64_t(j) * S + s;
    const bool ok = chan_ok && n < N;
    A2[s] = ok ? p.A[d * N + n] * kLog2e : 0.0f;
    if (end_only)  // every piece from zero (scan_carry_kernel adds the initial state)
      h[s] = 0.0f;
    else if (piece > 0)  // the carried state in this piece's band
      h[s] = ok ? *scan_band<T, K>(p, b, t_begin, d0, c * (N + 1) + n) : 0.0f;
    else
      h[s] = (ok && p.initial_state) ? p.initial_state[(b * D + d) * N + n] : 0.0f;
  }
  float sum_dt = 0.0f;  // kScanEnd: this channel's sum of dt over the piece
  const float dskip = (chan_ok && p.Dskip) ? p.Dskip[d] : 0.0f;
  // In "prepare", thread tid always handles channel tid % K (NT is a multiple of K).
  const int pc = tid % K;
  const bool pc_ok = pc < nch;
  const float pbias = (pc_ok && p.delta_bias) ? p.delta_bias[d0 + pc] : 0.0f;

  const int64_t nchunks = (L + TC - 1) / TC;

  auto rows_of = [&](int64_t k) -> int { return static_cast<int>(L - k * TC < TC ? L - k * TC : TC); };
  // Float index in s_BC of state n of B (q = 0) or C (q = 1) at chunk step t.
  auto bc_index = [](int t, int q, int n) { return (t * G + n / S) * (2 * S) + q * S + n % S; };

  auto load_chunk = [&](int64_t k, int st) {
    const int64_t t0 = k * TC;
    const int rows = rows_of(k);
    T* ra = raw_act + st * 3 * TC * K;
    T* rb = raw_bc + st * 2 * TC * NP;
    if (ln.vec_act) {
      for_strided<3 * TC * VPR, NT>(tid, [&](int v) {
        const int q = v / (TC * VPR), r = v % (TC * VPR), t = r / VPR, part = r % VPR;
        const T* base = q == 0 ? u_g : (q == 1 ? dl_g : z_g);
        if (base != nullptr && t < rows)
          cp_async16(ra + (q * TC + t) * K + part * EV, base + (t0 + t) * D + part * EV);
      });
    } else {
      for (int v = tid; v < 3 * TC * K; v += NT) {
        const int q = v / (TC * K), r = v % (TC * K), t = r / K, cc = r % K;
        const T* base = q == 0 ? u_g : (q == 1 ? dl_g : z_g);
        ra[(q * TC + t) * K + cc] =
            (base != nullptr && t < rows && cc < nch) ? base[(t0 + t) * D + cc] : from_f32<T>(0.0f);
      }
    }
    if constexpr (NP % EV == 0) {
      if (ln.vec_bc) {  // dstate == NP: rows of NP / EV whole vectors, fixed trip count
        constexpr int VB = NP / EV;
        for_strided<2 * TC * VB, NT>(tid, [&](int v) {
          const int q = v / (TC * VB), r = v % (TC * VB), t = r / VB, part = r % VB;
          if (t < rows)
            cp_async16(rb + (q * TC + t) * NP + part * EV, (q == 0 ? B_g : C_g) + (t0 + t) * p.bc_seq_stride + part * EV);
        });
        cp_async_commit();
        return;
      }
    }
    for (int v = tid; v < 2 * TC * NP; v += NT) {
      const int q = v / (TC * NP), r = v % (TC * NP), t = r / NP, n = r % NP;
      rb[(q * TC + t) * NP + n] = (t < rows && n < N) ? (q == 0 ? B_g : C_g)[(t0 + t) * p.bc_seq_stride + n]
                                                      : from_f32<T>(0.0f);
    }
    cp_async_commit();
  };

  // Raw chunk k -> float32 operands of the recurrence. Steps past the end get dt = 0 and B = 0, so
  // they leave the state as it is (exp(0) = 1), which keeps last_state right.
  auto prepare = [&](int64_t k, int st) {
    const int rows = rows_of(k);
    const T* ra = raw_act + st * 3 * TC * K;
    const T* rb = raw_bc + st * 2 * TC * NP;
    // Thread tid: channel pc, steps tid / K + G * it (NT = K * G). Unrolled only 2x: fully unrolled,
    // ptxas hoisted every load and softplus of the chunk and the kernel took 232 registers.
#pragma unroll 2
    for (int it = 0; it < TC / G; ++it) {
      const int t = tid / K + it * G;
      float2 v = make_float2(0.0f, 0.0f);
      if (t < rows && pc_ok) {
        float dt = to_f32(ra[(TC + t) * K + pc]) + pbias;
        if (p.delta_softplus) dt = softplus(dt);
        v = make_float2(dt, dt * to_f32(ra[t * K + pc]));
      }
      s_dtdu[t * K + pc] = v;
    }
    // B/C: EV raw values (one 16-byte vector) per iteration, written as runs of M = min(S, EV)
    // consecutive floats. Raw values of padding states are zero (see load_chunk) or unused (vec_bc:
    // dstate == NP), and rows past the end are written as zeros.
    constexpr int M = S < EV ? S : EV;
    constexpr int VB2 = NP / EV > 0 ? NP / EV : 1;
    if constexpr (NP % EV == 0) {
      for_strided<2 * TC * VB2, NT>(tid, [&](int v) {
        const int q = v / (TC * VB2), r = v % (TC * VB2), t = r / VB2, n0 = (r % VB2) * EV;
        const Vec<T, EV> raw = load_vec<T, EV>(rb + (q * TC + t) * NP + n0);
        const bool ok = t < rows;
        float f[EV];
#pragma unroll
        for (int e = 0; e < EV; ++e) f[e] = ok ? to_f32(raw.v[e]) : 0.0f;
#pragma unroll
        for (int e = 0; e < EV; e += M) store_floats<M>(s_BC + bc_index(t, q, n0 + e), f + e);
      });
    } else {
      for (int i = tid; i < 2 * TC * NP; i += NT) {
        const int q = i / (TC * NP), r = i % (TC * NP), t = r / NP, n = r % NP;
        s_BC[bc_index(t, q, n)] = t < rows ? to_f32(rb[i]) : 0.0f;
      }
    }
  };

  auto store_y = [&](int64_t k) {
    const int64_t t0 = k * TC;
    const int rows = rows_of(k);
    if (ln.vec_act) {
      for_strided<TC * VPR, NT>(tid, [&](int v) {
        const int t = v / VPR, part = v % VPR;
        if (t < rows)
          *reinterpret_cast<int4*>(y_g + (t0 + t) * D + part * EV) =
              *reinterpret_cast<const int4*>(s_y + t * K + part * EV);
      });
    } else {
      for (int v = tid; v < TC * K; v += NT) {
        const int t = v / K, cc = v % K;
        if (t < rows && cc < nch) y_g[(t0 + t) * D + cc] = s_y[t * K + cc];
      }
    }
  };

  auto compute = [&](int st) {
    const T* ra = raw_act + st * 3 * TC * K;
    if (end_only) {  // the recurrence alone (no y)
      for (int t = 0; t < TC; ++t) {
        const float2 dd = s_dtdu[t * K + c];
        float bc[2 * S];
        load_lane_floats<2 * S>(s_BC + (t * G + j) * (2 * S), bc);
#pragma unroll
        for (int s = 0; s < S; ++s) h[s] = fmaf(exp2_decay(dd.x * A2[s]), h[s], dd.y * bc[s]);
        sum_dt += dd.x;
      }
      return;
    }
#pragma unroll UNR
    for (int tb = 0; tb < TC; tb += G) {
      float part[G];
#pragma unroll
      for (int kk = 0; kk < G; ++kk) {
        const int t = tb + kk;
        const float2 dd = s_dtdu[t * K + c];
        float bc[2 * S];
        load_lane_floats<2 * S>(s_BC + (t * G + j) * (2 * S), bc);
        float acc = 0.0f;
#pragma unroll
        for (int s = 0; s < S; ++s) {
          const float dA = exp2_decay(dd.x * A2[s]);
          h[s] = fmaf(dA, h[s], dd.y * bc[s]);
          acc = fmaf(h[s], bc[S + s], acc);
        }
        part[kk] = acc;
      }
      transpose_reduce<G>(part, j);
      const int t = tb + j;
      float yv = part[0] + dskip * to_f32(ra[t * K + c]);
      if (z_g != nullptr) yv *= silu(to_f32(ra[(2 * TC + t) * K + c]));
      s_y[t * K + c] = from_f32<T>(yv);
    }
  };

  if (nchunks > 0) load_chunk(0, 0);
  for (int64_t k = 0; k < nchunks; ++k) {
    const int st = static_cast<int>(k & 1);
    cp_async_wait_all();
    __syncthreads();  // chunk k landed; chunk k-1's compute is done with s_* and stage st^1
    if (k + 1 < nchunks) load_chunk(k + 1, st ^ 1);
    if (k > 0 && !end_only) store_y(k - 1);
    prepare(k, st);
    __syncthreads();
    compute(st);
  }
  __syncthreads();
  if (nchunks > 0 && !end_only) store_y(nchunks - 1);

  if (end_only) {  // into the next piece's band (the split needs D % K == 0: every channel is there)
    const int64_t t_next = t_begin + L;
#pragma unroll
    for (int s = 0; s < S; ++s) {
      const int64_t n = int64_t(j) * S + s;
      if (n < N) *scan_band<T, K>(p, b, t_next, d0, c * (N + 1) + n) = h[s];
    }
    if (j == 0) *scan_band<T, K>(p, b, t_next, d0, c * (N + 1) + N) = sum_dt;
  } else if (last_piece) {
#pragma unroll
    for (int s = 0; s < S; ++s) {
      const int64_t n = int64_t(j) * S + s;
      if (chan_ok && n < N) p.last_state[(b * D + d) * N + n] = h[s];
    }
  }
}

template <typename T, int S, int G, int K, int UNR>
__global__ void __launch_bounds__(ScanCfg<S, G, K>::kThreads)
selective_scan_kernel(const SelectiveScanParams p, const ScanLaunch ln) {
  selective_scan_body<T, S, G, K, UNR>(p, ln);
}

template <typename T, int S, int G, int K, int UNR, int MB>
__global__ void __launch_bounds__(ScanCfg<S, G, K>::kThreads, MB)
selective_scan_kernel_mb(const SelectiveScanParams p, const ScanLaunch ln) {
  selective_scan_body<T, S, G, K, UNR>(p, ln);
}

// MB: 0 = only the block size is declared (ptxas gives the S2xG8 kernel 142 registers at K = 16, 3
// blocks/SM; in v4, at K = 8, declaring "at least 1 block" instead let it take 204 registers and made it
// 1.6x slower at B1 D5120); MB > 0 asks for MB resident blocks per SM (registers capped, may spill).
constexpr int64_t kMaxScanPieces = 16;

// split_ok: the sequence may be split when the grid is small (see ScanLaunch).
template <typename T, int S, int G, int K = 16, int UNR = 1, int MB = 0>
cudaError_t launch_scan_cfg(const SelectiveScanParams& p, cudaStream_t stream, bool split_ok = true) {
  using Cfg = ScanCfg<S, G, K>;
  constexpr int EV = 16 / sizeof(T);
  const size_t smem = Cfg::template smem_bytes<T>();
  auto kernel = [] {
    if constexpr (MB == 0) return selective_scan_kernel<T, S, G, K, UNR>;
    else return selective_scan_kernel_mb<T, S, G, K, UNR, MB>;
  }();
  if (smem > 48 * 1024) {
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (e != cudaSuccess) return e;
  }
  const int64_t per_group = p.dim / p.ngroups;
  // One launch when every block of K channels sits inside one group (always for ngroups == 1),
  // otherwise one launch per group.
  const bool one_launch = p.ngroups == 1 || per_group % K == 0;
  const int64_t launches = one_launch ? 1 : p.ngroups;
  auto al = [](const void* q) { return q == nullptr || (reinterpret_cast<uintptr_t>(q) & 15u) == 0; };
  const bool ptrs_act = al(p.u) && al(p.delta) && al(p.z) && al(p.y);
  constexpr bool kWholeVectors = Cfg::kNpad % EV == 0;  // else B/C rows always go the scalar way
  const bool vec_bc = kWholeVectors && p.dstate == Cfg::kNpad && al(p.Bm) && al(p.Cm);
  for (int64_t g = 0; g < launches; ++g) {
    ScanLaunch ln;
    ln.d_begin = one_launch ? 0 : g * per_group;
    ln.d_end = one_launch ? p.dim : (g + 1) * per_group;
    ln.per_group = per_group;
    ln.channel_blocks = (ln.d_end - ln.d_begin + K - 1) / K;
    // Row vectors only when every block is K whole channels (no vector may straddle a block edge).
    ln.vec_act = ptrs_act && p.dim % EV == 0 && ln.d_begin % EV == 0 && (ln.d_end - ln.d_begin) % K == 0;
    ln.vec_bc = vec_bc;
    ln.pass = kScanWhole;
    ln.chunk_len = p.seqlen;
    ln.pieces = 1;
    const int64_t blocks = ln.channel_blocks * p.batch;
    // Sequence split when the grid fills at most half of the blocks the chip holds at once: P pieces
    // of >= `band` steps (a multiple of the staging chunk), P * blocks about the resident blocks.
    if (one_launch && ln.vec_act && p.dim % K == 0 && split_ok) {
      int sms = 0, per_sm = 0;
      cudaError_t e = current_device_attribute(cudaDevAttrMultiProcessorCount, &sms);
      if (e == cudaSuccess) e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, Cfg::kThreads, smem);
      if (e != cudaSuccess) return e;
      const int64_t want = std::min<int64_t>(kMaxScanPieces, int64_t(sms) * per_sm / blocks);
      if (want >= 2) {
        const int64_t band = scan_band_rows<T, K>(p.dstate);
        int64_t len = std::max<int64_t>((p.seqlen + want - 1) / want, band);
        len = (len + Cfg::kChunk - 1) / Cfg::kChunk * Cfg::kChunk;
        if (p.seqlen / len >= 2) {
          ln.chunk_len = len;
          ln.pieces = p.seqlen / len;  // the last piece takes the rest (>= len steps)
        }
      }
    }
    if (ln.pieces > 1) {
      ln.pass = kScanEnd;
      kernel<<<dim3(static_cast<unsigned>(blocks), static_cast<unsigned>(ln.pieces - 1)), Cfg::kThreads, smem,
               stream>>>(p, ln);
      const int64_t n = p.batch * p.dim * p.dstate;
      scan_carry_kernel<T, K><<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(p, ln);
      ln.pass = kScanFinal;
    }
    kernel<<<dim3(static_cast<unsigned>(blocks), static_cast<unsigned>(ln.pieces)), Cfg::kThreads, smem, stream>>>(
        p, ln);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

// Picks S and G from dstate: dstate is padded to a power of two >= 4, spread over G <= 16 lanes.
// 16 channels per block (v5): one block's B/C staging serves 16 channels instead of 8; measured on
// the H200 (kernel alone, S2xG8) K8 -> K16: 0.210 -> 0.197 ms at B1 L2048 D5120, 0.800 -> 0.668 at B4,
// 0.809 -> 0.758 at L8192, 0.136 -> 0.129 at D1536. At dstate 16, a grid of more than 3 blocks per
// SM (several waves) takes the register-capped kernel (4 blocks/SM instead of 3): 0.668 -> 0.621 ms
// at B4; with fewer blocks the cap only costs (0.197 -> 0.207 at B1, 0.758 -> 0.797 at L8192).
template <typename T>
cudaError_t launch_selective_scan_lane(const SelectiveScanParams& p, cudaStream_t stream, bool split_ok = true) {
  if (p.batch == 0 || p.dim == 0) return cudaSuccess;
  const int64_t n = p.dstate;
  if (n <= 4) return launch_scan_cfg<T, 1, 4, 16>(p, stream, split_ok);
  if (n <= 8) return launch_scan_cfg<T, 2, 4, 16>(p, stream, split_ok);
  if (n <= 16) {
    int sms = 0;
    const cudaError_t e = current_device_attribute(cudaDevAttrMultiProcessorCount, &sms);
    if (e != cudaSuccess) return e;
    const int64_t blocks = p.batch * ((p.dim + 15) / 16);
    return blocks > 3 * int64_t(sms) ? launch_scan_cfg<T, 2, 8, 16, 1, 4>(p, stream, split_ok)
                                     : launch_scan_cfg<T, 2, 8, 16>(p, stream, split_ok);
  }
  if (n <= 32) return launch_scan_cfg<T, 2, 16, 16>(p, stream, split_ok);
  if (n <= 64) return launch_scan_cfg<T, 4, 16, 16>(p, stream, split_ok);
  if (n <= 128) return launch_scan_cfg<T, 8, 16, 16>(p, stream, split_ok);
  return launch_scan_cfg<T, 16, 16, 16>(p, stream, split_ok);
}

// The time-parallel kernel (scan_tp.cuh) takes the calls it applies to whose lane-kernel grid would fill
// at most half the chip (the lane kernel would split the sequence there); MAMBA_JAX_SCAN=tp gives it
// every call it applies to, =lane none. split_ok = false (the checker's "whole sequence" variant) keeps
// the lane kernel.
template <typename T>
cudaError_t launch_selective_scan(const SelectiveScanParams& p, cudaStream_t stream, bool split_ok = true) {
  if (p.batch == 0 || p.dim == 0) return cudaSuccess;
  const ScanChoice choice = scan_choice();
  bool tp = choice.mode != 1 && split_ok && p.batch <= 65535 && scan_tp_applies<T, 4>(p);
  if (tp && choice.mode == 0) {
    int sms = 0;
    const cudaError_t e = current_device_attribute(cudaDevAttrMultiProcessorCount, &sms);
    if (e != cudaSuccess) return e;
    tp = 2 * p.batch * ((p.dim + 15) / 16) <= 3 * int64_t(sms);  // the lane kernel holds 3 blocks per SM
  }
  if (tp) {
    // 16 channels per block where they fit (one block of 16 warps per SM; measured on the H200 at B1
    // L2048 D1536: 0.0710 ms, against 0.0838 with 8 channels at 2 blocks/SM and 0.0826 with 4 at 3).
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {  // block shapes to compare (MAMBA_JAX_SCAN=tp:K:I)
      if (choice.K == 8 && choice.I == 8 && scan_tp_applies<T, 8>(p)) return launch_scan_tp<T, 8, 8, 2>(p, stream);
      if (choice.K == 4 && choice.I == 8) return launch_scan_tp<T, 4, 8, 3>(p, stream);
    }
    if (scan_tp_applies<T, 16>(p)) return launch_scan_tp<T, 16, 8, 1>(p, stream);
    return launch_scan_tp<T, 4, 8, 3>(p, stream);
  }
  return launch_selective_scan_lane<T>(p, stream, split_ok);
}

}  // namespace cuda
}  // namespace mamba_jax
