// XLA FFI CPU handlers for mamba_jax_causal_conv1d and mamba_jax_causal_conv1d_update.
// Absent optional operands (bias, initial_state) arrive as empty arrays.
#include "mamba_jax/cpu_kernels.h"
#include "../common/mamba1_args.h"
#include "parallel.h"

namespace ffi = xla::ffi;
using namespace mamba_jax;
using namespace mamba_jax::ffi_util;

namespace {

ffi::Error Conv1dImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer weight, ffi::AnyBuffer bias,
                      ffi::AnyBuffer init, ffi::Result<ffi::AnyBuffer> y,
                      ffi::Result<ffi::AnyBuffer> final_state, bool silu) {
  Conv1dArgs a{x, weight, bias, init, y, final_state, silu};
  MJ_RETURN_IF_ERROR(a.check());
  if (a.empty()) return ffi::Error::Success();

  const int64_t items = a.batch * cpu::num_row_chunks(a.seqlen);
  const int64_t item_work = std::max<int64_t>(1, std::min(cpu::kConvRows, a.seqlen) * a.dim * a.width);
  const int64_t min_items = std::max<int64_t>(1, ((1 << 17) + item_work - 1) / item_work);
  return for_each_slice<float, bf16_t, f16_t>(a, [&](const Conv1dParams& p, auto tag) {
    const std::vector<float> wt = cpu::conv1d_transposed_weight(p);
    cpu::parallel_for(pool, items, min_items, [&](int64_t b, int64_t e) {
      cpu::causal_conv1d<typename decltype(tag)::type>(p, wt.data(), b, e);
    });
    return ffi::Error::Success();
  });
}

ffi::Error Conv1dUpdateImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer conv_state,
                            ffi::AnyBuffer weight, ffi::AnyBuffer bias, ffi::Result<ffi::AnyBuffer> y,
                            ffi::Result<ffi::AnyBuffer> new_state, bool silu) {
  Conv1dUpdateArgs a{x, conv_state, weight, bias, y, new_state, silu};
  MJ_RETURN_IF_ERROR(a.check());
  if (a.empty()) return ffi::Error::Success();

  const int64_t items = a.batch * cpu::num_channel_blocks(a.dim);
  const int64_t min_items = std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(1, cpu::kLanes * a.width));
  return for_each_slice<float, bf16_t, f16_t>(a, [&](const Conv1dUpdateParams& p, auto tag) {
    cpu::parallel_for(pool, items, min_items, [&](int64_t b, int64_t e) {
      cpu::causal_conv1d_update<typename decltype(tag)::type>(p, b, e);
    });
    return ffi::Error::Success();
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MambaJaxCausalConv1dCpu, Conv1dImpl,
                              causal_conv1d_binding<ffi::ThreadPool>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(MambaJaxCausalConv1dUpdateCpu, Conv1dUpdateImpl,
                              causal_conv1d_update_binding<ffi::ThreadPool>());
