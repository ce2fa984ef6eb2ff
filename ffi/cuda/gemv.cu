// XLA FFI CUDA handler for mamba_jax_linear: y [M, N] = x [M, K] @ w [K, N] (decode projections).
// CUDA only (elsewhere mamba_jax.ops.linear is XLA's dot). Command-buffer compatible: kernel launches
// on the given stream only, no sync, no allocation.
#include "mamba_jax/gemv.cuh"
#include "../common/ffi_util.h"

namespace ffi = xla::ffi;
using namespace mamba_jax;
using namespace mamba_jax::ffi_util;

namespace {

ffi::Error LinearImpl(cudaStream_t stream, ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> y) {
  MJ_RETURN_IF_ERROR(expect_activation_dtype(x, "x"));
  MJ_RETURN_IF_ERROR(expect_dtype(w, "w", x.element_type(), false, "x"));
  MJ_RETURN_IF_ERROR(expect_dtype(*y, "y", x.element_type(), false, "x"));
  auto xd = x.dimensions();
  auto wd = w.dimensions();
  if (xd.size() != 2) return ffi::Error::InvalidArgument("x must have shape [M, K], got " + dims_str(xd));
  if (wd.size() != 2 || wd[0] != xd[1])
    return ffi::Error::InvalidArgument("w has shape " + dims_str(wd) + ", expected [" + std::to_string(xd[1]) +
                                       ", N] (K from x " + dims_str(xd) + ")");
  const int64_t M = xd[0], K = xd[1], N = wd[1];
  const int64_t vec = 16 / static_cast<int64_t>(ffi::ByteWidth(x.element_type()));
  if (N % vec != 0)
    return ffi::Error::InvalidArgument("w has shape " + dims_str(wd) + ": N must be a multiple of " +
                                       std::to_string(vec) + " for dtype " + dtype_name(x.element_type()));
  MJ_RETURN_IF_ERROR(expect_shape(*y, "y", Lead{}, {M, N}));
  if (!mamba_jax::cuda::aligned16_host(w.untyped_data()))
    return ffi::Error::InvalidArgument("w must be 16-byte aligned");
  LinearParams p{M, K, N, x.untyped_data(), w.untyped_data(), y->untyped_data()};
  cudaError_t e;
  switch (x.element_type()) {
    case ffi::DataType::F32: e = mamba_jax::cuda::launch_gemv<float>(p, stream); break;
    case ffi::DataType::BF16: e = mamba_jax::cuda::launch_gemv<__nv_bfloat16>(p, stream); break;
    default: e = mamba_jax::cuda::launch_gemv<__half>(p, stream); break;
  }
  if (e != cudaSuccess)
    return ffi::Error::Internal(std::string("linear: CUDA launch failed: ") + cudaGetErrorString(e));
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MambaJaxLinearCuda, LinearImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>(),
                              {ffi::Traits::kCmdBufferCompatible});
