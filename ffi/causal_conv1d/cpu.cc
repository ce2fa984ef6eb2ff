// XLA FFI CPU handler of causal_conv1d. Absent optional operands (bias, initial_state, seq_idx)
// arrive as empty arrays.
#include "causal_conv1d/args.h"
#include "causal_conv1d/causal_conv1d.h"
#include "common/parallel.h"

namespace ffi = xla::ffi;
using namespace mamba_jax;
using namespace mamba_jax::ffi_util;

namespace {

ffi::Error CausalConv1dImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer weight, ffi::AnyBuffer bias,
                            ffi::AnyBuffer init, ffi::AnyBuffer seq_idx, ffi::Result<ffi::AnyBuffer> y,
                            ffi::Result<ffi::AnyBuffer> final_state, bool silu) {
  CausalConv1dArgs a{x, weight, bias, init, seq_idx, y, final_state, silu};
  MJ_RETURN_IF_ERROR(a.check());
  if (a.empty()) return ffi::Error::Success();

  const int64_t items = a.batch * cpu::num_row_chunks(a.seqlen);
  const int64_t item_work = std::max<int64_t>(1, std::min(cpu::kConvRows, a.seqlen) * a.dim * a.width);
  const int64_t min_items = std::max<int64_t>(1, ((1 << 17) + item_work - 1) / item_work);
  return for_each_slice<float, bf16_t, f16_t>(a, [&](const CausalConv1dParams& p, auto tag) {
    const std::vector<float> wt = cpu::conv1d_transposed_weight(p);
    cpu::parallel_for(pool, items, min_items, [&](int64_t b, int64_t e) {
      cpu::causal_conv1d<typename decltype(tag)::type>(p, wt.data(), b, e);
    });
    return ffi::Error::Success();
  });
}

}  // namespace

MJ_DEFINE_CPU_HANDLER(causal_conv1d, CausalConv1dImpl, causal_conv1d_binding<ffi::ThreadPool>());
