// TypeTag<T>: a value that carries a type, for the handlers' and kernels' type dispatch
// (decltype(tag)::type). Framework-free.
#pragma once

namespace mamba_jax {

template <typename T>
struct TypeTag {
  using type = T;
};

}  // namespace mamba_jax
