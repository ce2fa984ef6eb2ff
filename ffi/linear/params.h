// Parameters of one linear call.
// Framework-free (no XLA): the handlers fill it from FFI buffers (args.h), the kernels read it.
#pragma once

#include <cstdint>

namespace mamba_jax {

// Small-batch projection (decode): y = x @ w.
//   x : [M, K], w : [K, N] (row-major, N contiguous), y : [M, N]; one dtype; float32 accumulation.
struct LinearParams {
  int64_t m, k, n;
  const void* x;
  const void* w;
  void* y;
};

}  // namespace mamba_jax
