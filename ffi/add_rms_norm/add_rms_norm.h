// CPU kernel of add_rms_norm. Framework-free: it takes AddRmsNormParams and a range of rows, so the
// handler decides how to spread rows over threads.
#pragma once

#include <cmath>
#include <cstdint>

#include "add_rms_norm/params.h"
#include "common/dtypes.h"

namespace mamba_jax {
namespace cpu {

// Rows [row_begin, row_end): the first pass writes h_new and sums its squares (as stored, in double),
// the second reads h_new back and writes x. H, Y, S, O: the storage types of h, y, scale and x.
template <typename H, typename Y, typename S, typename O>
void add_rms_norm_rows(const AddRmsNormParams& p, int64_t row_begin, int64_t row_end) {
  const int64_t F = p.features;
  const S* scale = static_cast<const S*>(p.scale);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const H* h = static_cast<const H*>(p.h) + r * F;
    const Y* y = static_cast<const Y*>(p.y) + r * F;
    H* hn = static_cast<H*>(p.h_new) + r * F;
    O* x = static_cast<O*>(p.x) + r * F;
    double ss = 0.0;
    for (int64_t f = 0; f < F; ++f) {
      hn[f] = from_float<H>(to_float(h[f]) + to_float(y[f]));
      const double v = to_float(hn[f]);
      ss += v * v;
    }
    const float inv = 1.0f / std::sqrt(static_cast<float>(ss / static_cast<double>(F)) + p.eps);
    for (int64_t f = 0; f < F; ++f) x[f] = from_float<O>(to_float(hn[f]) * inv * to_float(scale[f]));
  }
}

}  // namespace cpu
}  // namespace mamba_jax
