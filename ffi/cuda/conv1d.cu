// XLA FFI CUDA handlers for mamba_jax_causal_conv1d and mamba_jax_causal_conv1d_update.
// Same operands, attributes and checks as ffi/cpu/conv1d.cc: absent optional operands (bias,
// initial_state) arrive as empty arrays; leading (vmap) dimensions are looped over.
// Command-buffer compatible: only kernel launches on the given stream, no sync, no allocation.
#include "mamba_jax/conv1d.cuh"
#include "../common/mamba1_args.h"

namespace ffi = xla::ffi;
using namespace mamba_jax;
using namespace mamba_jax::ffi_util;

namespace {

ffi::Error launch_error(cudaError_t e, const char* op) {
  return ffi::Error::Internal(std::string(op) + ": CUDA launch failed: " + cudaGetErrorString(e));
}

ffi::Error Conv1dImpl(cudaStream_t stream, ffi::AnyBuffer x, ffi::AnyBuffer weight, ffi::AnyBuffer bias,
                      ffi::AnyBuffer init, ffi::Result<ffi::AnyBuffer> y,
                      ffi::Result<ffi::AnyBuffer> final_state, bool silu) {
  Conv1dArgs a{x, weight, bias, init, y, final_state, silu};
  MJ_RETURN_IF_ERROR(a.check());
  if (a.empty()) return ffi::Error::Success();
  for (int64_t i = 0; i < a.lead.count; ++i) {
    const Conv1dParams p = a.params(i);
    cudaError_t e;
    switch (a.dtype) {
      case ffi::DataType::F32: e = cuda::launch_causal_conv1d<float>(p, stream); break;
      case ffi::DataType::BF16: e = cuda::launch_causal_conv1d<__nv_bfloat16>(p, stream); break;
      default: e = cuda::launch_causal_conv1d<__half>(p, stream); break;
    }
    if (e != cudaSuccess) return launch_error(e, "causal_conv1d");
  }
  return ffi::Error::Success();
}

ffi::Error Conv1dUpdateImpl(cudaStream_t stream, ffi::AnyBuffer x, ffi::AnyBuffer conv_state,
                            ffi::AnyBuffer weight, ffi::AnyBuffer bias, ffi::Result<ffi::AnyBuffer> y,
                            ffi::Result<ffi::AnyBuffer> new_state, bool silu) {
  Conv1dUpdateArgs a{x, conv_state, weight, bias, y, new_state, silu};
  MJ_RETURN_IF_ERROR(a.check());
  if (a.empty()) return ffi::Error::Success();
  for (int64_t i = 0; i < a.lead.count; ++i) {
    const Conv1dUpdateParams p = a.params(i);
    cudaError_t e;
    switch (a.dtype) {
      case ffi::DataType::F32: e = cuda::launch_causal_conv1d_update<float>(p, stream); break;
      case ffi::DataType::BF16: e = cuda::launch_causal_conv1d_update<__nv_bfloat16>(p, stream); break;
      default: e = cuda::launch_causal_conv1d_update<__half>(p, stream); break;
    }
    if (e != cudaSuccess) return launch_error(e, "causal_conv1d_update");
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MambaJaxCausalConv1dCuda, Conv1dImpl,
                              causal_conv1d_binding<ffi::PlatformStream<cudaStream_t>>(),
                              {ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(MambaJaxCausalConv1dUpdateCuda, Conv1dUpdateImpl,
                              causal_conv1d_update_binding<ffi::PlatformStream<cudaStream_t>>(),
                              {ffi::Traits::kCmdBufferCompatible});
