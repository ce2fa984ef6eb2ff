// CPU kernel of causal_conv1d. Framework-free: it takes CausalConv1dParams and a range of work
// items, so the handler decides how to spread items over threads.
//
// Item = (batch, chunk of rows); lanes run along the channels of a row, so a chunk reads and
// writes contiguous memory and its last width-1 rows are still in cache.
//
// Measured on a 2-core KVM guest (Xeon, AVX-512): memory access order matters as much as the
// arithmetic. Walking a block of channels down many rows (a new page per row) ran 2-3x slower
// than passes that stream whole rows, so every loop here reads rows in order, as wide as it can.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "causal_conv1d/params.h"
#include "common/cpu_lanes.h"

namespace mamba_jax {
namespace cpu {

// Rows per work item of causal_conv1d.
constexpr int64_t kConvRows = 64;
inline int64_t num_row_chunks(int64_t seqlen) { return std::max<int64_t>(1, (seqlen + kConvRows - 1) / kConvRows); }

// weight [D, W] transposed to [W, D], so a row of taps loads as vectors along the channels. The
// handler builds it once per call and shares it between threads.
inline std::vector<float> conv1d_transposed_weight(const CausalConv1dParams& p) {
  const int64_t D = p.dim, W = p.width;
  std::vector<float> wt(W * D);
  for (int64_t d = 0; d < D; ++d)
    for (int64_t k = 0; k < W; ++k) wt[k * D + d] = p.weight[d * W + k];
  return wt;
}

// kR output rows at once: y[r][d] = act(bias[d] + sum_k wt[k][d] * x[r + k][d]) over all
// channels, from the kR + width - 1 input rows `rows` (oldest first). Rows are walked in order,
// whole: on this kind of machine sequential rows stream from memory far better than a column walk
// (a block of channels down many rows pays a page walk per row). Doing kR rows per sweep loads
// each input vector once for kR outputs (kR + width - 1 loads instead of kR * width) and each
// weight vector once per kR rows, which keeps the sweep's L1 traffic down.
template <typename T, int kW, int kR, bool kSilu>
MJ_INLINE void conv_row_group(const T* const* rows, const float* wt, const float* bias, int64_t D, T* const* yrows) {
  constexpr int kIn = kR + kW - 1;
  int64_t d = 0;
  for (; d + kLanes <= D; d += kLanes) {
    const vf b = bias ? simd::load(bias + d) : simd::splat(0.0f);
    vf w[kW], xs[kIn];
    for (int k = 0; k < kW; ++k) w[k] = simd::load(wt + k * D + d);
    for (int i = 0; i < kIn; ++i) xs[i] = load_full(rows[i] + d);
    for (int r = 0; r < kR; ++r) {
      vf acc = b;
      for (int k = 0; k < kW; ++k) acc = acc + w[k] * xs[r + k];
      if (kSilu) acc = silu_fast(acc);
      store_full(yrows[r] + d, acc);
    }
  }
  if (d < D) {
    const int64_t nv = D - d;
    const vf b = bias ? load_lanes(bias + d, nv) : simd::splat(0.0f);
    for (int r = 0; r < kR; ++r) {
      vf acc = b;
      for (int k = 0; k < kW; ++k) acc = acc + load_lanes(wt + k * D + d, nv) * load_lanes(rows[r + k] + d, nv);
      if (kSilu) acc = silu_fast(acc);
      store_lanes(yrows[r] + d, acc, nv);
    }
  }
}

constexpr int kConvRowGroup = 4;

template <typename T, int kW, bool kSilu>
void conv_rows_act(const T* x, const T* hist, const float* wt, const float* bias, int64_t D, int64_t t0,
                   int64_t t1, T* y) {
  constexpr int kS = kW - 1;
  auto row = [&](int64_t j) -> const T* { return j >= 0 ? x + j * D : hist + (kS + j) * D; };
  int64_t t = t0;
  for (; t + kConvRowGroup <= t1; t += kConvRowGroup) {
    const T* rows[kConvRowGroup + kS];
    T* yrows[kConvRowGroup];
    for (int i = 0; i < kConvRowGroup + kS; ++i) rows[i] = row(t - kS + i);
    for (int r = 0; r < kConvRowGroup; ++r) yrows[r] = y + (t + r) * D;
    conv_row_group<T, kW, kConvRowGroup, kSilu>(rows, wt, bias, D, yrows);
  }
  for (; t < t1; ++t) {
    const T* rows[kW];
    T* yrow = y + t * D;
    for (int i = 0; i < kW; ++i) rows[i] = row(t - kS + i);
    conv_row_group<T, kW, 1, kSilu>(rows, wt, bias, D, &yrow);
  }
}

template <typename T, int kW>
void conv_rows(const T* x, const T* hist, const float* wt, const float* bias, int64_t D, int64_t t0, int64_t t1,
               bool silu, T* y) {
  if (silu) conv_rows_act<T, kW, true>(x, hist, wt, bias, D, t0, t1, y);
  else conv_rows_act<T, kW, false>(x, hist, wt, bias, D, t0, t1, y);
}

// Packed sequences (seq_idx): one output row at a time, each tap across a change of seq_idx replaced by
// a row of zeros. `seq` is the batch row's [L] ids; inputs before t = 0 belong to seq[0].
template <typename T>
void conv_rows_packed(const T* x, const T* hist, const float* wt, const float* bias, int64_t D, int64_t W,
                      int64_t t0, int64_t t1, bool silu, const int32_t* seq, T* y) {
  const int64_t S = W - 1;
  const std::vector<T> zeros(D, from_float<T>(0.0f));
  const T* rows[8];
  for (int64_t t = t0; t < t1; ++t) {
    bool same = true;  // no change of seq_idx between step j and t
    for (int64_t i = W - 1; i >= 0; --i) {
      const int64_t j = t - S + i;
      if (i < W - 1) same = same && seq[j >= 0 ? j : 0] == seq[j + 1 >= 0 ? j + 1 : 0];
      rows[i] = !same ? zeros.data() : (j >= 0 ? x + j * D : hist + (S + j) * D);
    }
    T* yrow = y + t * D;
    switch (W) {
      case 2: silu ? conv_row_group<T, 2, 1, true>(rows, wt, bias, D, &yrow) : conv_row_group<T, 2, 1, false>(rows, wt, bias, D, &yrow); break;
      case 3: silu ? conv_row_group<T, 3, 1, true>(rows, wt, bias, D, &yrow) : conv_row_group<T, 3, 1, false>(rows, wt, bias, D, &yrow); break;
      case 4: silu ? conv_row_group<T, 4, 1, true>(rows, wt, bias, D, &yrow) : conv_row_group<T, 4, 1, false>(rows, wt, bias, D, &yrow); break;
      case 5: silu ? conv_row_group<T, 5, 1, true>(rows, wt, bias, D, &yrow) : conv_row_group<T, 5, 1, false>(rows, wt, bias, D, &yrow); break;
      case 6: silu ? conv_row_group<T, 6, 1, true>(rows, wt, bias, D, &yrow) : conv_row_group<T, 6, 1, false>(rows, wt, bias, D, &yrow); break;
      case 7: silu ? conv_row_group<T, 7, 1, true>(rows, wt, bias, D, &yrow) : conv_row_group<T, 7, 1, false>(rows, wt, bias, D, &yrow); break;
      default: silu ? conv_row_group<T, 8, 1, true>(rows, wt, bias, D, &yrow) : conv_row_group<T, 8, 1, false>(rows, wt, bias, D, &yrow); break;
    }
  }
}

// Item = (batch, chunk of kConvRows rows). Row j of the padded input is x[b, j] for j >= 0 and
// initial_state[b, :, S + j] (or zero) for -S <= j < 0.
// Items [item_begin, item_end) of batch * num_row_chunks(seqlen); wt from conv1d_transposed_weight.
template <typename T>
void causal_conv1d(const CausalConv1dParams& p, const float* wt, int64_t item_begin, int64_t item_end) {
  const int64_t D = p.dim, W = p.width, S = W - 1, L = p.seqlen;
  const int64_t nchunks = num_row_chunks(L);
  std::vector<T> hist;  // the S rows before t = 0, as [S, D], built when a chunk needs them
  int64_t hist_b = -1;
  for (int64_t item = item_begin; item < item_end; ++item) {
    const int64_t b = item / nchunks;
    const int64_t t0 = (item % nchunks) * kConvRows;
    const int64_t t1 = std::min<int64_t>(L, t0 + kConvRows);
    const T* x = static_cast<const T*>(p.x) + b * L * D;
    T* y = static_cast<T*>(p.y) + b * L * D;
    if ((t0 < S || L < S) && hist_b != b) {
      hist.assign(S * D, from_float<T>(0.0f));
      if (p.initial_state) {
        const T* init = static_cast<const T*>(p.initial_state) + b * D * S;
        for (int64_t d = 0; d < D; ++d)
          for (int64_t k = 0; k < S; ++k) hist[k * D + d] = init[d * S + k];
      }
      hist_b = b;
    }
    if (p.seq_idx) {
      conv_rows_packed<T>(x, hist.data(), wt, p.bias, D, W, t0, t1, p.silu, p.seq_idx + b * L, y);
    } else switch (W) {
      case 2: conv_rows<T, 2>(x, hist.data(), wt, p.bias, D, t0, t1, p.silu, y); break;
      case 3: conv_rows<T, 3>(x, hist.data(), wt, p.bias, D, t0, t1, p.silu, y); break;
      case 4: conv_rows<T, 4>(x, hist.data(), wt, p.bias, D, t0, t1, p.silu, y); break;
      case 5: conv_rows<T, 5>(x, hist.data(), wt, p.bias, D, t0, t1, p.silu, y); break;
      case 6: conv_rows<T, 6>(x, hist.data(), wt, p.bias, D, t0, t1, p.silu, y); break;
      case 7: conv_rows<T, 7>(x, hist.data(), wt, p.bias, D, t0, t1, p.silu, y); break;
      default: conv_rows<T, 8>(x, hist.data(), wt, p.bias, D, t0, t1, p.silu, y); break;
    }
    if (t1 == L) {
      // final_state[b, d, k] = padded row L - S + k: the exact inputs, no rounding.
      T* fin = static_cast<T*>(p.final_state) + b * D * S;
      for (int64_t k = 0; k < S; ++k) {
        const int64_t j = L - S + k;
        const T* r = j >= 0 ? x + j * D : hist.data() + (S + j) * D;
        for (int64_t d = 0; d < D; ++d) fin[d * S + k] = r[d];
      }
    }
  }
}

}  // namespace cpu
}  // namespace mamba_jax
