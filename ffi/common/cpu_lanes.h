// What the CPU kernels share on top of cpu_math.h: activations of any dtype loaded and stored as
// kLanes float lanes, and the per-channel dt and output steps of the selective scans.
//
// All arithmetic is on simd::vf, kLanes float lanes (16 with AVX-512), and the lanes always run
// along a contiguous axis. A "block" is kLanes consecutive channels.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "common/cpu_math.h"
#include "common/dtypes.h"

namespace mamba_jax {
namespace cpu {

using simd::vf;
constexpr int kLanes = simd::kWidth;

inline int64_t num_channel_blocks(int64_t dim) { return (dim + kLanes - 1) / kLanes; }

MJ_INLINE vf load_full(const float* p) { return simd::load(p); }
MJ_INLINE vf load_full(const bf16_t* p) {
  simd::vh h;
  std::memcpy(&h, p, sizeof h);
  return bit_cast<vf>(__builtin_convertvector(h, simd::vu) << 16);
}
MJ_INLINE vf load_full(const f16_t* p) {
#if defined(__AVX512F__)
  return (vf)_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
#elif defined(__F16C__) && defined(__AVX__)
  return (vf)_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#elif defined(__F16C__)
  return (vf)_mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
#else
  alignas(64) float t[kLanes];
  for (int l = 0; l < kLanes; ++l) t[l] = to_float(p[l]);
  return simd::load(t);
#endif
}

// Loads n <= kLanes values (the rest of the lanes are 0).
template <typename T>
MJ_INLINE vf load_lanes(const T* p, int64_t n) {
  if (n == kLanes) return load_full(p);
  alignas(64) float t[kLanes] = {};
  for (int64_t l = 0; l < n; ++l) t[l] = to_float(p[l]);
  return simd::load(t);
}

MJ_INLINE vf load_params(const float* p, int64_t n, float fill) {
  if (p == nullptr) return simd::splat(fill);
  return load_lanes(p, n);
}

MJ_INLINE void store_full(float* p, vf v) { simd::store(p, v); }
MJ_INLINE void store_full(bf16_t* p, vf v) {
  // Round to nearest even; NaN stays a (quiet) NaN.
  simd::vu b = bit_cast<simd::vu>(v);
  const simd::vu nan = (b & 0x7fffffffu) > 0x7f800000u;
  const simd::vu rounded = (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
  const simd::vu r = nan ? ((b >> 16) | 0x40u) : rounded;
  const simd::vh h = __builtin_convertvector(r, simd::vh);
  std::memcpy(p, &h, sizeof h);
}
// The hardware conversions round to nearest even and keep subnormals, inf and NaN, like
// from_float<f16_t>.
MJ_INLINE void store_full(f16_t* p, vf v) {
#if defined(__AVX512F__)
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph((__m512)v, _MM_FROUND_TO_NEAREST_INT));
#elif defined(__F16C__) && defined(__AVX__)
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph((__m256)v, _MM_FROUND_TO_NEAREST_INT));
#elif defined(__F16C__)
  _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_cvtps_ph((__m128)v, _MM_FROUND_TO_NEAREST_INT));
#else
  for (int l = 0; l < kLanes; ++l) p[l] = from_float<f16_t>(v[l]);
#endif
}

template <typename T>
MJ_INLINE void store_lanes(T* p, vf v, int64_t n) {
  if (n == kLanes) {
    store_full(p, v);
    return;
  }
  for (int64_t l = 0; l < n; ++l) p[l] = from_float<T>(v[l]);
}

// dt after bias and (optional) softplus.
MJ_INLINE vf prepare_dt(vf dt, vf bias, bool softplus) {
  dt = dt + bias;
  return softplus ? softplus_fast(dt) : dt;
}

// y = (y + D u) * silu(z), the gate only when z is given.
MJ_INLINE vf finish_y(vf y, vf u, vf dskip, vf z, bool has_z) {
  y = y + dskip * u;
  return has_z ? y * silu_fast(z) : y;
}

}  // namespace cpu
}  // namespace mamba_jax
