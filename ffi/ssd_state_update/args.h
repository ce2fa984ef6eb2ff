// ssd_state_update: operand checks and Params, shared by its CPU and CUDA handlers (so both
// platforms accept and reject the same calls), and its binding (the buffers of ffi/targets.h, then
// the attributes). check() validates every shape and dtype (errors name the operand, its shape or
// dtype, and what was expected) and records the sizes; params(i) fills the Params of vmap slice i.
#pragma once

#include "common/handler.h"
#include "common/state_pool.h"
#include "ssd_scan/args.h"
#include "ssd_state_update/params.h"

namespace mamba_jax {
namespace ffi_util {

struct SsdStateUpdateArgs {
  ffi::AnyBuffer state, x, dt, A, B, C, D, z, dt_bias, state_indices;
  Out y, new_state;
  bool dt_softplus;
  float dt_min, dt_max;
  Lead lead{};
  int64_t batch = 0, nheads = 0, headdim = 0, dstate = 0, ngroups = 0, n_slots = 0;
  ffi::DataType dtype = ffi::DataType::F32;

  bool empty() const { return batch == 0 || nheads == 0 || headdim == 0; }

  ffi::Error check() {
    MJ_RETURN_IF_ERROR(get_lead(state, "state", 4, &lead));
    auto sd = state.dimensions();
    const size_t r = lead.dims.size();
    n_slots = sd[r]; nheads = sd[r + 1]; headdim = sd[r + 2];
    auto xd = x.dimensions();
    if (xd.size() != r + 3)
      return ffi::Error::InvalidArgument("x must be [batch, nheads, headdim], got " + dims_str(xd));
    batch = xd[r];
    MJ_RETURN_IF_ERROR(read_groups(B, r + 3, "[batch, ngroups, dstate]", nheads, &ngroups, &dstate));
    MJ_RETURN_IF_ERROR(expect_shape(state, "state", lead, {n_slots, nheads, headdim, dstate}));
    MJ_RETURN_IF_ERROR(expect_shape(x, "x", lead, {batch, nheads, headdim}));
    MJ_RETURN_IF_ERROR(expect_shape(dt, "dt", lead, {batch, nheads}));
    MJ_RETURN_IF_ERROR(expect_shape(A, "A", lead, {nheads}));
    MJ_RETURN_IF_ERROR(expect_shape(B, "B", lead, {batch, ngroups, dstate}));
    MJ_RETURN_IF_ERROR(expect_shape(C, "C", lead, {batch, ngroups, dstate}));
    MJ_RETURN_IF_ERROR(expect_shape(D, "D", lead, {nheads, headdim}, true));
    MJ_RETURN_IF_ERROR(expect_shape(z, "z", lead, {batch, nheads, headdim}, true));
    MJ_RETURN_IF_ERROR(expect_shape(dt_bias, "dt_bias", lead, {nheads}, true));
    MJ_RETURN_IF_ERROR(expect_shape(*y, "y", lead, {batch, nheads, headdim}));
    MJ_RETURN_IF_ERROR(expect_shape(*new_state, "new_state", lead, {n_slots, nheads, headdim, dstate}));
    MJ_RETURN_IF_ERROR(check_state_pool(state_indices, state, new_state, lead, batch, n_slots, "state"));
    dtype = x.element_type();
    MJ_RETURN_IF_ERROR(check_ssd_dtypes(x, dt, A, B, C, D, z, dt_bias, *y));
    MJ_RETURN_IF_ERROR(expect_dtype(state, "state", ffi::DataType::F32));
    MJ_RETURN_IF_ERROR(expect_dtype(*new_state, "new_state", ffi::DataType::F32));
    return ffi::Error::Success();
  }

  SsdStateUpdateParams params(int64_t i) {
    SsdStateUpdateParams p{};
    p.batch = batch; p.nheads = nheads; p.headdim = headdim; p.dstate = dstate; p.ngroups = ngroups;
    p.n_slots = n_slots;
    p.x_stride = nheads * headdim; p.bc_stride = ngroups * dstate;
    p.state_indices = slice_ptr<const int32_t>(state_indices, lead, i);
    p.state = slice_ptr<const float>(state, lead, i);
    p.new_state = slice_ptr<float>(new_state, lead, i);
    p.x = slice_ptr<const void>(x, lead, i);
    p.dt = slice_ptr<const void>(dt, lead, i);
    p.A = slice_ptr<const float>(A, lead, i);
    p.Bm = slice_ptr<const void>(B, lead, i);
    p.Cm = slice_ptr<const void>(C, lead, i);
    p.Dskip = slice_ptr<const float>(D, lead, i);
    p.z = slice_ptr<const void>(z, lead, i);
    p.dt_bias = slice_ptr<const float>(dt_bias, lead, i);
    p.y = slice_ptr<void>(y, lead, i);
    p.dt_min = dt_min; p.dt_max = dt_max; p.dt_softplus = dt_softplus;
    return p;
  }
};

template <typename Ctx>
auto ssd_state_update_binding() {
  return bind_buffers<target::ssd_state_update, Ctx>()
      .template Attr<bool>("dt_softplus")
      .template Attr<float>("dt_min")
      .template Attr<float>("dt_max");
}

}  // namespace ffi_util
}  // namespace mamba_jax
