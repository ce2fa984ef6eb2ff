// XLA FFI CUDA handler of mamba1_step: the checks of args.h, three launches per vmap slice.
// Command-buffer compatible: kernel launches on the given stream only (the workspace is a result).
#include "common/cuda_handler.h"
#include "mamba1_step/args.h"
#include "mamba1_step/mamba1_step.cuh"

namespace ffi = xla::ffi;
using namespace mamba_jax;
using namespace mamba_jax::ffi_util;

namespace {

ffi::Error Mamba1StepImpl(cudaStream_t stream, ffi::AnyBuffer xz, ffi::AnyBuffer conv_state, ffi::AnyBuffer conv_weight,
                          ffi::AnyBuffer conv_bias, ffi::AnyBuffer x_proj, ffi::AnyBuffer dt_proj,
                          ffi::AnyBuffer dt_bias, ffi::AnyBuffer A, ffi::AnyBuffer D, ffi::AnyBuffer ssm_state,
                          ffi::AnyBuffer state_indices, Out y, Out new_conv_state, Out new_ssm_state, Out workspace) {
  Mamba1StepArgs a{xz, conv_state, conv_weight, conv_bias, x_proj, dt_proj, dt_bias, A, D, ssm_state,
                   state_indices, y, new_conv_state, new_ssm_state, workspace};
  return launch_slices(a, "mamba1_step", [&](const Mamba1StepParams& p, auto tag) {
    return cuda::launch_mamba1_step<typename decltype(tag)::type>(p, stream);
  });
}

}  // namespace

MJ_DEFINE_CUDA_HANDLER(mamba1_step, Mamba1StepImpl, mamba1_step_binding<ffi::PlatformStream<cudaStream_t>>(),
                       {ffi::Traits::kCmdBufferCompatible});
