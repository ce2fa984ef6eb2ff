// XLA FFI CUDA handler of linear: y [M, N] = x [M, K] @ w [K, N] (decode projections).
// CUDA only (elsewhere mamba_jax.ops.linear is XLA's dot). Command-buffer compatible: kernel launches
// on the given stream only, no sync, no allocation.
#include "linear/args.h"
#include "linear/linear.cuh"

namespace ffi = xla::ffi;
using namespace mamba_jax;
using namespace mamba_jax::ffi_util;

namespace {

ffi::Error LinearImpl(cudaStream_t stream, ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> y) {
  LinearArgs a{x, w, y};
  MJ_RETURN_IF_ERROR(a.check());
  if (!mamba_jax::cuda::aligned16_host(w.untyped_data()))
    return ffi::Error::InvalidArgument("w must be 16-byte aligned");
  const LinearParams p = a.params();
  cudaError_t e;
  switch (x.element_type()) {
    case ffi::DataType::F32: e = mamba_jax::cuda::launch_linear<float>(p, stream); break;
    case ffi::DataType::BF16: e = mamba_jax::cuda::launch_linear<__nv_bfloat16>(p, stream); break;
    default: e = mamba_jax::cuda::launch_linear<__half>(p, stream); break;
  }
  if (e != cudaSuccess)
    return ffi::Error::Internal(std::string("linear: CUDA launch failed: ") + cudaGetErrorString(e));
  return ffi::Error::Success();
}

}  // namespace

MJ_DEFINE_CUDA_HANDLER(linear, LinearImpl, linear_binding<ffi::PlatformStream<cudaStream_t>>(),
                       {ffi::Traits::kCmdBufferCompatible});
