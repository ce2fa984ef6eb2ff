// ssd_scan: operand checks and Params, shared by its CPU and CUDA handlers (so both platforms accept
// and reject the same calls), and its binding (the buffers of ffi/targets.h, then the attributes).
// check() validates every shape, dtype and attribute (errors name the operand, its shape or dtype,
// and what was expected) and records the sizes; params(i) fills the Params of vmap slice i.
#pragma once

#include <string>
#include <tuple>

#include "common/handler.h"
#include "ssd_scan/params.h"

namespace mamba_jax {
namespace ffi_util {

// Reads ngroups and dstate, the last two dims of B (`rank` dims in all: the leading ones, then
// `layout`), and checks them: dstate in [1, kMaxDstate], ngroups >= 1 dividing nheads.
inline ffi::Error read_groups(const ffi::AnyBuffer& B, size_t rank, const char* layout, int64_t nheads,
                              int64_t* ngroups, int64_t* dstate) {
  auto bd = B.dimensions();
  if (bd.size() != rank)
    return ffi::Error::InvalidArgument("B has shape " + dims_str(bd) + ", expected the leading dims then " + layout);
  *ngroups = bd[rank - 2];
  *dstate = bd[rank - 1];
  MJ_RETURN_IF_ERROR(check_dstate(*dstate, B, "B"));
  if (*ngroups >= 1 && nheads % *ngroups == 0) return ffi::Error::Success();
  return ffi::Error::InvalidArgument("ngroups = " + std::to_string(*ngroups) + " (B has shape " + dims_str(bd) +
                                     ") must be >= 1 and divide nheads = " + std::to_string(nheads));
}

// The dtypes both SSD ops take: x, dt, B, C, z (optional) and y in x's activation dtype (f32, bf16,
// f16); A, D and dt_bias (both optional) float32.
inline ffi::Error check_ssd_dtypes(const ffi::AnyBuffer& x, const ffi::AnyBuffer& dt, const ffi::AnyBuffer& A,
                                   const ffi::AnyBuffer& B, const ffi::AnyBuffer& C, const ffi::AnyBuffer& D,
                                   const ffi::AnyBuffer& z, const ffi::AnyBuffer& dt_bias, const ffi::AnyBuffer& y) {
  const ffi::DataType t = x.element_type();
  MJ_RETURN_IF_ERROR(expect_activation_dtype(x, "x"));
  for (auto [buf, name, optional] : {std::make_tuple(&dt, "dt", false), std::make_tuple(&B, "B", false),
                                     std::make_tuple(&C, "C", false), std::make_tuple(&z, "z", true),
                                     std::make_tuple(&y, "y", false)})
    MJ_RETURN_IF_ERROR(expect_dtype(*buf, name, t, optional, "x"));
  MJ_RETURN_IF_ERROR(expect_dtype(A, "A", ffi::DataType::F32));
  MJ_RETURN_IF_ERROR(expect_dtype(D, "D", ffi::DataType::F32, true));
  return expect_dtype(dt_bias, "dt_bias", ffi::DataType::F32, true);
}

struct SsdScanArgs {
  ffi::AnyBuffer x, dt, A, B, C, D, z, dt_bias, init, seq_idx;
  Out y, final_state;
  bool dt_softplus;
  float dt_min, dt_max;
  int64_t chunk_size;
  Lead lead{};
  int64_t batch = 0, seqlen = 0, nheads = 0, headdim = 0, dstate = 0, ngroups = 0, num_sequences = 0;
  bool has_seq_idx = false;
  ffi::DataType dtype = ffi::DataType::F32;

  // Nothing to compute or write (y and final_state are both empty).
  bool empty() const { return batch == 0 || nheads == 0 || headdim == 0; }

  ffi::Error check() {
    MJ_RETURN_IF_ERROR(get_lead(x, "x", 4, &lead));
    auto xd = x.dimensions();
    const size_t r = lead.dims.size();
    batch = xd[r]; seqlen = xd[r + 1]; nheads = xd[r + 2]; headdim = xd[r + 3];
    MJ_RETURN_IF_ERROR(read_groups(B, r + 4, "[batch, seqlen, ngroups, dstate]", nheads, &ngroups, &dstate));
    if (chunk_size < 1)
      return ffi::Error::InvalidArgument("chunk_size must be >= 1, got " + std::to_string(chunk_size));
    // An absent seq_idx is an empty (0,) array (with the leading dims under vmap); a given one is
    // [batch, seqlen] even when that is empty.
    has_seq_idx = !(seq_idx.element_count() == 0 && seq_idx.dimensions().size() == r + 1);
    MJ_RETURN_IF_ERROR(expect_shape(dt, "dt", lead, {batch, seqlen, nheads}));
    MJ_RETURN_IF_ERROR(expect_shape(A, "A", lead, {nheads}));
    MJ_RETURN_IF_ERROR(expect_shape(B, "B", lead, {batch, seqlen, ngroups, dstate}));
    MJ_RETURN_IF_ERROR(expect_shape(C, "C", lead, {batch, seqlen, ngroups, dstate}));
    MJ_RETURN_IF_ERROR(expect_shape(D, "D", lead, {nheads, headdim}, true));
    MJ_RETURN_IF_ERROR(expect_shape(z, "z", lead, {batch, seqlen, nheads, headdim}, true));
    MJ_RETURN_IF_ERROR(expect_shape(dt_bias, "dt_bias", lead, {nheads}, true));
    MJ_RETURN_IF_ERROR(expect_shape(init, "initial_state", lead, {batch, nheads, headdim, dstate}, true));
    MJ_RETURN_IF_ERROR(expect_shape(*y, "y", lead, {batch, seqlen, nheads, headdim}));
    if (has_seq_idx) {
      MJ_RETURN_IF_ERROR(expect_shape(seq_idx, "seq_idx", lead, {batch, seqlen}));
      auto fd = final_state->dimensions();
      if (fd.size() != r + 5)
        return ffi::Error::InvalidArgument("final_state has shape " + dims_str(fd) +
                                           ", expected [batch, num_sequences, nheads, headdim, dstate] "
                                           "(after any leading dims) since seq_idx is given");
      num_sequences = fd[r + 1];
      MJ_RETURN_IF_ERROR(
          expect_shape(*final_state, "final_state", lead, {batch, num_sequences, nheads, headdim, dstate}));
    } else {
      MJ_RETURN_IF_ERROR(expect_shape(*final_state, "final_state", lead, {batch, nheads, headdim, dstate}));
    }
    dtype = x.element_type();
    MJ_RETURN_IF_ERROR(check_ssd_dtypes(x, dt, A, B, C, D, z, dt_bias, *y));
    MJ_RETURN_IF_ERROR(expect_dtype(init, "initial_state", ffi::DataType::F32, true));
    if (has_seq_idx) MJ_RETURN_IF_ERROR(expect_dtype(seq_idx, "seq_idx", ffi::DataType::S32));
    MJ_RETURN_IF_ERROR(expect_dtype(*final_state, "final_state", ffi::DataType::F32));
    return ffi::Error::Success();
  }

  SsdScanParams params(int64_t i) {
    SsdScanParams p{};
    p.batch = batch; p.seqlen = seqlen; p.nheads = nheads; p.headdim = headdim; p.dstate = dstate;
    p.ngroups = ngroups; p.num_sequences = has_seq_idx ? num_sequences : 0; p.chunk_size = chunk_size;
    p.x_head_stride = headdim; p.x_seq_stride = nheads * headdim; p.x_batch_stride = seqlen * nheads * headdim;
    p.dt_seq_stride = nheads; p.dt_batch_stride = seqlen * nheads;
    p.bc_group_stride = dstate; p.bc_seq_stride = ngroups * dstate; p.bc_batch_stride = seqlen * ngroups * dstate;
    p.seq_idx_batch_stride = seqlen;
    p.state_head_stride = headdim * dstate; p.state_batch_stride = nheads * headdim * dstate;
    p.final_head_stride = headdim * dstate;
    p.final_seq_stride = has_seq_idx ? nheads * headdim * dstate : 0;
    p.final_batch_stride = (has_seq_idx ? num_sequences : 1) * nheads * headdim * dstate;
    p.x = slice_ptr<const void>(x, lead, i);
    p.dt = slice_ptr<const void>(dt, lead, i);
    p.A = slice_ptr<const float>(A, lead, i);
    p.Bm = slice_ptr<const void>(B, lead, i);
    p.Cm = slice_ptr<const void>(C, lead, i);
    p.Dskip = slice_ptr<const float>(D, lead, i);
    p.z = slice_ptr<const void>(z, lead, i);
    p.dt_bias = slice_ptr<const float>(dt_bias, lead, i);
    p.initial_state = slice_ptr<const float>(init, lead, i);
    p.seq_idx = has_seq_idx ? slice_ptr<const int32_t>(seq_idx, lead, i) : nullptr;
    p.y = slice_ptr<void>(y, lead, i);
    p.final_state = slice_ptr<float>(final_state, lead, i);
    p.dt_min = dt_min; p.dt_max = dt_max; p.dt_softplus = dt_softplus; p.has_seq_idx = has_seq_idx;
    return p;
  }
};

template <typename Ctx>
auto ssd_scan_binding() {
  return bind_buffers<target::ssd_scan, Ctx>()
      .template Attr<bool>("dt_softplus")
      .template Attr<float>("dt_min")
      .template Attr<float>("dt_max")
      .template Attr<int64_t>("chunk_size");
}

}  // namespace ffi_util
}  // namespace mamba_jax
