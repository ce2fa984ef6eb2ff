// XLA FFI CUDA handler of add_rms_norm: the checks of args.h, one launch per vmap slice.
// Command-buffer compatible: only kernel launches on the given stream, no sync, no allocation.
#include "add_rms_norm/add_rms_norm.cuh"
#include "add_rms_norm/args.h"
#include "common/cuda_handler.h"

namespace ffi = xla::ffi;
using namespace mamba_jax;
using namespace mamba_jax::ffi_util;

namespace {

ffi::Error AddRmsNormImpl(cudaStream_t stream, ffi::AnyBuffer h, ffi::AnyBuffer y, ffi::AnyBuffer scale,
                          ffi::Result<ffi::AnyBuffer> h_new, ffi::Result<ffi::AnyBuffer> x, float eps) {
  AddRmsNormArgs a{h, y, scale, h_new, x, eps};
  return launch_slices(a, "add_rms_norm", [&](const AddRmsNormParams& p, auto tag) {
    return cuda::launch_add_rms_norm<typename decltype(tag)::type>(p, stream);
  });
}

}  // namespace

MJ_DEFINE_CUDA_HANDLER(add_rms_norm, AddRmsNormImpl, add_rms_norm_binding<ffi::PlatformStream<cudaStream_t>>(),
                       {ffi::Traits::kCmdBufferCompatible});
