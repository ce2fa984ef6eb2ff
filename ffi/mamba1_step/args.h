// mamba1_step: operand checks and Params (errors name the operand, its shape or dtype, and what was
// expected), and its binding (the buffers of ffi/targets.h; no attributes).
#pragma once

#include <string>

#include "common/handler.h"
#include "common/state_pool.h"
#include "mamba1_step/params.h"

namespace mamba_jax {
namespace ffi_util {

// x_proj's block of rows is staged in shared memory: at most this many bytes of it.
constexpr int64_t kStepMaxStagedBytes = 160 * 1024;

struct Mamba1StepArgs {
  ffi::AnyBuffer xz, conv_state, conv_weight, conv_bias, x_proj, dt_proj, dt_bias, A, D, ssm_state,
      state_indices;
  Out y, new_conv_state, new_ssm_state, workspace;
  Lead lead{};
  int64_t batch = 0, dim = 0, dstate = 0, dt_rank = 0, width = 0, n_slots = 0;
  ffi::DataType dtype = ffi::DataType::F32;

  bool empty() const { return batch == 0 || dim == 0; }

  ffi::Error check() {
    MJ_RETURN_IF_ERROR(get_lead(xz, "xz", 2, &lead));
    const size_t r = lead.dims.size();
    auto xd = xz.dimensions();
    batch = xd[r];
    if (xd[r + 1] % 2)
      return ffi::Error::InvalidArgument("xz has shape " + dims_str(xd) + ": its last axis must be 2 * d_inner");
    dim = xd[r + 1] / 2;
    if (batch > 65535)
      return ffi::Error::InvalidArgument("xz: batch " + std::to_string(batch) + " is over the kernel's 65535");
    auto ad = A.dimensions();
    if (ad.size() != r + 2) return ffi::Error::InvalidArgument("A must be [d_inner, dstate], got " + dims_str(ad));
    dstate = ad[r + 1];
    MJ_RETURN_IF_ERROR(check_dstate(dstate, A, "A"));
    MJ_RETURN_IF_ERROR(expect_shape(A, "A", lead, {dim, dstate}));
    auto dd = dt_proj.dimensions();
    if (dd.size() != r + 2) return ffi::Error::InvalidArgument("dt_proj must be [dt_rank, d_inner], got " + dims_str(dd));
    dt_rank = dd[r];
    MJ_RETURN_IF_ERROR(expect_shape(dt_proj, "dt_proj", lead, {dt_rank, dim}));
    const int64_t J = dt_rank + 2 * dstate;
    MJ_RETURN_IF_ERROR(expect_shape(x_proj, "x_proj", lead, {dim, J}));
    MJ_RETURN_IF_ERROR(get_conv_width(conv_weight, lead, dim, &width));
    auto cd = conv_state.dimensions();
    n_slots = cd.size() == r + 3 ? cd[r] : batch;
    MJ_RETURN_IF_ERROR(expect_shape(conv_state, "conv_state", lead, {n_slots, dim, width - 1}));
    MJ_RETURN_IF_ERROR(expect_shape(ssm_state, "ssm_state", lead, {n_slots, dim, dstate}));
    MJ_RETURN_IF_ERROR(expect_shape(conv_bias, "conv_bias", lead, {dim}, true));
    MJ_RETURN_IF_ERROR(expect_shape(dt_bias, "dt_bias", lead, {dim}));
    MJ_RETURN_IF_ERROR(expect_shape(D, "D", lead, {dim}, true));
    MJ_RETURN_IF_ERROR(expect_shape(*y, "y", lead, {batch, dim}));
    MJ_RETURN_IF_ERROR(expect_shape(*new_conv_state, "new_conv_state", lead, {n_slots, dim, width - 1}));
    MJ_RETURN_IF_ERROR(expect_shape(*new_ssm_state, "new_ssm_state", lead, {n_slots, dim, dstate}));
    MJ_RETURN_IF_ERROR(expect_shape(*workspace, "workspace", lead,
                                    {Mamba1StepParams::workspace_floats(batch, dim, dstate, dt_rank)}));
    MJ_RETURN_IF_ERROR(check_state_pool(state_indices, conv_state, new_conv_state, lead, batch, n_slots, "conv_state"));
    MJ_RETURN_IF_ERROR(check_state_pool(state_indices, ssm_state, new_ssm_state, lead, batch, n_slots, "ssm_state"));
    dtype = xz.element_type();
    MJ_RETURN_IF_ERROR(expect_activation_dtype(xz, "xz"));
    for (auto [buf, name] : {std::pair{&conv_state, "conv_state"}, {&x_proj, "x_proj"}, {&dt_proj, "dt_proj"}})
      MJ_RETURN_IF_ERROR(expect_dtype(*buf, name, dtype, false, "xz"));
    MJ_RETURN_IF_ERROR(expect_dtype(*y, "y", dtype, false, "xz"));
    MJ_RETURN_IF_ERROR(expect_dtype(*new_conv_state, "new_conv_state", dtype, false, "xz"));
    for (auto [buf, name, optional] : {std::tuple{&conv_weight, "conv_weight", false}, {&conv_bias, "conv_bias", true},
                                      {&dt_bias, "dt_bias", false}, {&A, "A", false}, {&D, "D", true},
                                      {&ssm_state, "ssm_state", false}})
      MJ_RETURN_IF_ERROR(expect_dtype(*buf, name, ffi::DataType::F32, optional));
    MJ_RETURN_IF_ERROR(expect_dtype(*new_ssm_state, "new_ssm_state", ffi::DataType::F32));
    MJ_RETURN_IF_ERROR(expect_dtype(*workspace, "workspace", ffi::DataType::F32));
    const int64_t staged = kStepChannels * J * static_cast<int64_t>(ffi::ByteWidth(dtype));
    if (staged > kStepMaxStagedBytes)
      return ffi::Error::InvalidArgument("x_proj has " + std::to_string(J) + " columns: " + std::to_string(staged) +
                                         " bytes per block of rows, over the kernel's " +
                                         std::to_string(kStepMaxStagedBytes));
    return ffi::Error::Success();
  }

  Mamba1StepParams params(int64_t i) {
    Mamba1StepParams p{};
    p.batch = batch; p.dim = dim; p.dstate = dstate; p.dt_rank = dt_rank; p.width = width; p.n_slots = n_slots;
    p.cols = dt_rank + 2 * dstate;
    p.blocks = (dim + kStepChannels - 1) / kStepChannels;
    p.state_indices = slice_ptr<const int32_t>(state_indices, lead, i);
    p.xz = slice_ptr<const void>(xz, lead, i);
    p.conv_state = slice_ptr<const void>(conv_state, lead, i);
    p.new_conv_state = slice_ptr<void>(new_conv_state, lead, i);
    p.conv_weight = slice_ptr<const float>(conv_weight, lead, i);
    p.conv_bias = slice_ptr<const float>(conv_bias, lead, i);
    p.x_proj = slice_ptr<const void>(x_proj, lead, i);
    p.dt_proj = slice_ptr<const void>(dt_proj, lead, i);
    p.dt_bias = slice_ptr<const float>(dt_bias, lead, i);
    p.A = slice_ptr<const float>(A, lead, i);
    p.D = slice_ptr<const float>(D, lead, i);
    p.ssm_state = slice_ptr<const float>(ssm_state, lead, i);
    p.new_ssm_state = slice_ptr<float>(new_ssm_state, lead, i);
    p.y = slice_ptr<void>(y, lead, i);
    p.workspace = slice_ptr<float>(workspace, lead, i);
    return p;
  }
};

template <typename Ctx>
auto mamba1_step_binding() {
  return bind_buffers<target::mamba1_step, Ctx>();
}

}  // namespace ffi_util
}  // namespace mamba_jax
