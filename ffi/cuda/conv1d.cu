// XLA FFI CUDA handlers for mamba_jax_causal_conv1d and mamba_jax_causal_conv1d_update.
// Same operands, attributes and checks as ffi/cpu/conv1d.cc: absent optional operands (bias,
// initial_state) arrive as empty arrays; leading (vmap) dimensions are looped over.
// Command-buffer compatible: only kernel launches on the given stream, no sync, no allocation.
#include "mamba_jax/conv1d.cuh"
#include "../common/ffi_util.h"

namespace ffi = xla::ffi;
using namespace mamba_jax;
using namespace mamba_jax::ffi_util;

namespace {

ffi::Error launch_error(cudaError_t e, const char* op) {
  return ffi::Error::Internal(std::string(op) + ": CUDA launch failed: " + cudaGetErrorString(e));
}

ffi::Error check_width(int64_t width) {
  if (width < kMinConvWidth || width > kMaxConvWidth)
    return ffi::Error::InvalidArgument("conv width must be in [2, 8], got " + std::to_string(width));
  return ffi::Error::Success();
}

ffi::Error Conv1dImpl(cudaStream_t stream, ffi::AnyBuffer x, ffi::AnyBuffer weight, ffi::AnyBuffer bias,
                      ffi::AnyBuffer init, ffi::Result<ffi::AnyBuffer> y,
                      ffi::Result<ffi::AnyBuffer> final_state, bool silu) {
  Lead lead;
  MJ_RETURN_IF_ERROR(get_lead(x, "x", 3, &lead));
  auto xd = x.dimensions();
  const size_t r = lead.dims.size();
  const int64_t batch = xd[r], seqlen = xd[r + 1], dim = xd[r + 2];
  auto wd = weight.dimensions();
  if (wd.size() != r + 2) return ffi::Error::InvalidArgument("weight must be [dim, width], got " + dims_str(wd));
  const int64_t width = wd[r + 1];
  MJ_RETURN_IF_ERROR(check_width(width));
  MJ_RETURN_IF_ERROR(expect_shape(weight, "weight", lead, {dim, width}));
  MJ_RETURN_IF_ERROR(expect_shape(bias, "bias", lead, {dim}, true));
  MJ_RETURN_IF_ERROR(expect_shape(init, "initial_state", lead, {batch, dim, width - 1}, true));
  MJ_RETURN_IF_ERROR(expect_shape(*y, "y", lead, {batch, seqlen, dim}));
  MJ_RETURN_IF_ERROR(expect_shape(*final_state, "final_state", lead, {batch, dim, width - 1}));
  const auto et = x.element_type();
  MJ_RETURN_IF_ERROR(expect_activation_dtype(x, "x"));
  MJ_RETURN_IF_ERROR(expect_dtype(init, "initial_state", et, true, "x"));
  MJ_RETURN_IF_ERROR(expect_dtype(*y, "y", et, false, "x"));
  MJ_RETURN_IF_ERROR(expect_dtype(*final_state, "final_state", et, false, "x"));
  MJ_RETURN_IF_ERROR(expect_dtype(weight, "weight", ffi::DataType::F32));
  MJ_RETURN_IF_ERROR(expect_dtype(bias, "bias", ffi::DataType::F32, true));
  if (batch == 0 || dim == 0) return ffi::Error::Success();

  for (int64_t i = 0; i < lead.count; ++i) {
    Conv1dParams p{};
    p.batch = batch; p.seqlen = seqlen; p.dim = dim; p.width = width;
    p.x = slice_ptr<const void>(x, lead, i);
    p.weight = slice_ptr<const float>(weight, lead, i);
    p.bias = slice_ptr<const float>(bias, lead, i);
    p.initial_state = slice_ptr<const void>(init, lead, i);
    p.y = slice_ptr<void>(y, lead, i);
    p.final_state = slice_ptr<void>(final_state, lead, i);
    p.silu = silu;
    cudaError_t e;
    switch (et) {
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
  Lead lead;
  MJ_RETURN_IF_ERROR(get_lead(x, "x", 2, &lead));
  auto xd = x.dimensions();
  const size_t r = lead.dims.size();
  const int64_t batch = xd[r], dim = xd[r + 1];
  auto wd = weight.dimensions();
  if (wd.size() != r + 2) return ffi::Error::InvalidArgument("weight must be [dim, width], got " + dims_str(wd));
  const int64_t width = wd[r + 1];
  MJ_RETURN_IF_ERROR(check_width(width));
  MJ_RETURN_IF_ERROR(expect_shape(weight, "weight", lead, {dim, width}));
  MJ_RETURN_IF_ERROR(expect_shape(conv_state, "conv_state", lead, {batch, dim, width - 1}));
  MJ_RETURN_IF_ERROR(expect_shape(bias, "bias", lead, {dim}, true));
  MJ_RETURN_IF_ERROR(expect_shape(*y, "y", lead, {batch, dim}));
  MJ_RETURN_IF_ERROR(expect_shape(*new_state, "new_conv_state", lead, {batch, dim, width - 1}));
  const auto et = x.element_type();
  MJ_RETURN_IF_ERROR(expect_activation_dtype(x, "x"));
  MJ_RETURN_IF_ERROR(expect_dtype(conv_state, "conv_state", et, false, "x"));
  MJ_RETURN_IF_ERROR(expect_dtype(*y, "y", et, false, "x"));
  MJ_RETURN_IF_ERROR(expect_dtype(*new_state, "new_conv_state", et, false, "x"));
  MJ_RETURN_IF_ERROR(expect_dtype(weight, "weight", ffi::DataType::F32));
  MJ_RETURN_IF_ERROR(expect_dtype(bias, "bias", ffi::DataType::F32, true));
  if (batch == 0 || dim == 0) return ffi::Error::Success();

  for (int64_t i = 0; i < lead.count; ++i) {
    Conv1dUpdateParams p{};
    p.batch = batch; p.dim = dim; p.width = width;
    p.x = slice_ptr<const void>(x, lead, i);
    p.conv_state = slice_ptr<const void>(conv_state, lead, i);
    p.new_conv_state = slice_ptr<void>(new_state, lead, i);
    p.weight = slice_ptr<const float>(weight, lead, i);
    p.bias = slice_ptr<const float>(bias, lead, i);
    p.y = slice_ptr<void>(y, lead, i);
    p.silu = silu;
    cudaError_t e;
    switch (et) {
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
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::AnyBuffer>()  // x
                                  .Arg<ffi::AnyBuffer>()  // weight
                                  .Arg<ffi::AnyBuffer>()  // bias
                                  .Arg<ffi::AnyBuffer>()  // initial_state
                                  .Ret<ffi::AnyBuffer>()  // y
                                  .Ret<ffi::AnyBuffer>()  // final_state
                                  .Attr<bool>("silu"),
                              {ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(MambaJaxCausalConv1dUpdateCuda, Conv1dUpdateImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::AnyBuffer>()  // x
                                  .Arg<ffi::AnyBuffer>()  // conv_state
                                  .Arg<ffi::AnyBuffer>()  // weight
                                  .Arg<ffi::AnyBuffer>()  // bias
                                  .Ret<ffi::AnyBuffer>()  // y
                                  .Ret<ffi::AnyBuffer>()  // new_conv_state
                                  .Attr<bool>("silu"),
                              {ffi::Traits::kCmdBufferCompatible});
