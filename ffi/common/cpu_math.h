// Explicit SIMD for the CPU kernels: a float vector of the target's width (GCC/Clang vector
// extensions: 16 lanes with AVX-512, 8 with AVX/AVX2, 4 otherwise) and branch-free exp / log /
// softplus / silu written once as templates that serve both that vector and plain float.
//
// Why vector extensions and not intrinsics: one source serves every x86 level and NEON, and GCC's
// auto-vectoriser did not vectorise the old per-lane loops (the exp's floor and int conversion
// kept it scalar). Three AVX-512 intrinsics (min, max, scalef) replace two-instruction generic
// sequences where the target has them.
//
// Accuracy: exp2 has max relative error ~1e-7 (float32 evaluation of a degree-6 minimax
// polynomial, 2e-9 in exact arithmetic) and saturates instead of producing inf/denormals: inputs
// are clamped to [-126, 127] in base 2 (about [-87.3, 88.0] for exp), which is what a decaying state
// wants. Do not build these with -ffast-math: the round-to-integer trick needs (t + M) - M kept.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__AVX512F__) || defined(__F16C__)
#include <immintrin.h>
#endif

// Built without AVX-512, GCC notes that 64-byte vector arguments change the ABI; these helpers are
// all inlined, so no such call ever crosses a compiled boundary.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace mamba_jax {

#if defined(__GNUC__) || defined(__clang__)
#define MJ_INLINE inline __attribute__((always_inline))
#else
#define MJ_INLINE inline
#endif

namespace simd {

// The target's native vector width: GCC lowers wider generic vectors by splitting them, but
// scalarises their compares and selects (measured: a 16-lane build ran 3x slower on AVX2 than
// the 8-lane one).
#if defined(__AVX512F__)
constexpr int kWidth = 16;
#elif defined(__AVX__)
constexpr int kWidth = 8;
#else
constexpr int kWidth = 4;
#endif
typedef float vf __attribute__((vector_size(kWidth * 4)));
typedef int32_t vi __attribute__((vector_size(kWidth * 4)));
typedef uint32_t vu __attribute__((vector_size(kWidth * 4)));
typedef uint16_t vh __attribute__((vector_size(kWidth * 2)));

MJ_INLINE vf splat(float x) { return vf{} + x; }
MJ_INLINE vf load(const float* p) { vf v; std::memcpy(&v, p, sizeof v); return v; }
MJ_INLINE void store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }

MJ_INLINE float hsum(vf v) {
  float s0 = 0.0f, s1 = 0.0f;
  for (int l = 0; l < kWidth; l += 2) {
    s0 += v[l];
    s1 += v[l + 1];
  }
  return s0 + s1;
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

// p * 2^k for integer-valued k; kf = k + 1.5 * 2^23 + 127 (the rounding sum, whose low bits hold
// the biased exponent). Generic: build 2^k from those bits (k + 127 in [1, 254]).
template <class V>
MJ_INLINE V mul_pow2(V p, V kf, V k) {
  using U = typename VecTraits<V>::U;
  (void)k;
  return p * bit_cast<V>(bit_cast<U>(kf) << 23);
}

// 1 / a.
template <class V> MJ_INLINE V recip(V a) { return 1.0f / a; }

#if defined(__AVX512F__)
// With AVX-512 the vector versions are single instructions: the generic vector ?: becomes a
// compare plus a blend (2 operations), and vscalefps does p * 2^k in one.
MJ_INLINE simd::vf vmin(simd::vf a, simd::vf b) { return (simd::vf)_mm512_min_ps((__m512)a, (__m512)b); }
MJ_INLINE simd::vf vmax(simd::vf a, simd::vf b) { return (simd::vf)_mm512_max_ps((__m512)a, (__m512)b); }
MJ_INLINE simd::vf mul_pow2(simd::vf p, simd::vf, simd::vf k) {
  return (simd::vf)_mm512_scalef_ps((__m512)p, (__m512)k);
}
// vdivps on 16 lanes occupies the (unpipelined) divider for ~10-16 cycles; the 14-bit estimate
// plus one Newton step (relative error ~2^-28 before rounding) is three pipelined operations.
// On the loaded 2-core test machine the A/B difference stayed within the noise; kept because it
// removes the one unpipelined unit from the per-step work.
MJ_INLINE simd::vf recip(simd::vf a) {
  const simd::vf r = (simd::vf)_mm512_rcp14_ps((__m512)a);
  const simd::vf e = 1.0f - a * r;  // exact with an FMA (a r is within 2^-14 of 1)
  return r + r * e;
}
#endif

// 2^t for t already known to lie in [-126, 127]. Rounds t to the nearest integer k by adding
// 1.5 * 2^23 (+127, the exponent bias), so the low bits of the sum hold k + 127 and a shift by 23
// makes the float 2^k (or vscalefps scales by 2^k); 2^(t-k), t-k in [-0.5, 0.5], comes from a
// degree-6 polynomial (minimax, relative; max error 1e-7 in float). 11 operations (10 with
// vscalefps); a caller's t = dt * A fuses into the first FMAs. The scan's inner loop uses it
// once it has proven the range.
template <class V>
MJ_INLINE V exp2_inrange(V t) {
  const V magic = splat_as<V>(12583039.0f);  // 1.5 * 2^23 + 127
  const V kf = t + magic;
  const V k = kf - magic;
  const V f = t - k;
  V p = splat_as<V>(1.5353361959569156e-4f);
  p = p * f + 1.3398875016719103e-3f;
  p = p * f + 9.618436917662620e-3f;
  p = p * f + 5.5503323674201965e-2f;
  p = p * f + 2.4022647738456726e-1f;
  p = p * f + 6.931471824645996e-1f;
  p = p * f + 1.0f;
  return mul_pow2(p, kf, k);
}

#if defined(__AVX512F__)
// AVX-512: one operation fewer per call, for the scan's inner loop. k = t rounded to a multiple of
// 1/32 (same rounding sum, scaled), 2^k = 2^floor(k) (vscalefps) * 2^(j/32) (a 32-entry table
// looked up with one vpermt2ps on the low 5 bits of the sum), and 2^(t-k), |t-k| <= 1/64, from a
// degree-3 minimax polynomial: 9 operations with the caller's multiply fused, against 10.
// Max relative error 1.7e-7 (1e-10 polynomial, the rest float rounding of table and product).
// A 32-entry degree-2 variant (8 operations) was 2.2e-7 but its error is systematic for a given
// dt * A, and a 2048-step scan with dA near 1 came out 10x less accurate; this one matched the
// polynomial form (max |y - float64 oracle| within 10%) in the same test.
MJ_INLINE simd::vf exp2_inrange(simd::vf t) {
  const simd::vf magic = simd::splat(393216.0f);  // 1.5 * 2^23 / 32: rounds to multiples of 1/32
  const simd::vf kf = t + magic;
  const simd::vf k = kf - magic;
  const simd::vf f = t - k;
  simd::vf p = simd::splat(5.5503614246845245e-2f);
  p = p * f + 2.4022845923900604e-1f;
  p = p * f + 6.931471824645996e-1f;
  p = p * f + 1.0f;
  const __m512 lo = _mm512_setr_ps(
      1.0f, 1.0218971967697144f, 1.0442737340927124f, 1.0671404600143433f,
      1.0905077457427979f, 1.114386796951294f, 1.1387885808944702f, 1.1637248992919922f,
      1.1892070770263672f, 1.215247392654419f, 1.2418577671051025f, 1.2690509557724f,
      1.2968395948410034f, 1.3252366781234741f, 1.3542555570602417f, 1.3839099407196045f);
  const __m512 hi = _mm512_setr_ps(
      1.4142135381698608f, 1.4451807737350464f, 1.4768261909484863f, 1.5091644525527954f,
      1.5422108173370361f, 1.5759809017181396f, 1.610490322113037f, 1.6457555294036865f,
      1.6817928552627563f, 1.7186193466186523f, 1.7562521696090698f, 1.7947090864181519f,
      1.8340080976486206f, 1.8741676807403564f, 1.9152065515518188f, 1.9571441411972046f);
  const __m512 tj = _mm512_permutex2var_ps(lo, _mm512_castps_si512((__m512)kf), hi);
  return (simd::vf)_mm512_scalef_ps(_mm512_mul_ps((__m512)p, tj), (__m512)k);
}
#endif

// 2^t for any t, saturating to [2^-126, 2^127.5].
template <class V>
MJ_INLINE V exp2_fast(V t) {
  return exp2_inrange(vmin(vmax(t, splat_as<V>(-125.9f)), splat_as<V>(127.0f)));
}

constexpr float kLog2e = 1.4426950408889634f;

// e^x, accurate to ~1.2e-7 relative for any x in range: k = round(x log2 e), r = x - k ln2 in two
// parts (Cody-Waite, so r keeps its low bits even for large |x|), e^r from the same polynomial
// with its coefficients rescaled to base e. Two more operations than exp2_fast(x * kLog2e), whose
// error grows as |x| 2^-24 (the rounding of the product); the scan's inner loop uses that cheaper
// form because its argument dt * A carries that much rounding already.
template <class V>
MJ_INLINE V exp_fast(V x) {
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
  return mul_pow2(p, kf, k);
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
  const V s = f * recip(f + 2.0f);
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
// log1p(e) = log(u) * e / (u - 1) (exact ratio correction); x > 20 returns x, and x < -88 returns 0
// (e^x is below float's smallest normal there, where exp_fast stops), as the CUDA kernels' MUFU exp
// gives: a masked prefill's padded steps rely on softplus(very negative) being exactly 0.
template <class V>
MJ_INLINE V softplus_fast(V x) {
  const V e = exp_fast(vmin(x, splat_as<V>(20.0f)));
  const V u = e + 1.0f;
  const V d = u - 1.0f;
  const auto tiny = d == splat_as<V>(0.0f);
  const V lp = tiny ? e : log_fast(u) * (e * recip(tiny ? splat_as<V>(1.0f) : d));
  const V small = x < splat_as<V>(-88.0f) ? splat_as<V>(0.0f) : lp;
  return x > splat_as<V>(20.0f) ? x : small;
}

template <class V> MJ_INLINE V silu_fast(V x) { return x * recip(exp_fast(-x) + 1.0f); }

// Scalar names kept for code that works one value at a time.
MJ_INLINE float fast_exp(float x) { return exp_fast(x); }
MJ_INLINE float fast_log(float y) { return log_fast(y); }
MJ_INLINE float fast_softplus(float x) { return softplus_fast(x); }
MJ_INLINE float silu(float x) { return silu_fast(x); }

}  // namespace mamba_jax
