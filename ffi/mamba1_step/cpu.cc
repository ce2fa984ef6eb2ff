// XLA FFI CPU handler of mamba1_step: the checks of args.h, batch rows spread over the thread pool.
#include "common/cpu_handler.h"
#include "mamba1_step/args.h"
#include "mamba1_step/mamba1_step.h"

namespace ffi = xla::ffi;
using namespace mamba_jax;
using namespace mamba_jax::ffi_util;

namespace {

ffi::Error Mamba1StepImpl(ffi::ThreadPool pool, ffi::AnyBuffer xz, ffi::AnyBuffer conv_state, ffi::AnyBuffer conv_weight,
                          ffi::AnyBuffer conv_bias, ffi::AnyBuffer x_proj, ffi::AnyBuffer dt_proj,
                          ffi::AnyBuffer dt_bias, ffi::AnyBuffer A, ffi::AnyBuffer D, ffi::AnyBuffer ssm_state,
                          ffi::AnyBuffer state_indices, Out y, Out new_conv_state, Out new_ssm_state, Out workspace) {
  Mamba1StepArgs a{xz, conv_state, conv_weight, conv_bias, x_proj, dt_proj, dt_bias, A, D, ssm_state,
                   state_indices, y, new_conv_state, new_ssm_state, workspace};
  MJ_RETURN_IF_ERROR(a.check());
  if (a.empty()) return ffi::Error::Success();
  return parallel_slices(a, pool, a.batch, 1, [&](const auto& p, auto tag, int64_t b, int64_t e) {
    cpu::mamba1_step<typename decltype(tag)::type>(p, b, e);
  });
}

}  // namespace

MJ_DEFINE_CPU_HANDLER(mamba1_step, Mamba1StepImpl, mamba1_step_binding<ffi::ThreadPool>());
