// Host-side 16-bit float storage types and conversions (no framework, no F16C needed).
// Conversions round to nearest even, like the hardware does.
#pragma once

#include <cstdint>
#include <cstring>

namespace mamba_jax {

struct bf16_t { uint16_t bits; };
struct f16_t { uint16_t bits; };

inline float bits_to_float(uint32_t b) { float f; std::memcpy(&f, &b, 4); return f; }
inline uint32_t float_to_bits(float f) { uint32_t b; std::memcpy(&b, &f, 4); return b; }

inline float to_float(float x) { return x; }
inline float to_float(bf16_t x) { return bits_to_float(uint32_t(x.bits) << 16); }
inline float to_float(f16_t x) {
  const uint32_t h = x.bits;
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t man = h & 0x3ffu;
  if (exp == 0x1f) return bits_to_float(sign | 0x7f800000u | (man << 13));  // inf / nan
  if (exp != 0) return bits_to_float(sign | ((exp + 112) << 23) | (man << 13));
  // Subnormal or zero: value = man * 2^-24, exact in float.
  const float mag = float(man) * 5.9604644775390625e-08f;
  return sign ? -mag : mag;
}

template <typename T> inline T from_float(float f);
template <> inline float from_float<float>(float f) { return f; }
template <> inline bf16_t from_float<bf16_t>(float f) {
  uint32_t b = float_to_bits(f);
  if ((b & 0x7fffffffu) > 0x7f800000u) return bf16_t{uint16_t((b >> 16) | 0x40)};  // quiet nan
  b += 0x7fffu + ((b >> 16) & 1u);
  return bf16_t{uint16_t(b >> 16)};
}
template <> inline f16_t from_float<f16_t>(float f) {
  const uint32_t b = float_to_bits(f);
  const uint32_t sign = (b >> 16) & 0x8000u;
  const uint32_t abs = b & 0x7fffffffu;
  if (abs > 0x7f800000u) return f16_t{uint16_t(sign | 0x7e00u)};
  if (abs >= 0x477ff000u) return f16_t{uint16_t(sign | 0x7c00u)};  // rounds to inf
  if (abs < 0x38800000u) {
    // Result is subnormal (or zero): scale into the integer mantissa and round to nearest even.
    const float mag = bits_to_float(abs) * 16777216.0f;  // * 2^24
    uint32_t m = uint32_t(mag);
    const float rem = mag - float(m);
    if (rem > 0.5f || (rem == 0.5f && (m & 1u))) ++m;
    return f16_t{uint16_t(sign | m)};
  }
  uint32_t r = abs - 0x38000000u;  // rebias exponent 127 -> 15
  r += 0xfffu + ((r >> 13) & 1u);
  return f16_t{uint16_t(sign | (r >> 13))};
}

}  // namespace mamba_jax
