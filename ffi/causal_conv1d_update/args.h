// causal_conv1d_update: operand checks and Params, shared by its CPU and CUDA handlers (so both platforms
// accept and reject the same calls), and its binding (the buffers of ffi/targets.h, then the
// attributes). check() validates every shape and dtype (errors name the operand, its shape or dtype,
// and what was expected) and records the sizes; params(i) fills the Params of vmap slice i.
#pragma once

#include "causal_conv1d_update/params.h"
#include "common/handler.h"
#include "common/state_pool.h"

namespace mamba_jax {
namespace ffi_util {

struct CausalConv1dUpdateArgs {
  ffi::AnyBuffer x, conv_state, weight, bias, state_indices;
  Out y, new_state;
  bool silu;
  Lead lead{};
  int64_t batch = 0, dim = 0, width = 0, n_slots = 0;
  ffi::DataType dtype = ffi::DataType::F32;

  bool empty() const { return batch == 0 || dim == 0; }

  ffi::Error check() {
    MJ_RETURN_IF_ERROR(get_lead(x, "x", 2, &lead));
    auto xd = x.dimensions();
    const size_t r = lead.dims.size();
    batch = xd[r]; dim = xd[r + 1];
    MJ_RETURN_IF_ERROR(get_conv_width(weight, lead, dim, &width));
    auto cd = conv_state.dimensions();
    n_slots = cd.size() == r + 3 ? cd[r] : batch;
    MJ_RETURN_IF_ERROR(expect_shape(conv_state, "conv_state", lead, {n_slots, dim, width - 1}));
    MJ_RETURN_IF_ERROR(expect_shape(bias, "bias", lead, {dim}, true));
    MJ_RETURN_IF_ERROR(expect_shape(*y, "y", lead, {batch, dim}));
    MJ_RETURN_IF_ERROR(expect_shape(*new_state, "new_conv_state", lead, {n_slots, dim, width - 1}));
    MJ_RETURN_IF_ERROR(check_state_pool(state_indices, conv_state, new_state, lead, batch, n_slots, "conv_state"));
    dtype = x.element_type();
    MJ_RETURN_IF_ERROR(expect_activation_dtype(x, "x"));
    MJ_RETURN_IF_ERROR(expect_dtype(conv_state, "conv_state", dtype, false, "x"));
    MJ_RETURN_IF_ERROR(expect_dtype(*y, "y", dtype, false, "x"));
    MJ_RETURN_IF_ERROR(expect_dtype(*new_state, "new_conv_state", dtype, false, "x"));
    MJ_RETURN_IF_ERROR(expect_dtype(weight, "weight", ffi::DataType::F32));
    MJ_RETURN_IF_ERROR(expect_dtype(bias, "bias", ffi::DataType::F32, true));
    return ffi::Error::Success();
  }

  CausalConv1dUpdateParams params(int64_t i) {
    CausalConv1dUpdateParams p{};
    p.batch = batch; p.dim = dim; p.width = width; p.n_slots = n_slots;
    p.state_indices = slice_ptr<const int32_t>(state_indices, lead, i);
    p.x = slice_ptr<const void>(x, lead, i);
    p.conv_state = slice_ptr<const void>(conv_state, lead, i);
    p.new_conv_state = slice_ptr<void>(new_state, lead, i);
    p.weight = slice_ptr<const float>(weight, lead, i);
    p.bias = slice_ptr<const float>(bias, lead, i);
    p.y = slice_ptr<void>(y, lead, i);
    p.silu = silu;
    return p;
  }
};

template <typename Ctx>
auto causal_conv1d_update_binding() {
  return bind_buffers<target::causal_conv1d_update, Ctx>().template Attr<bool>("silu");
}

}  // namespace ffi_util
}  // namespace mamba_jax
