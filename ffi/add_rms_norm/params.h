// Parameters of one add_rms_norm call (one vmap slice).
// Framework-free (no XLA): the handlers fill it from FFI buffers (args.h), the kernels read it.
// Sizes are int64 and counted in elements; rows are contiguous. T is the activation dtype (y's).
#pragma once

#include <cstdint>

#include "common/type_tag.h"

namespace mamba_jax {

// The residual add of one block fused with the RMSNorm of the next (decode):
//   h_new = round_h(h + y)                       (float32 add, stored in h's dtype)
//   x     = h_new * rsqrt(mean(h_new^2) + eps) * scale    (float32, stored in x's dtype)
// the mean taken over the F features of each row, of h_new as stored.
//   h, h_new : [rows, F]  float32 or T (h_f32)
//   y        : [rows, F]  T
//   scale    : [F]        float32 or T (scale_f32)
//   x        : [rows, F]  float32 or T (out_f32)
struct AddRmsNormParams {
  int64_t rows, features;
  const void* h;
  const void* y;
  const void* scale;
  void* h_new;
  void* x;
  float eps;
  bool h_f32, scale_f32, out_f32;
};

// fn(TypeTag<H>{}, TypeTag<S>{}, TypeTag<O>{}): the storage types of h (and h_new), scale and x, each
// float or T as p's flags say.
template <typename T, typename Fn>
auto with_add_rms_norm_types(const AddRmsNormParams& p, Fn&& fn) {
  auto out = [&](auto h, auto s) {
    return p.out_f32 ? fn(h, s, TypeTag<float>{}) : fn(h, s, TypeTag<T>{});
  };
  auto scale = [&](auto h) { return p.scale_f32 ? out(h, TypeTag<float>{}) : out(h, TypeTag<T>{}); };
  return p.h_f32 ? scale(TypeTag<float>{}) : scale(TypeTag<T>{});
}

}  // namespace mamba_jax
