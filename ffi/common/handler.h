// What every XLA FFI handler shares: the binding of its buffers, taken from ffi/targets.h; the
// definition of its exported symbol; and the loop over the leading (vmap) dimensions that
// ffi_call(vmap_method="broadcast_all") prepends to every operand.
#pragma once

#include <cstddef>
#include <utility>

#include "common/ffi_util.h"
#include "common/type_tag.h"
#include "targets.h"

namespace mamba_jax {
namespace ffi_util {

using Out = ffi::Result<ffi::AnyBuffer>;

// Appends NA buffer arguments, then NR >= 1 buffer results, to the binding b. (A Binding can only be
// moved into the next one, never copied or returned by name, so the last step returns a temporary.)
template <size_t NA, size_t NR, typename B>
auto append_buffers(B&& b) {
  static_assert(NR >= 1, "every target has at least one result");
  if constexpr (NA > 0) return append_buffers<NA - 1, NR>(std::move(b).template Arg<ffi::AnyBuffer>());
  else if constexpr (NR > 1) return append_buffers<0, NR - 1>(std::move(b).template Ret<ffi::AnyBuffer>());
  else return std::move(b).template Ret<ffi::AnyBuffer>();
}

// Ffi::Bind() with the platform context `Ctx` (ThreadPool, PlatformStream), then one AnyBuffer
// argument per operand and one result per result of `Target` (target::<op> of targets.h). The op's
// attributes follow (its args.h), and the handler takes exactly these parameters in this order.
template <typename Target, typename Ctx>
auto bind_buffers() {
  return append_buffers<Target::num_operands, Target::num_results>(ffi::Ffi::Bind().Ctx<Ctx>());
}

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

}  // namespace ffi_util
}  // namespace mamba_jax

// Defines the exported handler of `OP` for one platform (the symbol common/module.cc hands to Python);
// fails to compile unless ffi/targets.h lists that platform for OP. The arguments after IMPL are
// XLA_FFI_DEFINE_HANDLER_SYMBOL's: the binding, then optionally the traits.
#define MJ_DEFINE_CPU_HANDLER(OP, IMPL, ...)                                                          \
  static_assert(::mamba_jax::target::OP::on_cpu, "ffi/targets.h lists no CPU handler for " #OP);    \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(MJ_CPU_HANDLER(OP), IMPL, __VA_ARGS__)

#define MJ_DEFINE_CUDA_HANDLER(OP, IMPL, ...)                                                         \
  static_assert(::mamba_jax::target::OP::on_cuda, "ffi/targets.h lists no CUDA handler for " #OP);  \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(MJ_CUDA_HANDLER(OP), IMPL, __VA_ARGS__)
