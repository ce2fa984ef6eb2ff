// XLA FFI CPU handler of ssd_state_update. Absent optional operands (D, z, dt_bias) arrive as empty
// arrays; new_state may be the state buffer itself (aliased under donation) or a separate one.
#include "common/parallel.h"
#include "ssd_state_update/args.h"
#include "ssd_state_update/ssd_state_update.h"

namespace ffi = xla::ffi;
using namespace mamba_jax;
using namespace mamba_jax::ffi_util;

namespace {

ffi::Error SsdStateUpdateImpl(ffi::ThreadPool pool, ffi::AnyBuffer state, ffi::AnyBuffer x, ffi::AnyBuffer dt,
                              ffi::AnyBuffer A, ffi::AnyBuffer B, ffi::AnyBuffer C, ffi::AnyBuffer D,
                              ffi::AnyBuffer z, ffi::AnyBuffer dt_bias, ffi::AnyBuffer state_indices, ffi::Result<ffi::AnyBuffer> y,
                              ffi::Result<ffi::AnyBuffer> new_state, bool dt_softplus, float dt_min,
                              float dt_max) {
  SsdStateUpdateArgs a{state, x, dt, A, B, C, D, z, dt_bias, state_indices, y, new_state, dt_softplus, dt_min, dt_max};
  MJ_RETURN_IF_ERROR(a.check());
  if (a.empty()) return ffi::Error::Success();

  const int64_t items = cpu::ssd_state_update_items(a.batch, a.nheads);
  const int64_t min_items = cpu::ssd_state_update_min_items(a.headdim, a.dstate);
  return for_each_slice<float, bf16_t, f16_t>(a, [&](const SsdStateUpdateParams& p, auto tag) {
    cpu::parallel_for(pool, items, min_items, [&](int64_t b, int64_t e) {
      cpu::ssd_state_update<typename decltype(tag)::type>(p, b, e);
    });
    return ffi::Error::Success();
  });
}

}  // namespace

MJ_DEFINE_CPU_HANDLER(ssd_state_update, SsdStateUpdateImpl, ssd_state_update_binding<ffi::ThreadPool>());
