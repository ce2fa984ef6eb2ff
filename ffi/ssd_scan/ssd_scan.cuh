// CUDA kernel of ssd_scan (Mamba-2 SSD), framework-free: it reads SsdScanParams (params.h, where the
// semantics are spelled out) and launches on the stream it is given.
//
// One CTA of 4 warps owns (batch b, head h, 32 columns of headdim) and walks the sequence in chunks of
// kQ = 64 positions, carrying the [32, N] float32 state in registers. For a chunk with local decay
// exponents cum_t = sum_{u <= t} dt_u A (base 2 below) and carried state H:
//   S = C B^T                                          [Q, Q]  (C, B of the chunk)
//   M[t, s] = S[t, s] 2^(cum_t - cum_s) dt_s           s <= t, same segment, else 0
//   y = M x + 2^cum_t (C H^T)  (+ D x, * silu(z))      [Q, 32]
//   H' = 2^cum_{Q-1} H + sum_s 2^(cum_{Q-1} - cum_s) dt_s x_s^T B_s
// All four products run on the tensor cores with mma.sync and float32 accumulation:
//   * S of bf16/f16 inputs is exact in m16n8k16 (bf16/f16 operands, products exact in fp32);
//   * the other three multiply a float32 intermediate (M, H, or the weighted x) by an input, in TF32
//     m16n8k8. bf16/f16 inputs convert to TF32 exactly; the intermediate is rounded to TF32 (relative
//     error <= 2^-11, ~2e-4 rms in y: far inside bf16's output tolerance), or, for f16 (tighter
//     tolerance) and f32, split into hi + lo TF32 parts ("3xTF32": hi*hi + lo*hi + hi*lo), which is
//     float32 accuracy (~1e-6). f32 inputs split both operands. The state update is split for every
//     dtype: final states are float32 results held to float32 tolerance. The alternative, rounding the
//     intermediates to bf16 for m16n8k16, leaves ~1.5e-3 rms error in y, outside the test tolerance.
// seq_idx: a restart at t (seq_idx[t] != seq_idx[t-1]) zeroes the carried state; within a chunk
// positions are numbered by segment (count of restarts so far) and M, the carry-in and the state
// update only join positions of one segment. Each segment end e writes its state, computed by the
// state-update product with end e, to final_state[b, seq_idx[e]] when that id is in range.
// Padded positions of the tail chunk have dt = 0 and zero x, B, C: they leave the state unchanged.
// chunk_size is not used: the kernel's chunk is its own tile size (results agree up to rounding).
#pragma once

#include <cstdint>
#include <type_traits>

#include "common/cuda_common.cuh"
#include "ssd_scan/params.h"

namespace mamba_jax {
namespace cuda {
namespace ssd {

constexpr int kQ = 64;   // chunk length
constexpr int kPT = 32;  // headdim columns per CTA
constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;

// What one instantiation of the chunk kernel does. kScan (v2): a CTA walks the whole sequence from
// initial_state and writes y and the final states. The chunk-parallel path (v3) uses kSub consecutive
// chunks as one "v3 chunk" of kSub * kQ positions, one CTA per (v3 chunk, batch, head, column tile):
//   kStates:  the v3 chunk's state from zero (x, B only; no y), stored to the workspace slot of the
//             chunk, plus the chunk's decay (0 when seq_idx restarts inside it);
//   kOutputs: starting from the state entering the v3 chunk (the same slot after the state pass),
//             y of the chunk and the states at sequence ends inside it.
enum Kind { kScan = 0, kStates = 1, kOutputs = 2 };
constexpr int kSub = 4;  // chunks per v3 chunk (even: a CTA's first chunk uses stage 0)

// How an operand enters a TF32 product: exactly (bf16/f16 values), rounded to TF32, or split in two.
enum Tf32Mode { kExact = 0, kRound = 1, kSplit = 2 };

template <typename T> struct Precision;
// input: x, B, C; mid: M and H in the products for y; state: the weighted x of the state update
// (split for every dtype: final states are compared at float32 tolerance whatever the activations).
template <> struct Precision<float> {
  static constexpr int input = kSplit, mid = kSplit, state = kSplit;
};
template <> struct Precision<__nv_bfloat16> {
  static constexpr int input = kExact, mid = kRound, state = kSplit;
};
template <> struct Precision<__half> {
  static constexpr int input = kExact, mid = kSplit, state = kSplit;
};

MJ_DEVICE uint32_t tf32_rna(float v) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
  return r;
}

template <int MODE>
MJ_DEVICE void to_tf32(float v, uint32_t& hi, uint32_t& lo) {
  if constexpr (MODE == kExact) {
    hi = __float_as_uint(v);
    lo = 0u;
  } else if constexpr (MODE == kRound) {
    hi = tf32_rna(v);
    lo = 0u;
  } else {
    hi = tf32_rna(v);
    lo = tf32_rna(v - __uint_as_float(hi));
  }
}

MJ_DEVICE void mma_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// d += a b with the hi/lo parts each mode asks for (small terms first).
template <int MA, int MB>
MJ_DEVICE void mma_tf32x(float (&d)[4], const uint32_t (&ah)[4], const uint32_t (&al)[4], const uint32_t (&bh)[2],
                         const uint32_t (&bl)[2]) {
  if constexpr (MA == kSplit) mma_tf32(d, al, bh);
  if constexpr (MB == kSplit) mma_tf32(d, ah, bl);
  mma_tf32(d, ah, bh);
}

template <typename T>
MJ_DEVICE void mma_16bit(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  if constexpr (sizeof(T) == 2 && std::is_same<T, __nv_bfloat16>::value) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}

MJ_DEVICE uint32_t ld_u32(const void* p) { return *reinterpret_cast<const uint32_t*>(p); }

// Shared-memory layout. Rows are padded by 16 bytes so that a row stride is 4 words mod 32: every
// fragment access pattern below (rows g = lane / 4, columns t4 = lane % 4 or rows 2 t4, columns g)
// then hits 32 distinct banks or shares words.
template <typename T, int NP, int STAGES>
struct Layout {
  static constexpr int kPad = 16 / sizeof(T);
  static constexpr int kXS = kPT + kPad;  // x row stride (elements)
  static constexpr int kBS = NP + kPad;   // B, C row stride
  static constexpr int kHS = NP + 4;      // state row stride (floats)
  static constexpr int kStage = (2 * kQ * kXS + 2 * kQ * kBS) * sizeof(T);  // x, z, B, C
  static constexpr int kSmall = kQ * 4 * 3 + 16;  // cum, dt, segment number; ends mask
  static constexpr int kBytes = STAGES * kStage + 2 * kSmall + kPT * kHS * 4;
};

struct Small {
  float cum[kQ];  // inclusive prefix of dt A log2(e) within the chunk
  float dt[kQ];   // dt after bias, softplus and clip (0 past the end)
  int seg[kQ];    // number of restarts in the chunk up to and including t
  unsigned long long ends;  // bit t: position t is the last of its sequence
  unsigned long long pad;
};

struct KernelArgs {
  SsdScanParams p;
  bool vec_x, vec_bc;  // 16-byte copies possible for x (and z) rows / B, C rows
  float* ws = nullptr;  // v3 workspace: states [B, nC, H, P, N], then decays [B, nC, H]
  int64_t nc = 0;       // v3 chunks, ceil(seqlen / (kSub kQ))
};

// Raw dt and seq_idx values for one chunk, loaded by warp 0 one chunk ahead.
struct DtPrefetch {
  float dt[2];
  int s[2], sp[2], sn[2];
};

template <typename T>
MJ_DEVICE void load_dt(const SsdScanParams& p, int64_t b, int64_t h, int64_t c0, int lane, DtPrefetch& r) {
  const T* dt = static_cast<const T*>(p.dt) + b * p.dt_batch_stride + h;
  const int32_t* sq = p.seq_idx ? p.seq_idx + b * p.seq_idx_batch_stride : nullptr;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int64_t pos = c0 + lane + 32 * i;
    const bool in = pos < p.seqlen;
    r.dt[i] = in ? to_f32(dt[pos * p.dt_seq_stride]) : 0.0f;
    if (sq) {
      r.s[i] = in ? sq[pos] : 0;
      r.sp[i] = (in && pos > 0) ? sq[pos - 1] : r.s[i];
      r.sn[i] = (pos + 1 < p.seqlen) ? sq[pos + 1] : r.s[i];
    } else {
      r.s[i] = r.sp[i] = r.sn[i] = 0;
    }
  }
}

// Warp 0: dt after bias/softplus/clip, its prefix sums, segment numbers and ends of one chunk.
MJ_DEVICE void process_dt(const SsdScanParams& p, float A2, float bias, int64_t c0, int lane, const DtPrefetch& r,
                          Small& out) {
  float carry = 0.0f;
  int seg_carry = 0;
  unsigned long long ends = 0;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int64_t pos = c0 + lane + 32 * i;
    const bool in = pos < p.seqlen;
    float d = r.dt[i] + bias;
    if (p.dt_softplus) d = softplus(d);
    d = fminf(fmaxf(d, p.dt_min), p.dt_max);
    d = in ? d : 0.0f;
    float v = d * A2;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const float u = __shfl_up_sync(0xffffffffu, v, o);
      if (lane >= o) v += u;
    }
    v += carry;
    carry = __shfl_sync(0xffffffffu, v, 31);
    const bool restart = in && pos > 0 && r.s[i] != r.sp[i];
    const bool end = in && (pos == p.seqlen - 1 || r.sn[i] != r.s[i]);
    const unsigned rb = __ballot_sync(0xffffffffu, restart);
    const unsigned eb = __ballot_sync(0xffffffffu, end);
    const int seg = seg_carry + __popc(rb & (0xffffffffu >> (31 - lane)));
    seg_carry += __popc(rb);
    ends |= static_cast<unsigned long long>(eb) << (32 * i);
    out.cum[lane + 32 * i] = v;
    out.dt[lane + 32 * i] = d;
    out.seg[lane + 32 * i] = seg;
  }
  if (lane == 0) out.ends = p.seq_idx ? ends : 0ull;
}

// Copies rows [c0, c0 + kQ) of x (kPT columns from p0), B and C (N columns) into one stage; rows past
// the end are zeroed. Padding columns are never written (zeroed once at the start).
template <typename T, int NP, int STAGES, bool XB_ONLY = false>
MJ_DEVICE void load_chunk(const KernelArgs& ka, int64_t b, int64_t h, int64_t grp, int64_t p0, int64_t c0, T* xs,
                          T* zs, T* bs, T* cs) {
  using L = Layout<T, NP, STAGES>;
  const SsdScanParams& p = ka.p;
  constexpr int V = 16 / sizeof(T);
  const int tid = threadIdx.x;
  const T* xg = static_cast<const T*>(p.x) + b * p.x_batch_stride + h * p.x_head_stride + p0;
  const T* zg = p.z ? static_cast<const T*>(p.z) + b * p.x_batch_stride + h * p.x_head_stride + p0 : nullptr;
  const T* bg = static_cast<const T*>(p.Bm) + b * p.bc_batch_stride + grp * p.bc_group_stride;
  const T* cg = static_cast<const T*>(p.Cm) + b * p.bc_batch_stride + grp * p.bc_group_stride;
  const int64_t P = p.headdim, N = p.dstate;
  const int pcols = static_cast<int>(P - p0 < kPT ? P - p0 : kPT);
  const int ncols = static_cast<int>(N);
  if (ka.vec_x) {
    constexpr int per_row = kPT / V;
    for (int i = tid; i < kQ * per_row; i += kThreads) {
      const int t = i / per_row, v = (i % per_row) * V;
      T* dst = xs + t * L::kXS + v;
      T* zdst = zs + t * L::kXS + v;
      if (c0 + t < p.seqlen && v < pcols) {
        cp_async16(dst, xg + (c0 + t) * p.x_seq_stride + v);
        if (!XB_ONLY && zg) cp_async16(zdst, zg + (c0 + t) * p.x_seq_stride + v);
      } else {
        *reinterpret_cast<int4*>(dst) = make_int4(0, 0, 0, 0);
        if (!XB_ONLY) *reinterpret_cast<int4*>(zdst) = make_int4(0, 0, 0, 0);
      }
    }
  } else {
    for (int i = tid; i < kQ * kPT; i += kThreads) {
      const int t = i / kPT, v = i % kPT;
      const bool in = c0 + t < p.seqlen && v < pcols;
      xs[t * L::kXS + v] = in ? xg[(c0 + t) * p.x_seq_stride + v] : from_f32<T>(0.0f);
      if (!XB_ONLY && zg) zs[t * L::kXS + v] = in ? zg[(c0 + t) * p.x_seq_stride + v] : from_f32<T>(0.0f);
    }
  }
  if (ka.vec_bc) {
    const int per_row = ncols / V;
    for (int i = tid; i < kQ * per_row; i += kThreads) {
      const int t = i / per_row, v = (i % per_row) * V;
      if (c0 + t < p.seqlen) {
        cp_async16(bs + t * L::kBS + v, bg + (c0 + t) * p.bc_seq_stride + v);
        if (!XB_ONLY) cp_async16(cs + t * L::kBS + v, cg + (c0 + t) * p.bc_seq_stride + v);
      } else {
        *reinterpret_cast<int4*>(bs + t * L::kBS + v) = make_int4(0, 0, 0, 0);
        if (!XB_ONLY) *reinterpret_cast<int4*>(cs + t * L::kBS + v) = make_int4(0, 0, 0, 0);
      }
    }
  } else {
    for (int i = tid; i < kQ * ncols; i += kThreads) {
      const int t = i / ncols, v = i % ncols;
      const bool in = c0 + t < p.seqlen;
      bs[t * L::kBS + v] = in ? bg[(c0 + t) * p.bc_seq_stride + v] : from_f32<T>(0.0f);
      if (!XB_ONLY) cs[t * L::kBS + v] = in ? cg[(c0 + t) * p.bc_seq_stride + v] : from_f32<T>(0.0f);
    }
  }
}

// Stores an accumulator-layout state tile pair (columns n, n + 1 of one row) to float memory.
MJ_DEVICE void store_pair(float* row, int n, int N, float a, float b) {
  if ((N & 1) == 0) {
    if (n < N) *reinterpret_cast<float2*>(row + n) = make_float2(a, b);
  } else {
    if (n < N) row[n] = a;
    if (n + 1 < N) row[n + 1] = b;
  }
}

// Stores this warp's part of a [kPT, NP] state tile (accumulator layout) to the [P, N] state at f.
template <int NP, int NT>
MJ_DEVICE void store_state(float* f, const float (&E)[2][NT][4], int64_t p0, int64_t P, int64_t N, int warp,
                           int lane) {
  const int g = lane >> 2, t4 = lane & 3;
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const int n = warp * (NP / 4) + 8 * nt + 2 * t4;
      const int64_t pr = p0 + 16 * mt + g;
      if (pr < P) store_pair(f + pr * N, n, static_cast<int>(N), E[mt][nt][0], E[mt][nt][1]);
      if (pr + 8 < P) store_pair(f + (pr + 8) * N, n, static_cast<int>(N), E[mt][nt][2], E[mt][nt][3]);
    }
}

// acc (+)= sum_s w_s x_s^T B_s over the chunk for this warp's state columns, w_s = 2^(cum_e - cum_s)
// dt_s for positions s <= e of e's segment. The k index runs over s in the order of the accumulator
// layout (slot t4 <-> s = 8 kt + 2 t4, slot t4 + 4 <-> s + 1), the same permutation for both operands.
template <typename T, int NP, int STAGES, int NT>
MJ_DEVICE void state_product(float (&acc)[2][NT][4], const T* xs, const T* bs, const Small& sm, int e, int warp,
                             int lane) {
  using L = Layout<T, NP, STAGES>;
  using Pr = Precision<T>;
  const int g = lane >> 2, t4 = lane & 3;
  const float cume = sm.cum[e];
  const int sege = sm.seg[e];
  const int ktiles = (e >> 3) + 1;
#pragma unroll
  for (int kt = 0; kt < kQ / 8; ++kt) {
    if (kt < ktiles) {
      const int s0 = 8 * kt + 2 * t4, s1 = s0 + 1;
      const float w0 = (s0 <= e && sm.seg[s0] == sege) ? exp2_decay(cume - sm.cum[s0]) * sm.dt[s0] : 0.0f;
      const float w1 = (s1 <= e && sm.seg[s1] == sege) ? exp2_decay(cume - sm.cum[s1]) * sm.dt[s1] : 0.0f;
      uint32_t bh[NT][2], bl[NT][2];
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const int n = warp * (NP / 4) + 8 * nt + g;
        to_tf32<Pr::input>(to_f32(bs[s0 * L::kBS + n]), bh[nt][0], bl[nt][0]);
        to_tf32<Pr::input>(to_f32(bs[s1 * L::kBS + n]), bh[nt][1], bl[nt][1]);
      }
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        const int pr = 16 * mt + g;
        uint32_t ah[4], al[4];
        to_tf32<Pr::state>(w0 * to_f32(xs[s0 * L::kXS + pr]), ah[0], al[0]);
        to_tf32<Pr::state>(w0 * to_f32(xs[s0 * L::kXS + pr + 8]), ah[1], al[1]);
        to_tf32<Pr::state>(w1 * to_f32(xs[s1 * L::kXS + pr]), ah[2], al[2]);
        to_tf32<Pr::state>(w1 * to_f32(xs[s1 * L::kXS + pr + 8]), ah[3], al[3]);
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) mma_tf32x<Pr::state, Pr::input>(acc[mt][nt], ah, al, bh[nt], bl[nt]);
      }
    }
  }
}

template <typename T, int NP, int STAGES, int KIND>
__global__ void __launch_bounds__(kThreads) ssd_scan_kernel(const KernelArgs ka) {
  using L = Layout<T, NP, STAGES>;
  using Pr = Precision<T>;
  constexpr int NT = NP / 32;  // 8-column state tiles per warp
  const SsdScanParams& p = ka.p;
  extern __shared__ __align__(16) unsigned char smem[];
  T* stage_base = reinterpret_cast<T*>(smem);
  Small* small = reinterpret_cast<Small*>(smem + STAGES * L::kStage);
  float* hs = reinterpret_cast<float*>(smem + STAGES * L::kStage + 2 * L::kSmall);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, t4 = lane & 3;
  const int64_t h = blockIdx.y, b = blockIdx.z;
  const int64_t grp = h / (p.nheads / p.ngroups);
  const int64_t P = p.headdim, N = p.dstate;
  const int64_t nchunks = (p.seqlen + kQ - 1) / kQ;
  const bool have_seq = p.has_seq_idx;
  // This CTA's column tile and chunks [cbeg, cend); v3 grids put the v3 chunk in blockIdx.x.
  int64_t p0 = static_cast<int64_t>(blockIdx.x) * kPT, cbeg = 0, cend = nchunks, cv = 0;
  if constexpr (KIND != kScan) {
    const int64_t ptiles = (P + kPT - 1) / kPT;
    cv = blockIdx.x / ptiles;
    p0 = (blockIdx.x % ptiles) * kPT;
    cbeg = cv * kSub;
    cend = cbeg + kSub < nchunks ? cbeg + kSub : nchunks;
  }
  // The workspace slot of (b, v3 chunk cv, h): [P, N] floats.
  float* const slot = KIND == kScan ? nullptr : ka.ws + ((b * ka.nc + cv) * p.nheads + h) * P * N;

  auto xs_of = [&](int st) { return stage_base + st * (L::kStage / sizeof(T)); };
  auto zs_of = [&](int st) { return xs_of(st) + kQ * L::kXS; };
  auto bs_of = [&](int st) { return zs_of(st) + kQ * L::kXS; };
  auto cs_of = [&](int st) { return bs_of(st) + kQ * L::kBS; };

  // Zero all shared memory (padding columns must read as zeros).
  for (int i = tid; i < L::kBytes / 16; i += kThreads) reinterpret_cast<int4*>(smem)[i] = make_int4(0, 0, 0, 0);

  // Final states of sequences that never occur are zeros (v3: done by the state pass).
  if (KIND == kScan && have_seq) {
    const int pcols = static_cast<int>(P - p0 < kPT ? P - p0 : kPT);
    for (int64_t s = 0; s < p.num_sequences; ++s) {
      float* f = p.final_state + b * p.final_batch_stride + s * p.final_seq_stride + h * p.final_head_stride;
      for (int64_t i = tid; i < pcols * N; i += kThreads) f[(p0 + i / N) * N + i % N] = 0.0f;
    }
  }

  // Carried state: this warp's columns [warp NP/4, (warp+1) NP/4) of the [kPT, NP] tile.
  float H[2][NT][4];
  {
    const float* init = KIND == kStates ? nullptr
                        : KIND == kOutputs ? slot
                        : p.initial_state ? p.initial_state + b * p.state_batch_stride + h * p.state_head_stride
                                          : nullptr;
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int64_t pr = p0 + 16 * mt + g + 8 * (i >> 1);
          const int64_t n = warp * (NP / 4) + 8 * nt + 2 * t4 + (i & 1);
          H[mt][nt][i] = (init && pr < P && n < N) ? init[pr * N + n] : 0.0f;
        }
  }
  __syncthreads();
  auto write_hs = [&]() {
    if constexpr (KIND != kStates) {  // kStates computes no y and never reads the state from here
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          const int n = warp * (NP / 4) + 8 * nt + 2 * t4;
          const int pr = 16 * mt + g;
          *reinterpret_cast<float2*>(hs + pr * L::kHS + n) = make_float2(H[mt][nt][0], H[mt][nt][1]);
          *reinterpret_cast<float2*>(hs + (pr + 8) * L::kHS + n) = make_float2(H[mt][nt][2], H[mt][nt][3]);
        }
    }
  };
  write_hs();

  const float A2 = p.A[h] * kLog2e;
  const float dt_bias = p.dt_bias ? p.dt_bias[h] : 0.0f;
  DtPrefetch pre;
  constexpr bool kXB = KIND == kStates;
  if (warp == 0 && cbeg < cend) {
    load_dt<T>(p, b, h, cbeg * kQ, lane, pre);
    process_dt(p, A2, dt_bias, cbeg * kQ, lane, pre, small[0]);
  }
  if (STAGES == 2 && cbeg < cend) {
    load_chunk<T, NP, STAGES, kXB>(ka, b, h, grp, p0, cbeg * kQ, xs_of(0), zs_of(0), bs_of(0), cs_of(0));
  }
  cp_async_commit();
  float decay = 1.0f;  // kStates: product of the chunks' carry factors

  const bool have_z = p.z != nullptr;
  T* yg = static_cast<T*>(p.y) + b * p.x_batch_stride + h * p.x_head_stride;
  float dk[4][2];  // D for this thread's output columns
#pragma unroll
  for (int pt = 0; pt < 4; ++pt)
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int64_t pg = p0 + 8 * pt + 2 * t4 + i;
      dk[pt][i] = (p.Dskip && pg < P) ? p.Dskip[h * P + pg] : 0.0f;
    }

  // cbeg is even (0 or a multiple of kSub), so chunk c uses stage and dt buffer c & 1.
  for (int64_t c = cbeg; c < cend; ++c) {
    const int64_t c0 = c * kQ;
    const int st = STAGES == 2 ? static_cast<int>(c & 1) : 0;
    if (STAGES == 2) {
      if (c + 1 < cend)
        load_chunk<T, NP, STAGES, kXB>(ka, b, h, grp, p0, c0 + kQ, xs_of(st ^ 1), zs_of(st ^ 1), bs_of(st ^ 1),
                                       cs_of(st ^ 1));
      cp_async_commit();
      cp_async_wait_group<1>();
    } else {
      load_chunk<T, NP, STAGES, kXB>(ka, b, h, grp, p0, c0, xs_of(0), zs_of(0), bs_of(0), cs_of(0));
      cp_async_commit();
      cp_async_wait_group<0>();
    }
    if (warp == 0 && c + 1 < cend) load_dt<T>(p, b, h, c0 + kQ, lane, pre);
    __syncthreads();

    const T* xs = xs_of(st);
    const T* zs = zs_of(st);
    const T* bs = bs_of(st);
    const T* cs = cs_of(st);
    const Small& sm = small[c & 1];
    const int r0 = 16 * warp + g, r1 = r0 + 8;
    if constexpr (KIND != kStates) {

    // y = 2^cum_t C_t H^T for rows of the first segment.
    float Y[4][4];
#pragma unroll
    for (int pt = 0; pt < 4; ++pt)
#pragma unroll
      for (int i = 0; i < 4; ++i) Y[pt][i] = 0.0f;
#pragma unroll 4
    for (int k0 = 0; k0 < NP; k0 += 8) {
      uint32_t ah[4], al[4];
      to_tf32<Pr::input>(to_f32(cs[r0 * L::kBS + k0 + t4]), ah[0], al[0]);
      to_tf32<Pr::input>(to_f32(cs[r1 * L::kBS + k0 + t4]), ah[1], al[1]);
      to_tf32<Pr::input>(to_f32(cs[r0 * L::kBS + k0 + t4 + 4]), ah[2], al[2]);
      to_tf32<Pr::input>(to_f32(cs[r1 * L::kBS + k0 + t4 + 4]), ah[3], al[3]);
#pragma unroll
      for (int pt = 0; pt < 4; ++pt) {
        uint32_t bh[2], bl[2];
        to_tf32<Pr::mid>(hs[(8 * pt + g) * L::kHS + k0 + t4], bh[0], bl[0]);
        to_tf32<Pr::mid>(hs[(8 * pt + g) * L::kHS + k0 + t4 + 4], bh[1], bl[1]);
        mma_tf32x<Pr::input, Pr::mid>(Y[pt], ah, al, bh, bl);
      }
    }
    {
      const float f0 = sm.seg[r0] == 0 ? exp2_decay(sm.cum[r0]) : 0.0f;
      const float f1 = sm.seg[r1] == 0 ? exp2_decay(sm.cum[r1]) : 0.0f;
#pragma unroll
      for (int pt = 0; pt < 4; ++pt) {
        Y[pt][0] *= f0; Y[pt][1] *= f0;
        Y[pt][2] *= f1; Y[pt][3] *= f1;
      }
    }

    // S = C B^T for this warp's 16 rows and the causal column tiles (s <= 16 warp + 15).
    const int jmax = 2 * warp + 2;
    float S[8][4];
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int i = 0; i < 4; ++i) S[j][i] = 0.0f;
    if constexpr (sizeof(T) == 2) {
#pragma unroll 2
      for (int k0 = 0; k0 < NP; k0 += 16) {
        uint32_t a[4];
        a[0] = ld_u32(cs + r0 * L::kBS + k0 + 2 * t4);
        a[1] = ld_u32(cs + r1 * L::kBS + k0 + 2 * t4);
        a[2] = ld_u32(cs + r0 * L::kBS + k0 + 8 + 2 * t4);
        a[3] = ld_u32(cs + r1 * L::kBS + k0 + 8 + 2 * t4);
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          if (j < jmax) {
            uint32_t bb[2];
            bb[0] = ld_u32(bs + (8 * j + g) * L::kBS + k0 + 2 * t4);
            bb[1] = ld_u32(bs + (8 * j + g) * L::kBS + k0 + 8 + 2 * t4);
            mma_16bit<T>(S[j], a, bb);
          }
        }
      }
    } else {
#pragma unroll 2
      for (int k0 = 0; k0 < NP; k0 += 8) {
        uint32_t ah[4], al[4];
        to_tf32<Pr::input>(to_f32(cs[r0 * L::kBS + k0 + t4]), ah[0], al[0]);
        to_tf32<Pr::input>(to_f32(cs[r1 * L::kBS + k0 + t4]), ah[1], al[1]);
        to_tf32<Pr::input>(to_f32(cs[r0 * L::kBS + k0 + t4 + 4]), ah[2], al[2]);
        to_tf32<Pr::input>(to_f32(cs[r1 * L::kBS + k0 + t4 + 4]), ah[3], al[3]);
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          if (j < jmax) {
            uint32_t bh[2], bl[2];
            to_tf32<Pr::input>(to_f32(bs[(8 * j + g) * L::kBS + k0 + t4]), bh[0], bl[0]);
            to_tf32<Pr::input>(to_f32(bs[(8 * j + g) * L::kBS + k0 + t4 + 4]), bh[1], bl[1]);
            mma_tf32x<Pr::input, Pr::input>(S[j], ah, al, bh, bl);
          }
        }
      }
    }

    // M = S * decay * dt (masked), then y += M x with M's accumulator layout as the A operand.
    {
      const float cr0 = sm.cum[r0], cr1 = sm.cum[r1];
      const int sg0 = sm.seg[r0], sg1 = sm.seg[r1];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        if (j < jmax) {
          const int s0 = 8 * j + 2 * t4, s1 = s0 + 1;
          const float cs0 = sm.cum[s0], cs1 = sm.cum[s1];
          const float d0 = sm.dt[s0], d1 = sm.dt[s1];
          const int q0 = sm.seg[s0], q1 = sm.seg[s1];
          const float m00 = (s0 <= r0 && q0 == sg0) ? S[j][0] * exp2_decay(cr0 - cs0) * d0 : 0.0f;
          const float m01 = (s1 <= r0 && q1 == sg0) ? S[j][1] * exp2_decay(cr0 - cs1) * d1 : 0.0f;
          const float m10 = (s0 <= r1 && q0 == sg1) ? S[j][2] * exp2_decay(cr1 - cs0) * d0 : 0.0f;
          const float m11 = (s1 <= r1 && q1 == sg1) ? S[j][3] * exp2_decay(cr1 - cs1) * d1 : 0.0f;
          uint32_t ah[4], al[4];
          to_tf32<Pr::mid>(m00, ah[0], al[0]);
          to_tf32<Pr::mid>(m10, ah[1], al[1]);
          to_tf32<Pr::mid>(m01, ah[2], al[2]);
          to_tf32<Pr::mid>(m11, ah[3], al[3]);
#pragma unroll
          for (int pt = 0; pt < 4; ++pt) {
            uint32_t bh[2], bl[2];
            to_tf32<Pr::input>(to_f32(xs[s0 * L::kXS + 8 * pt + g]), bh[0], bl[0]);
            to_tf32<Pr::input>(to_f32(xs[s1 * L::kXS + 8 * pt + g]), bh[1], bl[1]);
            mma_tf32x<Pr::mid, Pr::input>(Y[pt], ah, al, bh, bl);
          }
        }
      }
    }

    // Epilogue: + D x, * silu(z), store.
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = half ? r1 : r0;
      const int64_t pos = c0 + r;
      if (pos < p.seqlen) {
#pragma unroll
        for (int pt = 0; pt < 4; ++pt) {
          const int pc = 8 * pt + 2 * t4;
          const int64_t pg = p0 + pc;
          float v0 = fmaf(dk[pt][0], to_f32(xs[r * L::kXS + pc]), Y[pt][2 * half]);
          float v1 = fmaf(dk[pt][1], to_f32(xs[r * L::kXS + pc + 1]), Y[pt][2 * half + 1]);
          const int64_t off = pos * p.x_seq_stride + pg;
          if (have_z) {
            v0 *= silu(to_f32(zs[r * L::kXS + pc]));
            v1 *= silu(to_f32(zs[r * L::kXS + pc + 1]));
          }
          if ((P & 1) == 0) {  // pg is even: both columns or neither are in range, 2-element aligned
            if (pg < P) {
              Vec<T, 2> o;
              o.v[0] = from_f32<T>(v0);
              o.v[1] = from_f32<T>(v1);
              store_vec<T, 2>(yg + off, o);
            }
          } else {
            if (pg < P) yg[off] = from_f32<T>(v0);
            if (pg + 1 < P) yg[off + 1] = from_f32<T>(v1);
          }
        }
      }
    }

    }  // KIND != kStates

    // States at sequence ends inside the chunk (rare): written to final_state[b, seq_idx[e]].
    if (KIND != kStates && have_seq) {
      unsigned long long ends = sm.ends;
      while (ends) {
        const int e = __ffsll(static_cast<long long>(ends)) - 1;
        ends &= ends - 1;
        const int32_t sid = p.seq_idx[b * p.seq_idx_batch_stride + c0 + e];
        const float fe = sm.seg[e] == 0 ? exp2_decay(sm.cum[e]) : 0.0f;
        float E[2][NT][4];
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
          for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int i = 0; i < 4; ++i) E[mt][nt][i] = fe * H[mt][nt][i];
        state_product<T, NP, STAGES, NT>(E, xs, bs, sm, e, warp, lane);
        if (sid >= 0 && sid < p.num_sequences)
          store_state<NP, NT>(p.final_state + b * p.final_batch_stride + sid * p.final_seq_stride +
                                  h * p.final_head_stride,
                              E, p0, P, N, warp, lane);
      }
    }

    // Carried state to the end of the chunk (kOutputs: not after its last chunk).
    if (KIND != kOutputs || c + 1 < cend) {
      const int e = kQ - 1;
      const float fe = sm.seg[e] == 0 ? exp2_decay(sm.cum[e]) : 0.0f;
      decay *= fe;
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
          for (int i = 0; i < 4; ++i) H[mt][nt][i] *= fe;
      state_product<T, NP, STAGES, NT>(H, xs, bs, sm, e, warp, lane);
    }

    if (warp == 0 && c + 1 < cend) process_dt(p, A2, dt_bias, c0 + kQ, lane, pre, small[(c + 1) & 1]);
    __syncthreads();
    write_hs();
  }

  if constexpr (KIND == kScan) {
    if (!have_seq)
      store_state<NP, NT>(p.final_state + b * p.final_batch_stride + h * p.final_head_stride, H, p0, P, N, warp,
                          lane);
  } else if constexpr (KIND == kStates) {
    store_state<NP, NT>(slot, H, p0, P, N, warp, lane);
    if (p0 == 0 && tid == 0) ka.ws[(ka.nc * p.batch * p.nheads) * P * N + (b * ka.nc + cv) * p.nheads + h] = decay;
  }
}

template <typename T, int NP, int STAGES, int KIND = kScan>
cudaError_t launch_np(const KernelArgs& ka, cudaStream_t stream) {
  using L = Layout<T, NP, STAGES>;
  const SsdScanParams& p = ka.p;
  auto kernel = ssd_scan_kernel<T, NP, STAGES, KIND>;
  cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, L::kBytes);
  if (e != cudaSuccess) return e;
  const int64_t gx = (p.headdim + kPT - 1) / kPT * (KIND == kScan ? 1 : ka.nc);
  if (gx > 0x7fffffff) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(p.nheads), static_cast<unsigned>(p.batch));
  kernel<<<grid, kThreads, L::kBytes, stream>>>(ka);
  return cudaGetLastError();
}

// v3 state pass, per (batch b, head h) and V consecutive entries of the [P, N] state: walks the v3
// chunks in order; slot c (the chunk's own state from zero, written by kStates) is replaced by the
// state entering chunk c (initial_state or zeros for c = 0), and the state leaving chunk c is
// decay_c * entering + the slot's old value. Without seq_idx the state after the last chunk is the
// final state; with it, every final_state[b, s] is zeroed here and the kOutputs kernel, next on the
// stream, writes the states at sequence ends.
template <int V>
__global__ void __launch_bounds__(256) ssd_state_pass_kernel(const SsdScanParams p, float* ws, int64_t nc) {
  const int64_t PN = p.headdim * p.dstate;
  const int64_t e = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * V;
  if (e >= PN) return;
  const int64_t H = p.nheads, h = blockIdx.y, b = blockIdx.z;
  const float* dec = ws + nc * p.batch * H * PN + b * nc * H + h;  // chunk c's decay at dec[c H]
  float* slot = ws + (b * nc * H + h) * PN + e;                     // chunk c's slot at slot[c H PN]
  const int64_t cs = H * PN;
  using Vf = Vec<float, V>;
  Vf v;
  if (p.initial_state) {
    v = load_vec<float, V>(p.initial_state + b * p.state_batch_stride + h * p.state_head_stride + e);
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i) v.v[i] = 0.0f;
  }
  Vf nxt = v;
  if (nc > 0) nxt = load_vec<float, V>(slot);
  for (int64_t c = 0; c < nc; ++c) {
    const Vf own = nxt;
    if (c + 1 < nc) nxt = load_vec<float, V>(slot + (c + 1) * cs);
    const float d = dec[c * H];
    store_vec<float, V>(slot + c * cs, v);
#pragma unroll
    for (int i = 0; i < V; ++i) v.v[i] = fmaf(d, v.v[i], own.v[i]);
  }
  float* f = p.final_state + b * p.final_batch_stride + h * p.final_head_stride + e;
  if (!p.has_seq_idx) {
    store_vec<float, V>(f, v);
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i) v.v[i] = 0.0f;
    for (int64_t s = 0; s < p.num_sequences; ++s) store_vec<float, V>(f + s * p.final_seq_stride, v);
  }
}

}  // namespace ssd

// v3 (chunk-parallel) workspace of one vmap slice, in floats: the [P, N] state of every (batch, v3
// chunk, head), then one decay per (batch, v3 chunk, head), rounded up to 4 floats so that every
// slice's part starts 16-byte aligned. mamba_jax/ops/ssd_scan/ffi.py sizes the workspace result the
// same way.
inline int64_t ssd_scan_v3_chunks(int64_t seqlen) { return (seqlen + ssd::kSub * ssd::kQ - 1) / (ssd::kSub * ssd::kQ); }
inline int64_t ssd_scan_v3_workspace_floats(const SsdScanParams& p) {
  const int64_t n = p.batch * ssd_scan_v3_chunks(p.seqlen) * p.nheads * (p.headdim * p.dstate + 1);
  return (n + 3) / 4 * 4;
}

// Launches the scan for one vmap slice. dstate must be in [1, 256]; batch and nheads below 65536.
template <typename T>
cudaError_t launch_ssd_scan(const SsdScanParams& p, cudaStream_t stream) {
  if (p.batch == 0 || p.nheads == 0 || p.headdim == 0 || p.dstate == 0) return cudaSuccess;
  if (p.dstate > 256 || p.batch > 65535 || p.nheads > 65535) return cudaErrorInvalidValue;
  ssd::KernelArgs ka{p, false, false};
  constexpr int V = 16 / sizeof(T);
  const auto al = [](const void* q) { return q == nullptr || aligned16_host(q); };
  ka.vec_x = al(p.x) && al(p.z) && p.headdim % V == 0 && p.x_seq_stride % V == 0 && p.x_batch_stride % V == 0 &&
             p.x_head_stride % V == 0;
  ka.vec_bc = al(p.Bm) && al(p.Cm) && p.dstate % V == 0 && p.bc_seq_stride % V == 0 &&
              p.bc_batch_stride % V == 0 && p.bc_group_stride % V == 0;
  if (p.dstate <= 64) return ssd::launch_np<T, 64, 2>(ka, stream);
  if (p.dstate <= 128) return ssd::launch_np<T, 128, 2>(ka, stream);
  if constexpr (sizeof(T) == 4) return ssd::launch_np<T, 256, 1>(ka, stream);
  else return ssd::launch_np<T, 256, 2>(ka, stream);
}

namespace ssd {
template <typename T, int NP, int STAGES>
cudaError_t launch_v3_np(const KernelArgs& ka, cudaStream_t stream) {
  const SsdScanParams& p = ka.p;
  cudaError_t e = cudaSuccess;
  if (ka.nc > 0 && (e = launch_np<T, NP, STAGES, kStates>(ka, stream)) != cudaSuccess) return e;
  const int64_t PN = p.headdim * p.dstate;
  const auto al = [](const void* q) { return q == nullptr || aligned16_host(q); };
  const bool vec = PN % 4 == 0 && al(ka.ws) && al(p.initial_state) && al(p.final_state);
  const int64_t per_block = 256 * (vec ? 4 : 1);
  const dim3 grid(static_cast<unsigned>((PN + per_block - 1) / per_block), static_cast<unsigned>(p.nheads),
                  static_cast<unsigned>(p.batch));
  if (vec) ssd_state_pass_kernel<4><<<grid, 256, 0, stream>>>(p, ka.ws, ka.nc);
  else ssd_state_pass_kernel<1><<<grid, 256, 0, stream>>>(p, ka.ws, ka.nc);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;
  return ka.nc > 0 ? launch_np<T, NP, STAGES, kOutputs>(ka, stream) : cudaSuccess;
}
}  // namespace ssd

// The chunk-parallel scan (v3) for one vmap slice: three launches on the stream (chunk states, the
// state pass over chunks, outputs). ws holds ssd_scan_v3_workspace_floats(p) floats. Same limits as
// launch_ssd_scan.
template <typename T>
cudaError_t launch_ssd_scan_v3(const SsdScanParams& p, float* ws, cudaStream_t stream) {
  if (p.batch == 0 || p.nheads == 0 || p.headdim == 0 || p.dstate == 0) return cudaSuccess;
  if (p.dstate > 256 || p.batch > 65535 || p.nheads > 65535) return cudaErrorInvalidValue;
  ssd::KernelArgs ka{p, false, false};
  ka.ws = ws;
  ka.nc = ssd_scan_v3_chunks(p.seqlen);
  constexpr int V = 16 / sizeof(T);
  const auto al = [](const void* q) { return q == nullptr || aligned16_host(q); };
  ka.vec_x = al(p.x) && al(p.z) && p.headdim % V == 0 && p.x_seq_stride % V == 0 && p.x_batch_stride % V == 0 &&
             p.x_head_stride % V == 0;
  ka.vec_bc = al(p.Bm) && al(p.Cm) && p.dstate % V == 0 && p.bc_seq_stride % V == 0 &&
              p.bc_batch_stride % V == 0 && p.bc_group_stride % V == 0;
  if (p.dstate <= 64) return ssd::launch_v3_np<T, 64, 2>(ka, stream);
  if (p.dstate <= 128) return ssd::launch_v3_np<T, 128, 2>(ka, stream);
  if constexpr (sizeof(T) == 4) return ssd::launch_v3_np<T, 256, 1>(ka, stream);
  else return ssd::launch_v3_np<T, 256, 2>(ka, stream);
}

}  // namespace cuda
}  // namespace mamba_jax
