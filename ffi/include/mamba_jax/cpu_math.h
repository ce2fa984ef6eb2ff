// Explicit SIMD for the CPU kernels: a 16-lane float vector (GCC/Clang vector extensions) and
// branch-free exp / log / softplus / silu written once as templates that serve both that vector
// and plain float.
//
// Why vector extensions and not intrinsics: the same source compiles to one AVX-512 register, two
// AVX2 registers or four SSE/NEON registers, whatever -march allows, and GCC's auto-vectoriser
// did not vectorise the old per-lane loops (the exp's floor and int conversion kept it scalar).
// 16 lanes = 64 bytes = one cache line of float32 channels.
//
// Accuracy: exp2 has max relative error ~1e-7 (float32 evaluation of a degree-6 minimax
// polynomial, 2e-9 in exact arithmetic) and saturates instead of producing inf/denormals: inputs
// are clamped to [-126, 127] in base 2 (about [-87.3, 88.0] for exp), which is what a decaying state
// wants. Do not build these with -ffast-math: the round-to-integer trick needs (t + M) - M kept.
#pragma once

#include <cstdint>
#include <cstring>

namespace mamba_jax {

#if defined(__GNUC__) || defined(__clang__)
#define MJ_INLINE inline __attribute__((always_inline))
#else
#define MJ_INLINE inline
#endif

namespace simd {

constexpr int kWidth = 16;
typedef float vf __attribute__((vector_size(kWidth * 4)));
typedef int32_t vi __attribute__((vector_size(kWidth * 4)));
typedef uint32_t vu __attribute__((vector_size(kWidth * 4)));
typedef uint16_t vh __attribute__((vector_size(kWidth * 2)));
typedef float vf8 __attribute__((vector_size(32)));
typedef float vf4 __attribute__((vector_size(16)));

MJ_INLINE vf splat(float x) { return vf{} + x; }
MJ_INLINE vf load(const float* p) { vf v; std::memcpy(&v, p, sizeof v); return v; }
MJ_INLINE void store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }

MJ_INLINE float hsum(vf v) {
  vf8 a, b;
  std::memcpy(&a, &v, 32);
  std::memcpy(&b, reinterpret_cast<const char*>(&v) + 32, 32);
  const vf8 s8 = a + b;
  vf4 c, d;
  std::memcpy(&c, &s8, 16);
  std::memcpy(&d, reinterpret_cast<const char*>(&s8) + 16, 16);
  const vf4 s4 = c + d;
  return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

}  // namespace simd

// Integer and unsigned twins of float / simd::vf, for bit manipulation.
template <class V> struct VecTraits;
template <> struct VecTraits<float> { using I = int32_t; using U = uint32_t; };
template <> struct VecTraits<simd::vf> { using I = simd::vi; using U = simd::vu; };

template <class To, class From>
MJ_INLINE To bit_cast(const From& x) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast needs equal sizes");
  To t;
  std::memcpy(&t, &x, sizeof t);
  return t;
}

MJ_INLINE float int_to_float(int32_t x) { return static_cast<float>(x); }
MJ_INLINE simd::vf int_to_float(simd::vi x) { return __builtin_convertvector(x, simd::vf); }

// a < b ? a : b works lane-wise for vector extensions (C++) and as usual for scalars.
template <class V> MJ_INLINE V vmin(V a, V b) { return a < b ? a : b; }
template <class V> MJ_INLINE V vmax(V a, V b) { return a > b ? a : b; }
template <class V> MJ_INLINE V splat_as(float x) { return V{} + x; }

// 2^t for t already known to lie in [-126, 127]. Rounds t to the nearest integer k by adding
// 1.5 * 2^23 (+127, the exponent bias), so the low bits of the sum hold k + 127 and a shift by 23
// makes the float 2^k; 2^(t-k), t-k in [-0.5, 0.5], comes from a degree-6 polynomial (minimax,
// relative). 12 operations; the scan's inner loop uses it when it has proven the range.
template <class V>
MJ_INLINE V exp2_inrange(V t) {
  using U = typename VecTraits<V>::U;
  const V magic = splat_as<V>(12583039.0f);  // 1.5 * 2^23 + 127
  const V kf = t + magic;
  const V f = t - (kf - magic);
  V p = splat_as<V>(1.5353361959569156e-4f);
  p = p * f + 1.3398875016719103e-3f;
  p = p * f + 9.618436917662620e-3f;
  p = p * f + 5.5503323674201965e-2f;
  p = p * f + 2.4022647738456726e-1f;
  p = p * f + 6.931471824645996e-1f;
  p = p * f + 1.0f;
  const U scale = bit_cast<U>(kf) << 23;
  return p * bit_cast<V>(scale);
}

// 2^t for any t, saturating to [2^-126, 2^127.5].
template <class V>
MJ_INLINE V exp2_fast(V t) {
  return exp2_inrange(vmin(vmax(t, splat_as<V>(-126.0f)), splat_as<V>(127.0f)));
}

constexpr float kLog2e = 1.4426950408889634f;

// e^x, accurate to ~1.2e-7 relative for any x in range: k = round(x log2 e), r = x - k ln2 in two
// parts (Cody-Waite, so r keeps its low bits even for large |x|), e^r from the same polynomial
// with its coefficients rescaled to base e. Two more operations than exp2_fast(x * kLog2e), whose
// error grows as |x| 2^-24 (the rounding of the product); the scan's inner loop uses that cheaper
// form because its argument dt * A carries that much rounding already.
template <class V>
MJ_INLINE V exp_fast(V x) {
  using U = typename VecTraits<V>::U;
  x = vmin(vmax(x, splat_as<V>(-87.33654f)), splat_as<V>(88.02969f));  // 2^-126 .. 2^127
  const V magic = splat_as<V>(12583039.0f);
  const V kf = x * kLog2e + magic;
  const V k = kf - magic;
  V r = x - k * 0.693359375f;  // ln 2, high part (exact product)
  r = r - k * -2.12194440e-4f;  // ln 2, low part
  V p = splat_as<V>(1.3843653723597527e-3f);
  p = p * r + 8.37415549904108e-3f;
  p = p * r + 4.166800156235695e-2f;
  p = p * r + 1.6666430234909058e-1f;
  p = p * r + 4.999999403953552e-1f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const U scale = bit_cast<U>(kf) << 23;
  return p * bit_cast<V>(scale);
}

// Natural log of a normal positive float: m in [sqrt(1/2), sqrt(2)), log(m) = 2 atanh(s),
// s = (m - 1) / (m + 1), odd series to s^11 (|s| < 0.172, error < 1e-8).
template <class V>
MJ_INLINE V log_fast(V y) {
  using I = typename VecTraits<V>::I;
  const I bits = bit_cast<I>(y);
  I e = (bits >> 23) - 127;
  V m = bit_cast<V>((bits & 0x007fffff) | 0x3f800000);  // [1, 2)
  const auto big = m > splat_as<V>(1.41421356f);
  m = big ? m * 0.5f : m;
  e = big ? e + 1 : e;
  const V f = m - 1.0f;
  const V s = f / (f + 2.0f);
  const V s2 = s * s;
  V p = splat_as<V>(1.0f / 11.0f);
  p = p * s2 + 1.0f / 9.0f;
  p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f;
  p = p * s2 + 1.0f / 3.0f;
  p = p * s2 + 1.0f;
  return int_to_float(e) * 0.6931471805599453f + (s + s) * p;
}

// softplus(x) = log(1 + e^x), accurate for small results: with u = 1 + e rounded,
// log1p(e) = log(u) * e / (u - 1) (exact ratio correction); x > 20 returns x.
template <class V>
MJ_INLINE V softplus_fast(V x) {
  const V e = exp_fast(vmin(x, splat_as<V>(20.0f)));
  const V u = e + 1.0f;
  const V d = u - 1.0f;
  const auto tiny = d == splat_as<V>(0.0f);
  const V lp = tiny ? e : log_fast(u) * (e / (tiny ? splat_as<V>(1.0f) : d));
  return x > splat_as<V>(20.0f) ? x : lp;
}

template <class V> MJ_INLINE V silu_fast(V x) { return x / (exp_fast(-x) + 1.0f); }

// Scalar names kept for code that works one value at a time.
MJ_INLINE float fast_exp(float x) { return exp_fast(x); }
MJ_INLINE float fast_log(float y) { return log_fast(y); }
MJ_INLINE float fast_softplus(float x) { return softplus_fast(x); }
MJ_INLINE float silu(float x) { return silu_fast(x); }

}  // namespace mamba_jax
