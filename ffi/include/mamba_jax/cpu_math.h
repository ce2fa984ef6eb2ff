// Branch-free float math that GCC/Clang vectorise across a lane loop (no libm calls).
// Relative error about 1e-7 over the ranges the scans use; exp saturates instead of
// producing inf/denormals, which is what a decaying state wants.
#pragma once

#include <cstdint>

namespace mamba_jax {

#if defined(__GNUC__) || defined(__clang__)
#define MJ_INLINE inline __attribute__((always_inline))
#else
#define MJ_INLINE inline
#endif

MJ_INLINE float fast_exp(float x) {
  // exp(x) = 2^k * 2^f, k = round(x log2 e), |f| <= 0.5. Taylor of 2^f to degree 7: error < 3e-9.
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float t = x * 1.4426950408889634f;
  const float k = __builtin_floorf(t + 0.5f);
  const float f = (t - k) * 0.6931471805599453f;  // f in [-ln2/2, ln2/2]
  float p = 1.0f / 5040.0f;
  p = p * f + 1.0f / 720.0f;
  p = p * f + 1.0f / 120.0f;
  p = p * f + 1.0f / 24.0f;
  p = p * f + 1.0f / 6.0f;
  p = p * f + 0.5f;
  p = p * f + 1.0f;
  p = p * f + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  return p * __builtin_bit_cast(float, bits);
}

// Natural log of a normal positive float.
MJ_INLINE float fast_log(float y) {
  int32_t bits = __builtin_bit_cast(int32_t, y);
  int32_t e = (bits >> 23) - 127;
  int32_t mbits = (bits & 0x007fffff) | 0x3f800000;
  float m = __builtin_bit_cast(float, mbits);  // [1, 2)
  const bool big = m > 1.41421356f;
  m = big ? m * 0.5f : m;
  e = big ? e + 1 : e;
  const float f = m - 1.0f;  // [-0.29, 0.42]
  const float s = f / (2.0f + f);
  const float s2 = s * s;
  float p = 1.0f / 11.0f;
  p = p * s2 + 1.0f / 9.0f;
  p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f;
  p = p * s2 + 1.0f / 3.0f;
  p = p * s2 + 1.0f;
  return static_cast<float>(e) * 0.6931471805599453f + 2.0f * s * p;
}

// softplus(x) = log(1 + e^x), accurate for small results (log1p via u = 1 + e, log(u) * e / (u - 1)).
MJ_INLINE float fast_softplus(float x) {
  const float e = fast_exp(x);
  const float u = 1.0f + e;
  const float d = u - 1.0f;
  const float lp = d == 0.0f ? e : fast_log(u) * (e / (d == 0.0f ? 1.0f : d));
  return x > 20.0f ? x : lp;
}

MJ_INLINE float silu(float x) { return x / (1.0f + fast_exp(-x)); }

}  // namespace mamba_jax
