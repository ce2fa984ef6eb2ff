// CPU kernel of mamba1_step: one batch row per work item, the same steps and rounding points as the
// CUDA kernels (conv update + SiLU -> u, x_proj -> dt_low, B, C, dt_proj -> dt, the state update, D
// and the silu(z) gate). The projections run as rows of axpys, so the compiler vectorises them.
#pragma once

#include <cstdint>
#include <vector>

#include "causal_conv1d_update/causal_conv1d_update.h"
#include "common/cpu_lanes.h"
#include "mamba1_step/params.h"

namespace mamba_jax {
namespace cpu {

template <typename T>
MJ_INLINE float round_to(float x) { return to_float(from_float<T>(x)); }

template <typename T>
void mamba1_step(const Mamba1StepParams& p, int64_t row_begin, int64_t row_end) {
  const int64_t E = p.dim, N = p.dstate, R = p.dt_rank, J = p.cols, W = p.width, S = W - 1;
  std::vector<float> dt(E);
  for (int64_t row = row_begin; row < row_end; ++row) {
    T* y = static_cast<T*>(p.y) + row * E;
    const int64_t slot = p.state_indices ? p.state_indices[row] : row;
    if (p.state_indices && (slot < 0 || slot >= p.n_slots)) {  // not a slot of the pool: no state touched, y = 0
      for (int64_t c = 0; c < E; ++c) y[c] = from_float<T>(0.0f);
      continue;
    }
    const T* xz = static_cast<const T*>(p.xz) + row * 2 * E;
    float* u = p.u() + row * E;
    float* x_dbl = p.x_dbl() + row * J;
    for (int64_t c = 0; c < E; ++c) {
      const float a = conv_update_channel(static_cast<const T*>(p.conv_state) + (slot * E + c) * S,
                                          static_cast<T*>(p.new_conv_state) + (slot * E + c) * S, xz[c],
                                          p.conv_weight + c * W, p.conv_bias ? p.conv_bias[c] : 0.0f, W);
      u[c] = round_to<T>(silu_fast(a));
    }
    for (int64_t j = 0; j < J; ++j) x_dbl[j] = 0.0f;
    const T* wx = static_cast<const T*>(p.x_proj);
    for (int64_t c = 0; c < E; ++c) {
      const float uc = u[c];
      const T* wrow = wx + c * J;
      for (int64_t j = 0; j < J; ++j) x_dbl[j] += uc * to_float(wrow[j]);
    }
    for (int64_t j = 0; j < J; ++j) x_dbl[j] = round_to<T>(x_dbl[j]);
    for (int64_t c = 0; c < E; ++c) dt[c] = 0.0f;
    const T* wdt = static_cast<const T*>(p.dt_proj);
    for (int64_t r = 0; r < R; ++r) {
      const float xr = x_dbl[r];
      const T* wrow = wdt + r * E;
      for (int64_t c = 0; c < E; ++c) dt[c] += xr * to_float(wrow[c]);
    }
    const float* Bv = x_dbl + R;
    const float* Cv = x_dbl + R + N;
    for (int64_t c = 0; c < E; ++c) {
      const float d = softplus_fast(round_to<T>(dt[c]) + p.dt_bias[c]);
      const float d2 = d * kLog2e, du = d * u[c];
      const float* h_in = p.ssm_state + (slot * E + c) * N;
      float* h_out = p.new_ssm_state + (slot * E + c) * N;
      const float* A = p.A + c * N;
      float acc = 0.0f;
      for (int64_t n = 0; n < N; ++n) {
        const float h = exp2_fast(A[n] * d2) * h_in[n] + Bv[n] * du;
        h_out[n] = h;
        acc += h * Cv[n];
      }
      if (p.D) acc += p.D[c] * u[c];
      y[c] = from_float<T>(acc * silu_fast(to_float(xz[E + c])));
    }
  }
}

}  // namespace cpu
}  // namespace mamba_jax
