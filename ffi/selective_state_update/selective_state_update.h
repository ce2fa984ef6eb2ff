// CPU kernel of selective_state_update. Framework-free: it takes SelectiveStateUpdateParams and a
// range of work items, so the handler decides how to spread items over threads.
//
// Item = (batch, block), but the state [B, D, N] is contiguous along N, so each channel's update
// runs on vectors of state entries, and the per-channel work (softplus, silu, D) runs once per
// block on vectors of channels.
//
// Measured on a 2-core KVM guest (Xeon, AVX-512): memory access order matters as much as the
// arithmetic. Walking a block of channels down many rows (a new page per row) ran 2-3x slower
// than passes that stream whole rows, so every loop here reads rows in order, as wide as it can.
#pragma once

#include <algorithm>
#include <cstdint>

#include "common/cpu_lanes.h"
#include "selective_state_update/params.h"

namespace mamba_jax {
namespace cpu {

// Loads / stores n <= kLanes state-axis floats.
MJ_INLINE vf load_n(const float* p, int64_t n) { return load_lanes(p, n); }
MJ_INLINE void store_n(float* p, vf v, int64_t n) { store_lanes(p, v, n); }
template <typename T>
MJ_INLINE vf load_n(const T* p, int64_t n) { return load_lanes(p, n); }

template <typename T>
void selective_state_update(const SelectiveStateUpdateParams& p, int64_t item_begin, int64_t item_end) {
  const int64_t N = p.dstate, D = p.dim;
  const int64_t nblocks = num_channel_blocks(D);
  const int64_t per_group = D / p.ngroups;
  for (int64_t item = item_begin; item < item_end; ++item) {
    const int64_t b = item / nblocks;
    const int64_t d0 = (item % nblocks) * kLanes;
    const int64_t nv = std::min<int64_t>(kLanes, D - d0);
    const int64_t off = b * D + d0;
    const int64_t slot = p.state_indices ? p.state_indices[b] : b;
    if (p.state_indices && (slot < 0 || slot >= p.n_slots)) {  // not a slot of the pool: no state touched, y = 0
      store_lanes(static_cast<T*>(p.y) + off, simd::splat(0.0f), nv);
      continue;
    }
    // Per-channel values of the block, on vectors of channels.
    const vf uu = load_lanes(static_cast<const T*>(p.x) + off, nv);
    const vf bias = load_params(p.dt_bias ? p.dt_bias + d0 : nullptr, nv, 0.0f);
    const vf dt = prepare_dt(load_lanes(static_cast<const T*>(p.dt) + off, nv), bias, p.dt_softplus);
    const vf dt2 = dt * kLog2e;
    const vf du = dt * uu;
    alignas(64) float yv[kLanes] = {};
    for (int64_t l = 0; l < nv; ++l) {
      const int64_t d = d0 + l;
      const int64_t g = d / per_group;
      const float* s = p.state + (slot * D + d) * N;
      float* ns = p.new_state + (slot * D + d) * N;
      const float* a = p.A + d * N;
      const T* Bg = static_cast<const T*>(p.Bm) + (b * p.ngroups + g) * N;
      const T* Cg = static_cast<const T*>(p.Cm) + (b * p.ngroups + g) * N;
      const float dts = dt2[l], dus = du[l];
      vf acc = simd::splat(0.0f);
      for (int64_t n = 0; n < N; n += kLanes) {
        const int64_t m = std::min<int64_t>(kLanes, N - n);
        const vf hn = exp2_fast(load_n(a + n, m) * dts) * load_n(s + n, m) + load_n(Bg + n, m) * dus;
        store_n(ns + n, hn, m);
        acc = acc + hn * load_n(Cg + n, m);
      }
      yv[l] = simd::hsum(acc);
    }
    const vf dskip = load_params(p.Dskip ? p.Dskip + d0 : nullptr, nv, 0.0f);
    const vf zz = p.z ? load_lanes(static_cast<const T*>(p.z) + off, nv) : simd::splat(0.0f);
    store_lanes(static_cast<T*>(p.y) + off, finish_y(simd::load(yv), uu, dskip, zz, p.z != nullptr), nv);
  }
}

}  // namespace cpu
}  // namespace mamba_jax
