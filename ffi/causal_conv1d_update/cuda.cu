// XLA FFI CUDA handler of causal_conv1d_update: the checks of args.h, one launch per vmap slice.
// Command-buffer compatible: only kernel launches on the given stream, no sync, no allocation.
#include "causal_conv1d_update/args.h"
#include "causal_conv1d_update/causal_conv1d_update.cuh"
#include "common/cuda_handler.h"

namespace ffi = xla::ffi;
using namespace mamba_jax;
using namespace mamba_jax::ffi_util;

namespace {

ffi::Error CausalConv1dUpdateImpl(cudaStream_t stream, ffi::AnyBuffer x, ffi::AnyBuffer conv_state,
                                  ffi::AnyBuffer weight, ffi::AnyBuffer bias, ffi::AnyBuffer state_indices,
                                  ffi::Result<ffi::AnyBuffer> y,
                                  ffi::Result<ffi::AnyBuffer> new_state, bool silu) {
  CausalConv1dUpdateArgs a{x, conv_state, weight, bias, state_indices, y, new_state, silu};
  return launch_slices(a, "causal_conv1d_update", [&](const CausalConv1dUpdateParams& p, auto tag) {
    return cuda::launch_causal_conv1d_update<typename decltype(tag)::type>(p, stream);
  });
}

}  // namespace

MJ_DEFINE_CUDA_HANDLER(causal_conv1d_update, CausalConv1dUpdateImpl,
                       causal_conv1d_update_binding<ffi::PlatformStream<cudaStream_t>>(),
                       {ffi::Traits::kCmdBufferCompatible});
