// CPU kernel of ssd_state_update. Framework-free: it takes SsdStateUpdateParams (params.h) and a
// range of work items, so the handler decides how to spread items over threads.
//
// Item = (batch, head). The state [P, N] of a head is contiguous along N, so each channel's row
// updates on vectors of state entries (each entry read and written once, which is also what makes
// new_state == state safe) and y is a horizontal sum per channel.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "common/cpu_lanes.h"
#include "common/limits.h"
#include "ssd_scan/ssd_scan.h"
#include "ssd_state_update/params.h"

namespace mamba_jax {
namespace cpu {

// The handlers' split of a call: items (batch, head), tasks of >= ~2^17 state entries.
inline int64_t ssd_state_update_items(int64_t batch, int64_t nheads) { return batch * nheads; }
inline int64_t ssd_state_update_min_items(int64_t headdim, int64_t dstate) {
  return std::max<int64_t>(1, (1 << 17) / std::max<int64_t>(1, headdim * dstate));
}

template <typename T>
void ssd_state_update(const SsdStateUpdateParams& p, int64_t item_begin, int64_t item_end) {
  const int64_t H = p.nheads, P = p.headdim, N = p.dstate;
  alignas(64) float Bf[kMaxDstate], Cf[kMaxDstate];
  for (int64_t item = item_begin; item < item_end; ++item) {
    const int64_t b = item / H, hd = item % H;
    const int64_t g = hd / (H / p.ngroups);
    const int64_t slot = p.state_indices ? p.state_indices[b] : b;
    if (p.state_indices && (slot < 0 || slot >= p.n_slots)) {  // not a slot of the pool: no state touched, y = 0
      T* yskip = static_cast<T*>(p.y) + item * P;
      for (int64_t c = 0; c < P; ++c) yskip[c] = from_float<T>(0.0f);
      continue;
    }
    const float dt = ssd_dt(to_float(static_cast<const T*>(p.dt)[item]), p.dt_bias ? p.dt_bias[hd] : 0.0f,
                            p.dt_softplus, p.dt_min, p.dt_max);
    const vf decay = simd::splat(std::exp(dt * p.A[hd]));
    const T* Bg = static_cast<const T*>(p.Bm) + b * p.bc_stride + g * N;
    const T* Cg = static_cast<const T*>(p.Cm) + b * p.bc_stride + g * N;
    for (int64_t n = 0; n < N; n += kLanes) {
      const int64_t m = std::min<int64_t>(kLanes, N - n);
      store_lanes(Bf + n, load_lanes(Bg + n, m), m);
      store_lanes(Cf + n, load_lanes(Cg + n, m), m);
    }
    const T* x = static_cast<const T*>(p.x) + b * p.x_stride + hd * P;
    const T* z = p.z ? static_cast<const T*>(p.z) + item * P : nullptr;
    T* y = static_cast<T*>(p.y) + item * P;
    const float* s = p.state + (slot * H + hd) * P * N;
    float* ns = p.new_state + (slot * H + hd) * P * N;
    for (int64_t c = 0; c < P; ++c) {
      const float xc = to_float(x[c]);
      const vf dtx = simd::splat(dt * xc);
      vf acc = simd::splat(0.0f);
      for (int64_t n = 0; n < N; n += kLanes) {
        const int64_t m = std::min<int64_t>(kLanes, N - n);
        const vf hn = decay * load_lanes(s + c * N + n, m) + dtx * load_lanes(Bf + n, m);
        store_lanes(ns + c * N + n, hn, m);
        acc = acc + hn * load_lanes(Cf + n, m);
      }
      float yc = simd::hsum(acc) + (p.Dskip ? p.Dskip[hd * P + c] : 0.0f) * xc;
      if (z) yc *= silu(to_float(z[c]));
      y[c] = from_float<T>(yc);
    }
  }
}

}  // namespace cpu
}  // namespace mamba_jax
