// XLA FFI CUDA handler of mamba2_step: the checks of args.h, two launches per vmap slice.
// Command-buffer compatible: kernel launches on the given stream only (the workspace is a result).
#include "common/cuda_handler.h"
#include "mamba2_step/args.h"
#include "mamba2_step/mamba2_step.cuh"

namespace ffi = xla::ffi;
using namespace mamba_jax;
using namespace mamba_jax::ffi_util;

namespace {

ffi::Error Mamba2StepImpl(cudaStream_t stream, ffi::AnyBuffer xBC, ffi::AnyBuffer dt, ffi::AnyBuffer conv_state,
                          ffi::AnyBuffer ssm_state, ffi::AnyBuffer conv_weight, ffi::AnyBuffer conv_bias,
                          ffi::AnyBuffer A, ffi::AnyBuffer D, ffi::AnyBuffer dt_bias, ffi::AnyBuffer z,
                          ffi::AnyBuffer state_indices, Out y, Out new_conv_state, Out new_ssm_state, Out workspace,
                          float dt_min, float dt_max) {
  Mamba2StepArgs a{xBC, dt, conv_state, ssm_state, conv_weight, conv_bias, A, D, dt_bias, z, state_indices,
                   y, new_conv_state, new_ssm_state, workspace, dt_min, dt_max};
  return launch_slices(a, "mamba2_step", [&](const Mamba2StepParams& p, auto tag) {
    return cuda::launch_mamba2_step<typename decltype(tag)::type>(p, stream);
  });
}

}  // namespace

MJ_DEFINE_CUDA_HANDLER(mamba2_step, Mamba2StepImpl, mamba2_step_binding<ffi::PlatformStream<cudaStream_t>>(),
                       {ffi::Traits::kCmdBufferCompatible});
