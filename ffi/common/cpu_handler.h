// What the CPU handlers of the vmapped ops share: after the checks, the work items of each vmap slice
// spread over XLA's intra-op thread pool.
#pragma once

#include <cstdint>

#include "common/dtypes.h"
#include "common/handler.h"
#include "common/parallel.h"

namespace mamba_jax {
namespace ffi_util {

// For each vmap slice: kernel(params, TypeTag<T>{}, begin, end) over items [0, items) in tasks of
// at least min_items (cpu::parallel_for), T the host type of the activation dtype.
template <typename Args, typename Kernel>
ffi::Error parallel_slices(Args& a, ffi::ThreadPool& pool, int64_t items, int64_t min_items, Kernel&& kernel) {
  return for_each_slice<float, bf16_t, f16_t>(a, [&](const auto& p, auto tag) {
    cpu::parallel_for(pool, items, min_items, [&](int64_t b, int64_t e) { kernel(p, tag, b, e); });
    return ffi::Error::Success();
  });
}

}  // namespace ffi_util
}  // namespace mamba_jax
