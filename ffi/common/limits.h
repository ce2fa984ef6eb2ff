// Limits shared by the kernels, the FFI operand checks and the Python checks
// (mamba_jax/ops/_checks.py keeps the same numbers).
#pragma once

#include <cstdint>

namespace mamba_jax {

constexpr int64_t kMaxDstate = 256;
constexpr int64_t kMinConvWidth = 2;
constexpr int64_t kMaxConvWidth = 8;

}  // namespace mamba_jax
