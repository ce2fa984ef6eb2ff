// causal_conv1d: operand checks and Params, shared by its CPU and CUDA handlers (so both platforms
// accept and reject the same calls), and its binding (the buffers of ffi/targets.h, then the
// attributes). check() validates every shape and dtype (errors name the operand, its shape or dtype,
// and what was expected) and records the sizes; params(i) fills the Params of vmap slice i.
#pragma once

#include "causal_conv1d/params.h"
#include "common/handler.h"

namespace mamba_jax {
namespace ffi_util {

struct CausalConv1dArgs {
  ffi::AnyBuffer x, weight, bias, init, seq_idx;
  Out y, final_state;
  bool silu;
  Lead lead{};
  int64_t batch = 0, seqlen = 0, dim = 0, width = 0;
  ffi::DataType dtype = ffi::DataType::F32;

  bool empty() const { return batch == 0 || dim == 0; }

  ffi::Error check() {
    MJ_RETURN_IF_ERROR(get_lead(x, "x", 3, &lead));
    auto xd = x.dimensions();
    const size_t r = lead.dims.size();
    batch = xd[r]; seqlen = xd[r + 1]; dim = xd[r + 2];
    MJ_RETURN_IF_ERROR(get_conv_width(weight, lead, dim, &width));
    MJ_RETURN_IF_ERROR(expect_shape(bias, "bias", lead, {dim}, true));
    MJ_RETURN_IF_ERROR(expect_shape(init, "initial_state", lead, {batch, dim, width - 1}, true));
    MJ_RETURN_IF_ERROR(expect_shape(seq_idx, "seq_idx", lead, {batch, seqlen}, true));
    MJ_RETURN_IF_ERROR(expect_dtype(seq_idx, "seq_idx", ffi::DataType::S32, true));
    MJ_RETURN_IF_ERROR(expect_shape(*y, "y", lead, {batch, seqlen, dim}));
    MJ_RETURN_IF_ERROR(expect_shape(*final_state, "final_state", lead, {batch, dim, width - 1}));
    dtype = x.element_type();
    MJ_RETURN_IF_ERROR(expect_activation_dtype(x, "x"));
    MJ_RETURN_IF_ERROR(expect_dtype(init, "initial_state", dtype, true, "x"));
    MJ_RETURN_IF_ERROR(expect_dtype(*y, "y", dtype, false, "x"));
    MJ_RETURN_IF_ERROR(expect_dtype(*final_state, "final_state", dtype, false, "x"));
    MJ_RETURN_IF_ERROR(expect_dtype(weight, "weight", ffi::DataType::F32));
    MJ_RETURN_IF_ERROR(expect_dtype(bias, "bias", ffi::DataType::F32, true));
    return ffi::Error::Success();
  }

  CausalConv1dParams params(int64_t i) {
    CausalConv1dParams p{};
    p.batch = batch; p.seqlen = seqlen; p.dim = dim; p.width = width;
    p.x = slice_ptr<const void>(x, lead, i);
    p.weight = slice_ptr<const float>(weight, lead, i);
    p.bias = slice_ptr<const float>(bias, lead, i);
    p.initial_state = slice_ptr<const void>(init, lead, i);
    p.y = slice_ptr<void>(y, lead, i);
    p.final_state = slice_ptr<void>(final_state, lead, i);
    p.seq_idx = slice_ptr<const int32_t>(seq_idx, lead, i);
    p.silu = silu;
    return p;
  }
};

template <typename Ctx>
auto causal_conv1d_binding() {
  return bind_buffers<target::causal_conv1d, Ctx>().template Attr<bool>("silu");
}

}  // namespace ffi_util
}  // namespace mamba_jax
