// XLA FFI CUDA handlers for mamba_jax_causal_conv1d and mamba_jax_causal_conv1d_update.
// Same operands, attributes and checks as ffi/cpu/conv1d.cc: absent optional operands (bias,
// initial_state) arrive as empty arrays; leading (vmap) dimensions are looped over.
// Command-buffer compatible: only kernel launches on the given stream, no sync, no allocation.
#include "mamba_jax/conv1d.cuh"
#include "handler_util.h"

namespace ffi = xla::ffi;
using namespace mamba_jax;
using namespace mamba_jax::ffi_util;

namespace {

ffi::Error Conv1dImpl(cudaStream_t stream, ffi::AnyBuffer x, ffi::AnyBuffer weight, ffi::AnyBuffer bias,
                      ffi::AnyBuffer init, ffi::Result<ffi::AnyBuffer> y,
                      ffi::Result<ffi::AnyBuffer> final_state, bool silu) {
  Conv1dArgs a{x, weight, bias, init, y, final_state, silu};
  return launch_slices(a, "causal_conv1d", [&](const Conv1dParams& p, auto tag) {
    return cuda::launch_causal_conv1d<typename decltype(tag)::type>(p, stream);
  });
}

ffi::Error Conv1dUpdateImpl(cudaStream_t stream, ffi::AnyBuffer x, ffi::AnyBuffer conv_state,
                            ffi::AnyBuffer weight, ffi::AnyBuffer bias, ffi::Result<ffi::AnyBuffer> y,
                            ffi::Result<ffi::AnyBuffer> new_state, bool silu) {
  Conv1dUpdateArgs a{x, conv_state, weight, bias, y, new_state, silu};
  return launch_slices(a, "causal_conv1d_update", [&](const Conv1dUpdateParams& p, auto tag) {
    return cuda::launch_causal_conv1d_update<typename decltype(tag)::type>(p, stream);
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MambaJaxCausalConv1dCuda, Conv1dImpl,
                              causal_conv1d_binding<ffi::PlatformStream<cudaStream_t>>(),
                              {ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(MambaJaxCausalConv1dUpdateCuda, Conv1dUpdateImpl,
                              causal_conv1d_update_binding<ffi::PlatformStream<cudaStream_t>>(),
                              {ffi::Traits::kCmdBufferCompatible});
