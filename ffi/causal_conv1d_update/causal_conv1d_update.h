// CPU kernel of causal_conv1d_update. Framework-free: it takes CausalConv1dUpdateParams and a
// range of work items (batch, block of kLanes channels), so the handler decides how to spread
// items over threads.
#pragma once

#include <algorithm>
#include <cstdint>

#include "causal_conv1d_update/params.h"
#include "common/cpu_lanes.h"

namespace mamba_jax {
namespace cpu {

// One channel's conv step: the W-1 previous inputs s (oldest first) and the new input xv against the
// weights w[0..W); writes the shifted window (ending with xv) to ns and returns the output before the
// activation. Reads run ahead of writes, so s may be ns (the in-place update).
template <typename T>
inline float conv_update_channel(const T* s, T* ns, const T xv, const float* w, float bias, int64_t W) {
  const int64_t S = W - 1;
  float a = bias;
  for (int64_t k = 0; k < S; ++k) a += w[k] * to_float(s[k]);
  a += w[S] * to_float(xv);
  for (int64_t k = 0; k + 1 < S; ++k) ns[k] = s[k + 1];
  ns[S - 1] = xv;
  return a;
}

// The handlers' split of a call: items (batch, block of kLanes channels), tasks of >= ~2^16 taps.
inline int64_t causal_conv1d_update_items(int64_t batch, int64_t dim) { return batch * num_channel_blocks(dim); }
inline int64_t causal_conv1d_update_min_items(int64_t width) {
  return std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(1, kLanes * width));
}

// Item = (batch, block): the taps of each channel are contiguous, so the dot products run per
// channel; the activation runs on the block's results at once.
template <typename T>
void causal_conv1d_update(const CausalConv1dUpdateParams& p, int64_t item_begin, int64_t item_end) {
  const int64_t D = p.dim, W = p.width, S = W - 1;
  const int64_t nblocks = num_channel_blocks(D);
  const T* xall = static_cast<const T*>(p.x);
  const T* sall = static_cast<const T*>(p.conv_state);
  T* nsall = static_cast<T*>(p.new_conv_state);
  for (int64_t item = item_begin; item < item_end; ++item) {
    const int64_t b = item / nblocks;
    const int64_t d0 = (item % nblocks) * kLanes;
    const int64_t nv = std::min<int64_t>(kLanes, D - d0);
    const int64_t slot = p.state_indices ? p.state_indices[b] : b;
    if (p.state_indices && (slot < 0 || slot >= p.n_slots)) {  // not a slot of the pool: no state touched, y = 0
      store_lanes(static_cast<T*>(p.y) + b * D + d0, simd::splat(0.0f), nv);
      continue;
    }
    alignas(64) float acc[kLanes] = {};
    for (int64_t l = 0; l < nv; ++l) {
      const int64_t d = d0 + l;
      acc[l] = conv_update_channel(sall + (slot * D + d) * S, nsall + (slot * D + d) * S, xall[b * D + d],
                                   p.weight + d * W, p.bias ? p.bias[d] : 0.0f, W);
    }
    vf v = simd::load(acc);
    if (p.silu) v = silu_fast(v);
    store_lanes(static_cast<T*>(p.y) + b * D + d0, v, nv);
  }
}

}  // namespace cpu
}  // namespace mamba_jax
