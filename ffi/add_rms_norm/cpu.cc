// XLA FFI CPU handler of add_rms_norm: the rows of each vmap slice spread over the thread pool.
#include <algorithm>

#include "add_rms_norm/add_rms_norm.h"
#include "add_rms_norm/args.h"
#include "common/cpu_handler.h"

namespace ffi = xla::ffi;
using namespace mamba_jax;
using namespace mamba_jax::ffi_util;

namespace {

ffi::Error AddRmsNormImpl(ffi::ThreadPool pool, ffi::AnyBuffer h, ffi::AnyBuffer y, ffi::AnyBuffer scale,
                          ffi::Result<ffi::AnyBuffer> h_new, ffi::Result<ffi::AnyBuffer> x, float eps) {
  AddRmsNormArgs a{h, y, scale, h_new, x, eps};
  MJ_RETURN_IF_ERROR(a.check());
  if (a.empty()) return ffi::Error::Success();
  // A task is at least ~64K elements: a decode step's few rows run on the calling thread.
  const int64_t min_rows = std::max<int64_t>(1, (1 << 16) / a.features);
  return parallel_slices(a, pool, a.rows, min_rows, [&](const auto& p, auto tag, int64_t b, int64_t e) {
    using Y = typename decltype(tag)::type;
    with_add_rms_norm_types<Y>(p, [&](auto ht, auto st, auto ot) {
      cpu::add_rms_norm_rows<typename decltype(ht)::type, Y, typename decltype(st)::type,
                             typename decltype(ot)::type>(p, b, e);
    });
  });
}

}  // namespace

MJ_DEFINE_CPU_HANDLER(add_rms_norm, AddRmsNormImpl, add_rms_norm_binding<ffi::ThreadPool>());
