// mamba2_step: operand checks and Params (errors name the operand, its shape or dtype, and what was
// expected), and its binding (the buffers of ffi/targets.h, then dt_min and dt_max).
#pragma once

#include <string>
#include <tuple>

#include "common/handler.h"
#include "common/state_pool.h"
#include "mamba2_step/params.h"

namespace mamba_jax {
namespace ffi_util {

struct Mamba2StepArgs {
  ffi::AnyBuffer xBC, dt, conv_state, ssm_state, conv_weight, conv_bias, A, D, dt_bias, z, state_indices;
  Out y, new_conv_state, new_ssm_state, workspace;
  float dt_min, dt_max;
  Lead lead{};
  int64_t batch = 0, channels = 0, nheads = 0, headdim = 0, dstate = 0, ngroups = 0, width = 0, n_slots = 0;
  ffi::DataType dtype = ffi::DataType::F32;

  bool empty() const { return batch == 0; }  // the conv stage runs even with no heads (C = 2 G N)

  ffi::Error check() {
    MJ_RETURN_IF_ERROR(get_lead(xBC, "xBC", 2, &lead));
    const size_t r = lead.dims.size();
    auto xd = xBC.dimensions();
    batch = xd[r]; channels = xd[r + 1];
    auto sd = ssm_state.dimensions();
    if (sd.size() != r + 4)
      return ffi::Error::InvalidArgument("ssm_state must be [batch, nheads, headdim, dstate], got " + dims_str(sd));
    n_slots = sd[r]; nheads = sd[r + 1]; headdim = sd[r + 2]; dstate = sd[r + 3];
    MJ_RETURN_IF_ERROR(check_dstate(dstate, ssm_state, "ssm_state"));
    // xBC's channels: x (nheads * headdim), then B and C (ngroups * dstate each).
    const int64_t bc = channels - nheads * headdim;
    ngroups = bc > 0 && bc % (2 * dstate) == 0 ? bc / (2 * dstate) : 0;
    if (ngroups < 1 || nheads % ngroups)
      return ffi::Error::InvalidArgument("xBC has shape " + dims_str(xd) + ": its last axis must be nheads * headdim + "
                                         "2 * ngroups * dstate = " + std::to_string(nheads * headdim) +
                                         " + 2 * ngroups * " + std::to_string(dstate) +
                                         " with ngroups >= 1 dividing nheads = " + std::to_string(nheads));
    if (batch * nheads >= (int64_t{1} << 31))
      return ffi::Error::InvalidArgument("xBC: batch * nheads = " + std::to_string(batch * nheads) +
                                         " is over the kernel's 2^31 - 1");
    MJ_RETURN_IF_ERROR(get_conv_width(conv_weight, lead, channels, &width));
    MJ_RETURN_IF_ERROR(expect_shape(dt, "dt", lead, {batch, nheads}));
    MJ_RETURN_IF_ERROR(expect_shape(conv_state, "conv_state", lead, {n_slots, channels, width - 1}));
    MJ_RETURN_IF_ERROR(expect_shape(conv_bias, "conv_bias", lead, {channels}, true));
    MJ_RETURN_IF_ERROR(expect_shape(A, "A", lead, {nheads}));
    MJ_RETURN_IF_ERROR(expect_shape(D, "D", lead, {nheads, headdim}, true));
    MJ_RETURN_IF_ERROR(expect_shape(dt_bias, "dt_bias", lead, {nheads}, true));
    MJ_RETURN_IF_ERROR(expect_shape(z, "z", lead, {batch, nheads, headdim}, true));
    MJ_RETURN_IF_ERROR(expect_shape(*y, "y", lead, {batch, nheads, headdim}));
    MJ_RETURN_IF_ERROR(expect_shape(*new_conv_state, "new_conv_state", lead, {n_slots, channels, width - 1}));
    MJ_RETURN_IF_ERROR(expect_shape(*new_ssm_state, "new_ssm_state", lead, {n_slots, nheads, headdim, dstate}));
    MJ_RETURN_IF_ERROR(expect_shape(*workspace, "workspace", lead, {batch, channels}));
    MJ_RETURN_IF_ERROR(check_state_pool(state_indices, conv_state, new_conv_state, lead, batch, n_slots, "conv_state"));
    MJ_RETURN_IF_ERROR(check_state_pool(state_indices, ssm_state, new_ssm_state, lead, batch, n_slots, "ssm_state"));
    dtype = xBC.element_type();
    MJ_RETURN_IF_ERROR(expect_activation_dtype(xBC, "xBC"));
    for (auto [buf, name, optional] : {std::tuple{&dt, "dt", false}, {&conv_state, "conv_state", false},
                                      {&z, "z", true}})
      MJ_RETURN_IF_ERROR(expect_dtype(*buf, name, dtype, optional, "xBC"));
    for (auto [out, name] : {std::pair{&y, "y"}, {&new_conv_state, "new_conv_state"}, {&workspace, "workspace"}})
      MJ_RETURN_IF_ERROR(expect_dtype(**out, name, dtype, false, "xBC"));
    for (auto [buf, name, optional] : {std::tuple{&conv_weight, "conv_weight", false}, {&conv_bias, "conv_bias", true},
                                      {&A, "A", false}, {&D, "D", true}, {&dt_bias, "dt_bias", true},
                                      {&ssm_state, "ssm_state", false}})
      MJ_RETURN_IF_ERROR(expect_dtype(*buf, name, ffi::DataType::F32, optional));
    return expect_dtype(*new_ssm_state, "new_ssm_state", ffi::DataType::F32);
  }

  Mamba2StepParams params(int64_t i) {
    Mamba2StepParams p{};
    const int32_t* slots = slice_ptr<const int32_t>(state_indices, lead, i);
    void* ws = slice_ptr<void>(workspace, lead, i);
    CausalConv1dUpdateParams& c = p.conv;
    c.batch = batch; c.dim = channels; c.width = width; c.n_slots = n_slots;
    c.state_indices = slots;
    c.x = slice_ptr<const void>(xBC, lead, i);
    c.conv_state = slice_ptr<const void>(conv_state, lead, i);
    c.new_conv_state = slice_ptr<void>(new_conv_state, lead, i);
    c.weight = slice_ptr<const float>(conv_weight, lead, i);
    c.bias = slice_ptr<const float>(conv_bias, lead, i);
    c.y = ws;
    c.silu = true;
    SsdStateUpdateParams& s = p.ssm;
    s.batch = batch; s.nheads = nheads; s.headdim = headdim; s.dstate = dstate; s.ngroups = ngroups;
    s.n_slots = n_slots;
    s.x_stride = channels; s.bc_stride = channels;
    s.state_indices = slots;
    s.state = slice_ptr<const float>(ssm_state, lead, i);
    s.new_state = slice_ptr<float>(new_ssm_state, lead, i);
    const size_t width_bytes = ffi::ByteWidth(dtype);
    s.x = ws;
    s.Bm = static_cast<const char*>(ws) + nheads * headdim * width_bytes;
    s.Cm = static_cast<const char*>(ws) + (nheads * headdim + ngroups * dstate) * width_bytes;
    s.dt = slice_ptr<const void>(dt, lead, i);
    s.A = slice_ptr<const float>(A, lead, i);
    s.Dskip = slice_ptr<const float>(D, lead, i);
    s.z = slice_ptr<const void>(z, lead, i);
    s.dt_bias = slice_ptr<const float>(dt_bias, lead, i);
    s.y = slice_ptr<void>(y, lead, i);
    s.dt_min = dt_min; s.dt_max = dt_max; s.dt_softplus = true;
    return p;
  }
};

template <typename Ctx>
auto mamba2_step_binding() {
  return bind_buffers<target::mamba2_step, Ctx>().template Attr<float>("dt_min").template Attr<float>("dt_max");
}

}  // namespace ffi_util
}  // namespace mamba_jax
