// Operand checks and Params construction for the Mamba-1 FFI handlers, shared by the CPU handlers
// (ffi/cpu) and the CUDA handlers (ffi/cuda), so both platforms accept and reject exactly the same calls.
//
// Each *Args struct holds one call's operands; check() validates every shape and dtype (errors name the
// operand, its shape or dtype, and what was expected) and records the sizes; params(i) fills the plain
// Params struct of params.h for slice i of the leading (vmap) dimensions.
#pragma once

#include <string>

#include "ffi_util.h"
#include "mamba_jax/params.h"

namespace mamba_jax {
namespace ffi_util {

inline ffi::Error check_dstate(int64_t dstate, const ffi::AnyBuffer& ref, const char* name) {
  if (dstate < 1 || dstate > kMaxDstate)
    return ffi::Error::InvalidArgument("dstate must be in [1, " + std::to_string(kMaxDstate) + "], got " +
                                       std::to_string(dstate) + " (" + name + " has shape " +
                                       dims_str(ref.dimensions()) + ")");
  return ffi::Error::Success();
}

inline ffi::Error check_conv_width(int64_t width, const ffi::AnyBuffer& weight) {
  if (width < kMinConvWidth || width > kMaxConvWidth)
    return ffi::Error::InvalidArgument("conv width must be in [" + std::to_string(kMinConvWidth) + ", " +
                                       std::to_string(kMaxConvWidth) + "], got " + std::to_string(width) +
                                       " (weight has shape " + dims_str(weight.dimensions()) + ")");
  return ffi::Error::Success();
}

using Out = ffi::Result<ffi::AnyBuffer>;

template <typename T>
struct TypeTag {
  using type = T;
};

// The loop every handler runs after check(): fn(a.params(i), TypeTag<T>{}) for each slice i of the
// leading (vmap) dimensions, T the platform's type for the call's activation dtype (F32, BF16, F16);
// stops at the first error fn returns.
template <typename F32, typename BF16, typename F16, typename Args, typename Fn>
ffi::Error for_each_slice(Args& a, Fn&& fn) {
  for (int64_t i = 0; i < a.lead.count; ++i) {
    const auto p = a.params(i);
    ffi::Error e = ffi::Error::Success();
    switch (a.dtype) {
      case ffi::DataType::F32: e = fn(p, TypeTag<F32>{}); break;
      case ffi::DataType::BF16: e = fn(p, TypeTag<BF16>{}); break;
      default: e = fn(p, TypeTag<F16>{}); break;
    }
    if (e.failure()) return e;
  }
  return ffi::Error::Success();
}

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

struct StateUpdateArgs {
  ffi::AnyBuffer state, x, dt, A, B, C, D, z, dt_bias;
  Out y, new_state;
  bool dt_softplus;
  Lead lead{};
  int64_t batch = 0, dim = 0, dstate = 0, ngroups = 0;
  ffi::DataType dtype = ffi::DataType::F32;

  bool empty() const { return batch == 0 || dim == 0; }

  ffi::Error check() {
    MJ_RETURN_IF_ERROR(get_lead(state, "state", 3, &lead));
    auto sd = state.dimensions();
    const size_t r = lead.dims.size();
    batch = sd[r]; dim = sd[r + 1]; dstate = sd[r + 2];
    auto bd = B.dimensions();
    if (bd.size() != r + 3)
      return ffi::Error::InvalidArgument("B must be [batch, ngroups, dstate], got " + dims_str(bd));
    ngroups = bd[r + 1];
    MJ_RETURN_IF_ERROR(check_dstate(dstate, state, "state"));
    MJ_RETURN_IF_ERROR(check_ngroups(ngroups, dim, bd));
    MJ_RETURN_IF_ERROR(expect_shape(x, "x", lead, {batch, dim}));
    MJ_RETURN_IF_ERROR(expect_shape(dt, "dt", lead, {batch, dim}));
    MJ_RETURN_IF_ERROR(expect_shape(A, "A", lead, {dim, dstate}));
    MJ_RETURN_IF_ERROR(expect_shape(B, "B", lead, {batch, ngroups, dstate}));
    MJ_RETURN_IF_ERROR(expect_shape(C, "C", lead, {batch, ngroups, dstate}));
    MJ_RETURN_IF_ERROR(expect_shape(D, "D", lead, {dim}, true));
    MJ_RETURN_IF_ERROR(expect_shape(z, "z", lead, {batch, dim}, true));
    MJ_RETURN_IF_ERROR(expect_shape(dt_bias, "dt_bias", lead, {dim}, true));
    MJ_RETURN_IF_ERROR(expect_shape(*y, "y", lead, {batch, dim}));
    MJ_RETURN_IF_ERROR(expect_shape(*new_state, "new_state", lead, {batch, dim, dstate}));
    dtype = x.element_type();
    MJ_RETURN_IF_ERROR(expect_activation_dtype(x, "x"));
    MJ_RETURN_IF_ERROR(expect_dtype(dt, "dt", dtype, false, "x"));
    MJ_RETURN_IF_ERROR(expect_dtype(B, "B", dtype, false, "x"));
    MJ_RETURN_IF_ERROR(expect_dtype(C, "C", dtype, false, "x"));
    MJ_RETURN_IF_ERROR(expect_dtype(z, "z", dtype, true, "x"));
    MJ_RETURN_IF_ERROR(expect_dtype(*y, "y", dtype, false, "x"));
    MJ_RETURN_IF_ERROR(expect_dtype(state, "state", ffi::DataType::F32));
    MJ_RETURN_IF_ERROR(expect_dtype(A, "A", ffi::DataType::F32));
    MJ_RETURN_IF_ERROR(expect_dtype(D, "D", ffi::DataType::F32, true));
    MJ_RETURN_IF_ERROR(expect_dtype(dt_bias, "dt_bias", ffi::DataType::F32, true));
    MJ_RETURN_IF_ERROR(expect_dtype(*new_state, "new_state", ffi::DataType::F32));
    return ffi::Error::Success();
  }

  StateUpdateParams params(int64_t i) {
    StateUpdateParams p{};
    p.batch = batch; p.dim = dim; p.dstate = dstate; p.ngroups = ngroups;
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
    p.dt_softplus = dt_softplus;
    return p;
  }
};

struct Conv1dArgs {
  ffi::AnyBuffer x, weight, bias, init;
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
    auto wd = weight.dimensions();
    if (wd.size() != r + 2)
      return ffi::Error::InvalidArgument("weight must be [dim, width], got " + dims_str(wd));
    width = wd[r + 1];
    MJ_RETURN_IF_ERROR(check_conv_width(width, weight));
    MJ_RETURN_IF_ERROR(expect_shape(weight, "weight", lead, {dim, width}));
    MJ_RETURN_IF_ERROR(expect_shape(bias, "bias", lead, {dim}, true));
    MJ_RETURN_IF_ERROR(expect_shape(init, "initial_state", lead, {batch, dim, width - 1}, true));
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

  Conv1dParams params(int64_t i) {
    Conv1dParams p{};
    p.batch = batch; p.seqlen = seqlen; p.dim = dim; p.width = width;
    p.x = slice_ptr<const void>(x, lead, i);
    p.weight = slice_ptr<const float>(weight, lead, i);
    p.bias = slice_ptr<const float>(bias, lead, i);
    p.initial_state = slice_ptr<const void>(init, lead, i);
    p.y = slice_ptr<void>(y, lead, i);
    p.final_state = slice_ptr<void>(final_state, lead, i);
    p.silu = silu;
    return p;
  }
};

struct Conv1dUpdateArgs {
  ffi::AnyBuffer x, conv_state, weight, bias;
  Out y, new_state;
  bool silu;
  Lead lead{};
  int64_t batch = 0, dim = 0, width = 0;
  ffi::DataType dtype = ffi::DataType::F32;

  bool empty() const { return batch == 0 || dim == 0; }

  ffi::Error check() {
    MJ_RETURN_IF_ERROR(get_lead(x, "x", 2, &lead));
    auto xd = x.dimensions();
    const size_t r = lead.dims.size();
    batch = xd[r]; dim = xd[r + 1];
    auto wd = weight.dimensions();
    if (wd.size() != r + 2)
      return ffi::Error::InvalidArgument("weight must be [dim, width], got " + dims_str(wd));
    width = wd[r + 1];
    MJ_RETURN_IF_ERROR(check_conv_width(width, weight));
    MJ_RETURN_IF_ERROR(expect_shape(weight, "weight", lead, {dim, width}));
    MJ_RETURN_IF_ERROR(expect_shape(conv_state, "conv_state", lead, {batch, dim, width - 1}));
    MJ_RETURN_IF_ERROR(expect_shape(bias, "bias", lead, {dim}, true));
    MJ_RETURN_IF_ERROR(expect_shape(*y, "y", lead, {batch, dim}));
    MJ_RETURN_IF_ERROR(expect_shape(*new_state, "new_conv_state", lead, {batch, dim, width - 1}));
    dtype = x.element_type();
    MJ_RETURN_IF_ERROR(expect_activation_dtype(x, "x"));
    MJ_RETURN_IF_ERROR(expect_dtype(conv_state, "conv_state", dtype, false, "x"));
    MJ_RETURN_IF_ERROR(expect_dtype(*y, "y", dtype, false, "x"));
    MJ_RETURN_IF_ERROR(expect_dtype(*new_state, "new_conv_state", dtype, false, "x"));
    MJ_RETURN_IF_ERROR(expect_dtype(weight, "weight", ffi::DataType::F32));
    MJ_RETURN_IF_ERROR(expect_dtype(bias, "bias", ffi::DataType::F32, true));
    return ffi::Error::Success();
  }

  Conv1dUpdateParams params(int64_t i) {
    Conv1dUpdateParams p{};
    p.batch = batch; p.dim = dim; p.width = width;
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

// The operand order of each target, defined once for every platform: it is the contract with the
// Python side (mamba_jax/ops/*.py). `Ctx` is the platform's context (ThreadPool, PlatformStream).
template <typename Ctx>
auto selective_scan_binding() {
  return ffi::Ffi::Bind()
      .Ctx<Ctx>()
      .template Arg<ffi::AnyBuffer>()  // u
      .template Arg<ffi::AnyBuffer>()  // delta
      .template Arg<ffi::AnyBuffer>()  // A
      .template Arg<ffi::AnyBuffer>()  // B
      .template Arg<ffi::AnyBuffer>()  // C
      .template Arg<ffi::AnyBuffer>()  // D
      .template Arg<ffi::AnyBuffer>()  // z
      .template Arg<ffi::AnyBuffer>()  // delta_bias
      .template Arg<ffi::AnyBuffer>()  // initial_state
      .template Ret<ffi::AnyBuffer>()  // y
      .template Ret<ffi::AnyBuffer>()  // last_state
      .template Attr<bool>("delta_softplus");
}

template <typename Ctx>
auto selective_state_update_binding() {
  return ffi::Ffi::Bind()
      .Ctx<Ctx>()
      .template Arg<ffi::AnyBuffer>()  // state
      .template Arg<ffi::AnyBuffer>()  // x
      .template Arg<ffi::AnyBuffer>()  // dt
      .template Arg<ffi::AnyBuffer>()  // A
      .template Arg<ffi::AnyBuffer>()  // B
      .template Arg<ffi::AnyBuffer>()  // C
      .template Arg<ffi::AnyBuffer>()  // D
      .template Arg<ffi::AnyBuffer>()  // z
      .template Arg<ffi::AnyBuffer>()  // dt_bias
      .template Ret<ffi::AnyBuffer>()  // y
      .template Ret<ffi::AnyBuffer>()  // new_state
      .template Attr<bool>("dt_softplus");
}

template <typename Ctx>
auto causal_conv1d_binding() {
  return ffi::Ffi::Bind()
      .Ctx<Ctx>()
      .template Arg<ffi::AnyBuffer>()  // x
      .template Arg<ffi::AnyBuffer>()  // weight
      .template Arg<ffi::AnyBuffer>()  // bias
      .template Arg<ffi::AnyBuffer>()  // initial_state
      .template Ret<ffi::AnyBuffer>()  // y
      .template Ret<ffi::AnyBuffer>()  // final_state
      .template Attr<bool>("silu");
}

template <typename Ctx>
auto causal_conv1d_update_binding() {
  return ffi::Ffi::Bind()
      .Ctx<Ctx>()
      .template Arg<ffi::AnyBuffer>()  // x
      .template Arg<ffi::AnyBuffer>()  // conv_state
      .template Arg<ffi::AnyBuffer>()  // weight
      .template Arg<ffi::AnyBuffer>()  // bias
      .template Ret<ffi::AnyBuffer>()  // y
      .template Ret<ffi::AnyBuffer>()  // new_conv_state
      .template Attr<bool>("silu");
}

}  // namespace ffi_util
}  // namespace mamba_jax
