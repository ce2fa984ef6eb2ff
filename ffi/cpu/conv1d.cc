// XLA FFI CPU handlers for mamba_jax_causal_conv1d and mamba_jax_causal_conv1d_update.
// Absent optional operands (bias, initial_state) arrive as empty arrays.
#include "mamba_jax/cpu_kernels.h"
#include "../common/ffi_util.h"
#include "parallel.h"

namespace ffi = xla::ffi;
using namespace mamba_jax;
using namespace mamba_jax::ffi_util;

namespace {

ffi::Error check_width(int64_t width) {
  if (width < kMinConvWidth || width > kMaxConvWidth)
    return ffi::Error::InvalidArgument("conv width must be in [2, 8], got " + std::to_string(width));
  return ffi::Error::Success();
}

ffi::Error Conv1dImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer weight, ffi::AnyBuffer bias,
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

  // Items are (batch, chunk of kConvRows rows); tasks of >= ~2^17 multiply-adds.
  const int64_t items = batch * cpu::num_row_chunks(seqlen);
  const int64_t item_work = std::max<int64_t>(1, std::min(cpu::kConvRows, seqlen) * dim * width);
  const int64_t min_items = std::max<int64_t>(1, ((1 << 17) + item_work - 1) / item_work);
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
    const std::vector<float> wt = cpu::conv1d_transposed_weight(p);
    auto run = [&](auto kernel) {
      cpu::parallel_for(pool, items, min_items, [&](int64_t b, int64_t e) { kernel(p, wt.data(), b, e); });
    };
    switch (et) {
      case ffi::DataType::F32: run(cpu::causal_conv1d<float>); break;
      case ffi::DataType::BF16: run(cpu::causal_conv1d<bf16_t>); break;
      default: run(cpu::causal_conv1d<f16_t>); break;
    }
  }
  return ffi::Error::Success();
}

ffi::Error Conv1dUpdateImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer conv_state,
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

  // Items are (batch, block of 16 channels); one costs ~0.1 us, so threads only pay from
  // batches of a few dozen at mamba sizes.
  const int64_t items = batch * cpu::num_channel_blocks(dim);
  const int64_t min_items = std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(1, cpu::kLanes * width));
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
    auto run = [&](auto kernel) {
      cpu::parallel_for(pool, items, min_items, [&](int64_t b, int64_t e) { kernel(p, b, e); });
    };
    switch (et) {
      case ffi::DataType::F32: run(cpu::causal_conv1d_update<float>); break;
      case ffi::DataType::BF16: run(cpu::causal_conv1d_update<bf16_t>); break;
      default: run(cpu::causal_conv1d_update<f16_t>); break;
    }
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MambaJaxCausalConv1dCpu, Conv1dImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()  // x
                                  .Arg<ffi::AnyBuffer>()  // weight
                                  .Arg<ffi::AnyBuffer>()  // bias
                                  .Arg<ffi::AnyBuffer>()  // initial_state
                                  .Ret<ffi::AnyBuffer>()  // y
                                  .Ret<ffi::AnyBuffer>()  // final_state
                                  .Attr<bool>("silu"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(MambaJaxCausalConv1dUpdateCpu, Conv1dUpdateImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()  // x
                                  .Arg<ffi::AnyBuffer>()  // conv_state
                                  .Arg<ffi::AnyBuffer>()  // weight
                                  .Arg<ffi::AnyBuffer>()  // bias
                                  .Ret<ffi::AnyBuffer>()  // y
                                  .Ret<ffi::AnyBuffer>()  // new_conv_state
                                  .Attr<bool>("silu"));
