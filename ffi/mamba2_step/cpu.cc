// XLA FFI CPU handler of mamba2_step: the checks of args.h, then per vmap slice the conv stage and the
// state-update stage, each spread over the thread pool with the work items of its op's own handler.
#include "common/cpu_handler.h"
#include "mamba2_step/args.h"
#include "mamba2_step/mamba2_step.h"

namespace ffi = xla::ffi;
using namespace mamba_jax;
using namespace mamba_jax::ffi_util;

namespace {

ffi::Error Mamba2StepImpl(ffi::ThreadPool pool, ffi::AnyBuffer xBC, ffi::AnyBuffer dt, ffi::AnyBuffer conv_state,
                          ffi::AnyBuffer ssm_state, ffi::AnyBuffer conv_weight, ffi::AnyBuffer conv_bias,
                          ffi::AnyBuffer A, ffi::AnyBuffer D, ffi::AnyBuffer dt_bias, ffi::AnyBuffer z,
                          ffi::AnyBuffer state_indices, Out y, Out new_conv_state, Out new_ssm_state, Out workspace,
                          float dt_min, float dt_max) {
  Mamba2StepArgs a{xBC, dt, conv_state, ssm_state, conv_weight, conv_bias, A, D, dt_bias, z, state_indices,
                   y, new_conv_state, new_ssm_state, workspace, dt_min, dt_max};
  MJ_RETURN_IF_ERROR(a.check());
  if (a.empty()) return ffi::Error::Success();
  const int64_t conv_items = cpu::causal_conv1d_update_items(a.batch, a.channels);
  const int64_t conv_min = cpu::causal_conv1d_update_min_items(a.width);
  const int64_t ssm_items = cpu::ssd_state_update_items(a.batch, a.nheads);
  const int64_t ssm_min = cpu::ssd_state_update_min_items(a.headdim, a.dstate);
  return for_each_slice<float, bf16_t, f16_t>(a, [&](const Mamba2StepParams& p, auto tag) {
    using T = typename decltype(tag)::type;
    cpu::parallel_for(pool, conv_items, conv_min, [&](int64_t b, int64_t e) { cpu::causal_conv1d_update<T>(p.conv, b, e); });
    cpu::parallel_for(pool, ssm_items, ssm_min, [&](int64_t b, int64_t e) { cpu::ssd_state_update<T>(p.ssm, b, e); });
    return ffi::Error::Success();
  });
}

}  // namespace

MJ_DEFINE_CPU_HANDLER(mamba2_step, Mamba2StepImpl, mamba2_step_binding<ffi::ThreadPool>());
