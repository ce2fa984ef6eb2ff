// selective_scan, time-parallel kernel ("tp"): a warp per channel, the sequence scanned across the lanes.
//
// The lane kernel (selective_scan.cuh) gives each lane S states of one channel and walks the sequence
// step by step: a chain of L dependent steps per lane, a butterfly per G steps, and per step a fixed cost
// (dt, B/C loads, y) shared by only S = 2 states. Here a chunk of TC = 32 * I steps is split over the 32
// lanes of a warp, I consecutive steps per lane, and the lane loops over all N states of its channel:
//   1. local pass, per state n: a_i = 2^(dt_i A_n) (MUFU), h_i = a_i h_{i-1} + dt_i u_i B_in from h = 0,
//      P_i = a_1 .. a_i; y_i += C_in h_i now, and q_i = C_in P_i is kept for the correction;
//   2. the lane's pair (P_seg, h_I), with P_seg = 2^(A_n sum dt) computed directly by exp2_decay (accurate
//      near 1, see cuda_common.cuh), goes through an inclusive warp scan (5 shuffle rounds) and the carry
//      from the previous chunk: h_end of each lane, the state entering lane l = h_end of lane l - 1;
//   3. y_i += q_i h_in.
// The MUFU error of a_i (~2 ulp near 1) only reaches the I steps of one lane: across lanes and chunks the
// state is carried by P_seg, so it does not compound over the ~1/|dt A| steps a state remembers. Per state
// and step this counts ~13 instructions (the lane kernel: ~19), and the grid is B x D warps with no split
// of the sequence across blocks. Each state's chain (B/C loads, I dependent FMAs, exp2_decay, 5 shuffle
// rounds, the carry) is latency-bound, and registers and shared memory allow only 12-16 warps per SM, so
// the kernel wins only where the lane kernel would have to split the sequence (small grids; the launcher in
// selective_scan.cuh decides, with the H200 times).
//
// A block is K warps = K consecutive channels of one batch row (one group). The raw [TC, K] tiles of u,
// delta, z and [TC, N] tiles of B, C of chunk k + 1 come in by cp.async while chunk k is scanned. At the
// chunk's start the block turns them into float32 dt, dt*u, B, C in shared memory transposed to
// [channel or state][step] (rows padded by 4 floats every 32 steps, so that a lane's I consecutive floats
// are read as float4s without bank conflicts). Each warp scans its channel two states at a time and puts y
// (sum over states) back in the dt*u row of its channel, and the block writes y as row vectors with the D
// skip and the silu(z) gate. u and z stay in registers between the conversion and the write.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/cuda_common.cuh"
#include "selective_scan/params.h"

namespace mamba_jax {
namespace cuda {

template <int K, int I>
struct ScanTpCfg {
  static constexpr int kThreads = 32 * K;
  static constexpr int kChunk = 32 * I;
  static constexpr int kRow = kChunk + kChunk / 8;  // floats per padded row
  static constexpr int kNmax = 16;                  // dstate <= 16
  static_assert(I % 4 == 0 && 32 % I == 0, "a lane's steps are whole float4s inside one 32-step group");
  // float32 rows, A and carried states, then the raw tiles of the next chunk (u, delta, z; B, C).
  template <typename T>
  static constexpr size_t smem_bytes() {
    return (size_t(2 * K + 2 * kNmax) * kRow + 2 * K * kNmax) * sizeof(float) +
           size_t(3 * kChunk * K + 2 * kChunk * kNmax) * sizeof(T);
  }
};

// Elements of T per activation vector of a K-channel block row: 16 bytes, or the whole row when shorter.
template <typename T, int K>
constexpr int tp_vec_elems() { return K * int(sizeof(T)) >= 16 ? 16 / int(sizeof(T)) : K; }

// Index of step t in a padded row: 4 floats of padding after every 32 steps.
MJ_DEVICE int tp_pad(int t) { return t + ((t >> 5) << 2); }

// MINB: resident blocks per SM the register allocation must allow.
template <typename T, int K, int I, int MINB>
__global__ void __launch_bounds__(32 * K, MINB) selective_scan_tp_kernel(const SelectiveScanParams p, int64_t per_group) {
  using Cfg = ScanTpCfg<K, I>;
  constexpr int TC = Cfg::kChunk, R = Cfg::kRow, NT = Cfg::kThreads, NMAX = Cfg::kNmax;
  constexpr int VE = tp_vec_elems<T, K>();                                 // elements per activation vector
  constexpr int VB = VE * int(sizeof(T));                                  // its bytes
  constexpr int VPR = K / VE;                                              // vectors per tile row
  constexpr int NVA = TC * VPR / NT;                                       // per thread and tensor
  constexpr int BE = 16 / int(sizeof(T));                                  // elements per B/C vector
  constexpr int NVB = (TC * (NMAX / BE) + NT - 1) / NT;                    // B/C vectors per thread, at most
  static_assert(K % VE == 0 && (TC * VPR) % NT == 0, "tiles split evenly over the block");

  extern __shared__ __align__(16) unsigned char smem[];
  float* s_dt = reinterpret_cast<float*>(smem);  // [K][R]
  float* s_du = s_dt + K * R;                      // [K][R]: dt * u, then y
  float* s_B = s_du + K * R;                       // [NMAX][R]
  float* s_C = s_B + NMAX * R;                     // [NMAX][R]
  float* s_A2 = s_C + NMAX * R;                    // [K][NMAX]: A * log2(e) of the block's channels
  float* s_h = s_A2 + K * NMAX;                    // [K][NMAX]: the state carried from chunk to chunk
  T* raw_act = reinterpret_cast<T*>(s_h + K * NMAX);  // [u, delta, z][TC][K]
  T* raw_bc = raw_act + 3 * TC * K;                   // [B, C][TC][NMAX]

  const int tid = threadIdx.x, w = tid / 32, lane = tid % 32;
  const int64_t D = p.dim, N = p.dstate, L = p.seqlen;
  const int64_t b = blockIdx.y, d0 = int64_t(blockIdx.x) * K, d = d0 + w;
  const int64_t act_off = b * p.u_batch_stride + d0;
  const T* u_g = static_cast<const T*>(p.u) + act_off;
  const T* dl_g = static_cast<const T*>(p.delta) + act_off;
  const T* z_g = p.z ? static_cast<const T*>(p.z) + act_off : nullptr;
  T* y_g = static_cast<T*>(p.y) + act_off;
  const int64_t bc_off = b * p.bc_batch_stride + (d0 / per_group) * p.bc_group_stride;
  const T* B_g = static_cast<const T*>(p.Bm) + bc_off;
  const T* C_g = static_cast<const T*>(p.Cm) + bc_off;
  const int vbr = static_cast<int>(N / BE);  // B/C vectors per row

  // The channels of this thread's activation vectors (the same in every chunk).
  const int c0 = (tid % VPR) * VE;
  float bias[VE], dsk[VE];
#pragma unroll
  for (int e = 0; e < VE; ++e) {
    bias[e] = p.delta_bias ? p.delta_bias[d0 + c0 + e] : 0.0f;
    dsk[e] = p.Dskip ? p.Dskip[d0 + c0 + e] : 0.0f;
  }
  // This warp's channel: A * log2(e) and the carried state, in shared memory (read as broadcasts; in
  // registers they took 32 of them and the kernel spilled).
  if (lane < N) {
    s_A2[w * NMAX + lane] = p.A[d * N + lane] * kLog2e;
    s_h[w * NMAX + lane] = p.initial_state ? p.initial_state[(b * D + d) * N + lane] : 0.0f;
  }

  const int nchunks = static_cast<int>((L + TC - 1) / TC);
  auto rows_of = [&](int k) { return static_cast<int>(L - int64_t(k) * TC < TC ? L - int64_t(k) * TC : TC); };
  // cp.async of chunk k's raw tiles. Every thread later reads back exactly the vectors it copied, so the
  // copy of chunk k + 1 may start as soon as the thread has read chunk k's.
  auto issue = [&](int k) {
    const int64_t t0 = int64_t(k) * TC;
    const int rows = rows_of(k);
#pragma unroll
    for (int j = 0; j < NVA; ++j) {
      const int t = (tid + j * NT) / VPR;
      if (t < rows) {
        const int64_t off = (t0 + t) * D + c0;
        cp_async_bytes<VB>(raw_act + t * K + c0, u_g + off);
        cp_async_bytes<VB>(raw_act + (TC + t) * K + c0, dl_g + off);
        if (z_g) cp_async_bytes<VB>(raw_act + (2 * TC + t) * K + c0, z_g + off);
      }
    }
#pragma unroll
    for (int j = 0; j < NVB; ++j) {
      const int v = tid + j * NT;
      const int t = v / vbr, part = v % vbr;
      if (v < TC * vbr && t < rows) {
        const int64_t off = (t0 + t) * p.bc_seq_stride + part * BE;
        cp_async16(raw_bc + t * NMAX + part * BE, B_g + off);
        cp_async16(raw_bc + (TC + t) * NMAX + part * BE, C_g + off);
      }
    }
    cp_async_commit();
  };

  if (nchunks > 0) issue(0);
  for (int k = 0; k < nchunks; ++k) {
    const int64_t t0 = int64_t(k) * TC;
    const int rows = rows_of(k);
    cp_async_wait_all();
    __syncthreads();  // the previous chunk's compute and y are done with s_* (this thread's raw tiles landed)
    // float32 dt = softplus(delta + bias), dt * u, B, C, transposed; u and z kept for the write of y.
    Vec<T, VE> ru[NVA], rz[NVA];
#pragma unroll
    for (int j = 0; j < NVA; ++j) {
      const int t = (tid + j * NT) / VPR;
      const bool ok = t < rows;
      ru[j] = load_vec<T, VE>(raw_act + t * K + c0);
      const Vec<T, VE> rd = load_vec<T, VE>(raw_act + (TC + t) * K + c0);
      if (z_g) rz[j] = load_vec<T, VE>(raw_act + (2 * TC + t) * K + c0);
#pragma unroll
      for (int e = 0; e < VE; ++e) {
        float dt = 0.0f, du = 0.0f;
        if (ok) {
          dt = to_f32(rd.v[e]) + bias[e];
          if (p.delta_softplus) dt = softplus(dt);
          du = dt * to_f32(ru[j].v[e]);
        }
        s_dt[(c0 + e) * R + tp_pad(t)] = dt;  // steps past the end: dt = 0, so the state stays as it is
        s_du[(c0 + e) * R + tp_pad(t)] = du;
      }
    }
#pragma unroll 2
    for (int j = 0; j < NVB; ++j) {
      const int v = tid + j * NT;
      const int t = v / vbr, part = v % vbr;
      if (v < TC * vbr) {
        const bool ok = t < rows;
        const Vec<T, BE> rb = load_vec<T, BE>(raw_bc + t * NMAX + part * BE);
        const Vec<T, BE> rc = load_vec<T, BE>(raw_bc + (TC + t) * NMAX + part * BE);
#pragma unroll
        for (int e = 0; e < BE; ++e) {
          s_B[(part * BE + e) * R + tp_pad(t)] = ok ? to_f32(rb.v[e]) : 0.0f;
          s_C[(part * BE + e) * R + tp_pad(t)] = ok ? to_f32(rc.v[e]) : 0.0f;
        }
      }
    }
    __syncthreads();
    if (k + 1 < nchunks) issue(k + 1);  // lands while this chunk is scanned

    // The scan of channel d over this chunk: lane steps lane*I .. lane*I + I - 1, two states at a time
    // (two independent chains for the scheduler; dstate is even here).
    const int base = tp_pad(lane * I);
    float dt[I], du[I], y[I];
    load_lane_floats<I>(s_dt + w * R + base, dt);
    load_lane_floats<I>(s_du + w * R + base, du);
    float cs = 0.0f;
#pragma unroll
    for (int i = 0; i < I; ++i) {
      cs += dt[i];
      y[i] = 0.0f;
    }
#pragma unroll 1
    for (int n = 0; n < N; n += 2) {
      float A2[2], carry[2], Bv[2][I], Cv[2][I], q[2][I], h[2], P[2], Ps[2];
#pragma unroll
      for (int s = 0; s < 2; ++s) {
        A2[s] = s_A2[w * NMAX + n + s];
        carry[s] = s_h[w * NMAX + n + s];
        load_lane_floats<I>(s_B + (n + s) * R + base, Bv[s]);
        load_lane_floats<I>(s_C + (n + s) * R + base, Cv[s]);
        h[s] = 0.0f;
        P[s] = 1.0f;
      }
#pragma unroll
      for (int i = 0; i < I; ++i) {
#pragma unroll
        for (int s = 0; s < 2; ++s) {
          const float a = ex2_approx(dt[i] * A2[s]);
          h[s] = fmaf(a, h[s], du[i] * Bv[s][i]);
          P[s] *= a;
          y[i] = fmaf(Cv[s][i], h[s], y[i]);
          q[s][i] = Cv[s][i] * P[s];
        }
      }
      // Inclusive scan of (P_seg, h) over the lanes: (P1, h1) then (P2, h2) -> (P1 P2, P2 h1 + h2).
#pragma unroll
      for (int s = 0; s < 2; ++s) Ps[s] = exp2_decay(cs * A2[s]);
#pragma unroll
      for (int off = 1; off < 32; off *= 2) {
#pragma unroll
        for (int s = 0; s < 2; ++s) {
          const float hu = __shfl_up_sync(0xffffffffu, h[s], off);
          const float pu = __shfl_up_sync(0xffffffffu, Ps[s], off);
          if (lane >= off) {
            h[s] = fmaf(Ps[s], hu, h[s]);
            Ps[s] *= pu;
          }
        }
      }
      float h_end[2], h_in[2];
#pragma unroll
      for (int s = 0; s < 2; ++s) {
        h_end[s] = fmaf(Ps[s], carry[s], h[s]);
        h_in[s] = __shfl_up_sync(0xffffffffu, h_end[s], 1);
        if (lane == 0) h_in[s] = carry[s];
      }
#pragma unroll
      for (int i = 0; i < I; ++i) y[i] = fmaf(q[1][i], h_in[1], fmaf(q[0][i], h_in[0], y[i]));
      __syncwarp();  // every lane has read s_h[n], s_h[n + 1] before lane 31 replaces them
      if (lane == 31) {
        s_h[w * NMAX + n] = h_end[0];
        s_h[w * NMAX + n + 1] = h_end[1];
      }
    }
    store_floats<I>(s_du + w * R + base, y);  // the lane's own steps: no other lane reads them
    __syncthreads();

    // y = (sum + D u) * silu(z), written as row vectors.
#pragma unroll
    for (int j = 0; j < NVA; ++j) {
      const int t = (tid + j * NT) / VPR;
      if (t < rows) {
        Vec<T, VE> out;
#pragma unroll
        for (int e = 0; e < VE; ++e) {
          float yv = s_du[(c0 + e) * R + tp_pad(t)] + dsk[e] * to_f32(ru[j].v[e]);
          if (z_g) yv *= silu(to_f32(rz[j].v[e]));
          out.v[e] = from_f32<T>(yv);
        }
        store_vec<T, VE>(y_g + (t0 + t) * D + c0, out);
      }
    }
  }
  __syncwarp();
  if (lane < N) p.last_state[(b * D + d) * N + lane] = s_h[w * NMAX + lane];
}

// Which kernel the launcher takes (environment MAMBA_JAX_SCAN, read once): "lane" the lane kernel
// only, "tp" the time-parallel one wherever it applies, unset or anything else: the launcher's choice.
// "tp:8:8" and "tp:4:8" give the tp kernel 8- or 4-channel blocks instead of 16 (bfloat16 only; the
// shapes the H200 measurements compared, see launch_selective_scan).
struct ScanChoice {
  int mode;  // 0 auto, 1 lane, 2 tp
  int K, I;  // 0: default shape
};
inline ScanChoice scan_choice() {
  static const ScanChoice c = [] {
    ScanChoice r{0, 0, 0};
    const char* env = std::getenv("MAMBA_JAX_SCAN");
    if (env == nullptr) return r;
    if (std::strcmp(env, "lane") == 0) r.mode = 1;
    if (std::strncmp(env, "tp", 2) == 0) {
      r.mode = 2;
      int k = 0, i = 0;
      if (std::sscanf(env, "tp:%d:%d", &k, &i) == 2) { r.K = k; r.I = i; }
    }
    return r;
  }();
  return c;
}

// Whether the tp kernel takes p with blocks of K channels: an even dstate <= 16 in whole 16-byte B/C
// vectors, K-channel blocks inside one group, every row and pointer aligned for the vector accesses.
template <typename T, int K>
inline bool scan_tp_applies(const SelectiveScanParams& p) {
  constexpr uintptr_t va = tp_vec_elems<T, K>() * sizeof(T);
  const int64_t per_group = p.ngroups > 0 ? p.dim / p.ngroups : 0;
  auto al = [](const void* q, uintptr_t a) { return q == nullptr || (reinterpret_cast<uintptr_t>(q) % a) == 0; };
  return p.ngroups >= 1 && p.dstate >= 2 && p.dstate <= 16 && p.dstate % 2 == 0 &&
         (p.dstate * int64_t(sizeof(T))) % 16 == 0 && p.dim % K == 0 && per_group % K == 0 && al(p.u, va) && al(p.delta, va) && al(p.z, va) && al(p.y, va) && al(p.Bm, 16) &&
         al(p.Cm, 16) && (p.u_batch_stride * int64_t(sizeof(T))) % int64_t(va) == 0 &&
         (p.bc_batch_stride * int64_t(sizeof(T))) % 16 == 0 && (p.bc_seq_stride * int64_t(sizeof(T))) % 16 == 0 &&
         (p.bc_group_stride * int64_t(sizeof(T))) % 16 == 0;
}

template <typename T, int K, int I, int MINB>
cudaError_t launch_scan_tp(const SelectiveScanParams& p, cudaStream_t stream) {
  using Cfg = ScanTpCfg<K, I>;
  auto kernel = selective_scan_tp_kernel<T, K, I, MINB>;
  constexpr size_t smem = Cfg::template smem_bytes<T>();
  if (smem > 48 * 1024) {
    const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (e != cudaSuccess) return e;
  }
  kernel<<<dim3(static_cast<unsigned>(p.dim / K), static_cast<unsigned>(p.batch)), Cfg::kThreads, smem, stream>>>(
      p, p.dim / p.ngroups);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace mamba_jax
