// selective_scan: operand checks and Params, shared by its CPU and CUDA handlers (so both platforms
// accept and reject the same calls), and its binding (the buffers of ffi/targets.h, then the
// attributes). check() validates every shape and dtype (errors name the operand, its shape or dtype,
// and what was expected) and records the sizes; params(i) fills the Params of vmap slice i.
#pragma once

#include "common/handler.h"
#include "selective_scan/params.h"

namespace mamba_jax {
namespace ffi_util {

struct SelectiveScanArgs {
  ffi::AnyBuffer u, delta, A, B, C, D, z, delta_bias, init;
  Out y, last_state;
  bool delta_softplus;
  Lead lead{};
  int64_t batch = 0, seqlen = 0, dim = 0, dstate = 0, ngroups = 0;
  ffi::DataType dtype = ffi::DataType::F32;

  bool empty() const { return batch == 0 || dim == 0; }

  ffi::Error check() {
    MJ_RETURN_IF_ERROR(get_lead(u, "u", 3, &lead));
    auto ud = u.dimensions();
    const size_t r = lead.dims.size();
    batch = ud[r]; seqlen = ud[r + 1]; dim = ud[r + 2];
    auto bd = B.dimensions();
    if (bd.size() != r + 4)
      return ffi::Error::InvalidArgument("B must be [batch, seqlen, ngroups, dstate], got " + dims_str(bd));
    ngroups = bd[r + 2]; dstate = bd[r + 3];
    MJ_RETURN_IF_ERROR(check_dstate(dstate, B, "B"));
    MJ_RETURN_IF_ERROR(check_ngroups(ngroups, dim, bd));
    MJ_RETURN_IF_ERROR(expect_shape(delta, "delta", lead, {batch, seqlen, dim}));
    MJ_RETURN_IF_ERROR(expect_shape(A, "A", lead, {dim, dstate}));
    MJ_RETURN_IF_ERROR(expect_shape(B, "B", lead, {batch, seqlen, ngroups, dstate}));
    MJ_RETURN_IF_ERROR(expect_shape(C, "C", lead, {batch, seqlen, ngroups, dstate}));
    MJ_RETURN_IF_ERROR(expect_shape(D, "D", lead, {dim}, true));
    MJ_RETURN_IF_ERROR(expect_shape(z, "z", lead, {batch, seqlen, dim}, true));
    MJ_RETURN_IF_ERROR(expect_shape(delta_bias, "delta_bias", lead, {dim}, true));
    MJ_RETURN_IF_ERROR(expect_shape(init, "initial_state", lead, {batch, dim, dstate}, true));
    MJ_RETURN_IF_ERROR(expect_shape(*y, "y", lead, {batch, seqlen, dim}));
    MJ_RETURN_IF_ERROR(expect_shape(*last_state, "last_state", lead, {batch, dim, dstate}));
    dtype = u.element_type();
    MJ_RETURN_IF_ERROR(expect_activation_dtype(u, "u"));
    MJ_RETURN_IF_ERROR(expect_dtype(delta, "delta", dtype, false, "u"));
    MJ_RETURN_IF_ERROR(expect_dtype(B, "B", dtype, false, "u"));
    MJ_RETURN_IF_ERROR(expect_dtype(C, "C", dtype, false, "u"));
    MJ_RETURN_IF_ERROR(expect_dtype(z, "z", dtype, true, "u"));
    MJ_RETURN_IF_ERROR(expect_dtype(*y, "y", dtype, false, "u"));
    MJ_RETURN_IF_ERROR(expect_dtype(A, "A", ffi::DataType::F32));
    MJ_RETURN_IF_ERROR(expect_dtype(D, "D", ffi::DataType::F32, true));
    MJ_RETURN_IF_ERROR(expect_dtype(delta_bias, "delta_bias", ffi::DataType::F32, true));
    MJ_RETURN_IF_ERROR(expect_dtype(init, "initial_state", ffi::DataType::F32, true));
    MJ_RETURN_IF_ERROR(expect_dtype(*last_state, "last_state", ffi::DataType::F32));
    return ffi::Error::Success();
  }

  SelectiveScanParams params(int64_t i) {
    SelectiveScanParams p{};
    p.batch = batch; p.seqlen = seqlen; p.dim = dim; p.dstate = dstate; p.ngroups = ngroups;
    p.u_batch_stride = seqlen * dim; p.u_seq_stride = dim;
    p.bc_batch_stride = seqlen * ngroups * dstate; p.bc_seq_stride = ngroups * dstate; p.bc_group_stride = dstate;
    p.u = slice_ptr<const void>(u, lead, i);
    p.delta = slice_ptr<const void>(delta, lead, i);
    p.A = slice_ptr<const float>(A, lead, i);
    p.Bm = slice_ptr<const void>(B, lead, i);
    p.Cm = slice_ptr<const void>(C, lead, i);
    p.Dskip = slice_ptr<const float>(D, lead, i);
    p.z = slice_ptr<const void>(z, lead, i);
    p.delta_bias = slice_ptr<const float>(delta_bias, lead, i);
    p.initial_state = slice_ptr<const float>(init, lead, i);
    p.y = slice_ptr<void>(y, lead, i);
    p.last_state = slice_ptr<float>(last_state, lead, i);
    p.delta_softplus = delta_softplus;
    return p;
  }
};

template <typename Ctx>
auto selective_scan_binding() {
  return bind_buffers<target::selective_scan, Ctx>().template Attr<bool>("delta_softplus");
}

}  // namespace ffi_util
}  // namespace mamba_jax
