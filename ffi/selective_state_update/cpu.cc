// XLA FFI CPU handler of selective_state_update. Absent optional operands (D, z, dt_bias) arrive as
// empty arrays.
#include "common/cpu_handler.h"
#include "selective_state_update/args.h"
#include "selective_state_update/selective_state_update.h"

namespace ffi = xla::ffi;
using namespace mamba_jax;
using namespace mamba_jax::ffi_util;

namespace {

ffi::Error SelectiveStateUpdateImpl(ffi::ThreadPool pool, ffi::AnyBuffer state, ffi::AnyBuffer x, ffi::AnyBuffer dt,
                                    ffi::AnyBuffer A, ffi::AnyBuffer Bm, ffi::AnyBuffer Cm, ffi::AnyBuffer Dskip,
                                    ffi::AnyBuffer z, ffi::AnyBuffer dt_bias, ffi::AnyBuffer state_indices,
                                    ffi::Result<ffi::AnyBuffer> y,
                                    ffi::Result<ffi::AnyBuffer> new_state, bool dt_softplus) {
  SelectiveStateUpdateArgs a{state, x, dt, A, Bm, Cm, Dskip, z, dt_bias, state_indices, y, new_state, dt_softplus};
  MJ_RETURN_IF_ERROR(a.check());
  if (a.empty()) return ffi::Error::Success();

  const int64_t items = a.batch * cpu::num_channel_blocks(a.dim);
  // Items are (batch, block of kLanes channels); tasks of >= ~2^17 lane-updates (~50 us).
  const int64_t min_items = std::max<int64_t>(1, (1 << 17) / (cpu::kLanes * a.dstate));
  return parallel_slices(a, pool, items, min_items, [&](const auto& p, auto tag, int64_t b, int64_t e) {
    cpu::selective_state_update<typename decltype(tag)::type>(p, b, e);
  });
}

}  // namespace

MJ_DEFINE_CPU_HANDLER(selective_state_update, SelectiveStateUpdateImpl,
                      selective_state_update_binding<ffi::ThreadPool>());
