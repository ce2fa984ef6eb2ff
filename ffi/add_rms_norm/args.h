// add_rms_norm: operand checks and Params, shared by its CPU and CUDA handlers (so both platforms
// accept and reject the same calls), and its binding (the buffers of ffi/targets.h, then eps).
// y decides the activation dtype T; h (and h_new), scale and x are each float32 or T.
#pragma once

#include <string>

#include "add_rms_norm/params.h"
#include "common/handler.h"

namespace mamba_jax {
namespace ffi_util {

// Checks that `buf` is float32 or `act` (the dtype of y); sets *is_f32.
inline ffi::Error expect_f32_or_activation(const ffi::AnyBuffer& buf, const char* name, ffi::DataType act,
                                           bool* is_f32) {
  const ffi::DataType t = buf.element_type();
  *is_f32 = t == ffi::DataType::F32;
  if (*is_f32 || t == act) return ffi::Error::Success();
  return ffi::Error::InvalidArgument(std::string(name) + " has dtype " + dtype_name(t) + ", expected f32 or " +
                                     dtype_name(act) + " (the dtype of y)");
}

struct AddRmsNormArgs {
  ffi::AnyBuffer h, y, scale;
  Out h_new, x;
  float eps;
  Lead lead{};
  int64_t rows = 0, features = 0;
  bool h_f32 = true, scale_f32 = true, out_f32 = true;
  ffi::DataType dtype = ffi::DataType::F32;

  bool empty() const { return rows == 0 || features == 0; }

  ffi::Error check() {
    MJ_RETURN_IF_ERROR(get_lead(y, "y", 2, &lead));
    auto yd = y.dimensions();
    const size_t r = lead.dims.size();
    rows = yd[r]; features = yd[r + 1];
    MJ_RETURN_IF_ERROR(expect_shape(h, "h", lead, {rows, features}));
    MJ_RETURN_IF_ERROR(expect_shape(scale, "scale", lead, {features}));
    MJ_RETURN_IF_ERROR(expect_shape(*h_new, "h_new", lead, {rows, features}));
    MJ_RETURN_IF_ERROR(expect_shape(*x, "x", lead, {rows, features}));
    dtype = y.element_type();
    MJ_RETURN_IF_ERROR(expect_activation_dtype(y, "y"));
    MJ_RETURN_IF_ERROR(expect_f32_or_activation(h, "h", dtype, &h_f32));
    MJ_RETURN_IF_ERROR(expect_dtype(*h_new, "h_new", h.element_type(), false, "h"));
    MJ_RETURN_IF_ERROR(expect_f32_or_activation(scale, "scale", dtype, &scale_f32));
    MJ_RETURN_IF_ERROR(expect_f32_or_activation(*x, "x", dtype, &out_f32));
    return ffi::Error::Success();
  }

  AddRmsNormParams params(int64_t i) {
    AddRmsNormParams p{};
    p.rows = rows; p.features = features;
    p.h = slice_ptr<const void>(h, lead, i);
    p.y = slice_ptr<const void>(y, lead, i);
    p.scale = slice_ptr<const void>(scale, lead, i);
    p.h_new = slice_ptr<void>(h_new, lead, i);
    p.x = slice_ptr<void>(x, lead, i);
    p.eps = eps;
    p.h_f32 = h_f32; p.scale_f32 = scale_f32; p.out_f32 = out_f32;
    return p;
  }
};

template <typename Ctx>
auto add_rms_norm_binding() {
  return bind_buffers<target::add_rms_norm, Ctx>().template Attr<float>("eps");
}

}  // namespace ffi_util
}  // namespace mamba_jax
