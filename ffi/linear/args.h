// linear: operand checks and Params, and its binding (the buffers of ffi/targets.h, no attributes).
// No vmap dimensions: x [M, K], w [K, N], y [M, N], one activation dtype.
#pragma once

#include <string>

#include "common/handler.h"
#include "linear/params.h"

namespace mamba_jax {
namespace ffi_util {

struct LinearArgs {
  ffi::AnyBuffer x, w;
  Out y;
  int64_t m = 0, k = 0, n = 0;

  ffi::Error check() {
    MJ_RETURN_IF_ERROR(expect_activation_dtype(x, "x"));
    MJ_RETURN_IF_ERROR(expect_dtype(w, "w", x.element_type(), false, "x"));
    MJ_RETURN_IF_ERROR(expect_dtype(*y, "y", x.element_type(), false, "x"));
    auto xd = x.dimensions();
    auto wd = w.dimensions();
    if (xd.size() != 2) return ffi::Error::InvalidArgument("x must have shape [M, K], got " + dims_str(xd));
    if (wd.size() != 2 || wd[0] != xd[1])
      return ffi::Error::InvalidArgument("w has shape " + dims_str(wd) + ", expected [" + std::to_string(xd[1]) +
                                         ", N] (K from x " + dims_str(xd) + ")");
    m = xd[0]; k = xd[1]; n = wd[1];
    // The kernel reads w as 16-byte vectors of columns.
    const int64_t vec = 16 / static_cast<int64_t>(ffi::ByteWidth(x.element_type()));
    if (n % vec != 0)
      return ffi::Error::InvalidArgument("w has shape " + dims_str(wd) + ": N must be a multiple of " +
                                         std::to_string(vec) + " for dtype " + dtype_name(x.element_type()));
    MJ_RETURN_IF_ERROR(expect_shape(*y, "y", Lead{}, {m, n}));
    return ffi::Error::Success();
  }

  LinearParams params() { return LinearParams{m, k, n, x.untyped_data(), w.untyped_data(), y->untyped_data()}; }
};

template <typename Ctx>
auto linear_binding() {
  return bind_buffers<target::linear, Ctx>();
}

}  // namespace ffi_util
}  // namespace mamba_jax
