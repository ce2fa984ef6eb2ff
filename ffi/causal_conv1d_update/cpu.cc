// XLA FFI CPU handler of causal_conv1d_update. An absent bias arrives as an empty array.
#include "causal_conv1d_update/args.h"
#include "causal_conv1d_update/causal_conv1d_update.h"
#include "common/cpu_handler.h"

namespace ffi = xla::ffi;
using namespace mamba_jax;
using namespace mamba_jax::ffi_util;

namespace {

ffi::Error CausalConv1dUpdateImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer conv_state,
                                  ffi::AnyBuffer weight, ffi::AnyBuffer bias, ffi::AnyBuffer state_indices,
                                  ffi::Result<ffi::AnyBuffer> y,
                                  ffi::Result<ffi::AnyBuffer> new_state, bool silu) {
  CausalConv1dUpdateArgs a{x, conv_state, weight, bias, state_indices, y, new_state, silu};
  MJ_RETURN_IF_ERROR(a.check());
  if (a.empty()) return ffi::Error::Success();

  const int64_t items = cpu::causal_conv1d_update_items(a.batch, a.dim);
  const int64_t min_items = cpu::causal_conv1d_update_min_items(a.width);
  return parallel_slices(a, pool, items, min_items, [&](const auto& p, auto tag, int64_t b, int64_t e) {
    cpu::causal_conv1d_update<typename decltype(tag)::type>(p, b, e);
  });
}

}  // namespace

MJ_DEFINE_CPU_HANDLER(causal_conv1d_update, CausalConv1dUpdateImpl,
                      causal_conv1d_update_binding<ffi::ThreadPool>());
