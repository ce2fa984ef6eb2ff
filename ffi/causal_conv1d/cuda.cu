// XLA FFI CUDA handler of causal_conv1d: the checks of args.h, one launch per vmap slice.
// Command-buffer compatible: only kernel launches on the given stream, no sync, no allocation.
#include "causal_conv1d/args.h"
#include "causal_conv1d/causal_conv1d.cuh"
#include "common/cuda_handler.h"

namespace ffi = xla::ffi;
using namespace mamba_jax;
using namespace mamba_jax::ffi_util;

namespace {

ffi::Error CausalConv1dImpl(cudaStream_t stream, ffi::AnyBuffer x, ffi::AnyBuffer weight, ffi::AnyBuffer bias,
                            ffi::AnyBuffer init, ffi::AnyBuffer seq_idx, ffi::Result<ffi::AnyBuffer> y,
                            ffi::Result<ffi::AnyBuffer> final_state, bool silu) {
  CausalConv1dArgs a{x, weight, bias, init, seq_idx, y, final_state, silu};
  return launch_slices(a, "causal_conv1d", [&](const CausalConv1dParams& p, auto tag) {
    return cuda::launch_causal_conv1d<typename decltype(tag)::type>(p, stream);
  });
}

}  // namespace

MJ_DEFINE_CUDA_HANDLER(causal_conv1d, CausalConv1dImpl,
                       causal_conv1d_binding<ffi::PlatformStream<cudaStream_t>>(),
                       {ffi::Traits::kCmdBufferCompatible});
