// The nanobind modules mamba_jax._ffi_cpu and mamba_jax._ffi_cuda, generated from ffi/targets.h.
// This file is compiled once for each (MAMBA_JAX_MODULE_CUDA defined for the CUDA one); each module's
// targets() -> {op: (capsule of the handler, operand names, result names)} holds the ops that
// targets.h lists for its platform. Python registers each as "mamba_jax_" + op.
#include <nanobind/nanobind.h>

#include <cstddef>

#include "targets.h"
#include "xla/ffi/api/c_api.h"

namespace nb = nanobind;

#if defined(MAMBA_JAX_MODULE_CUDA)
#define MJ_ON_PLATFORM(CPU, CUDA) CUDA
#define MJ_HANDLER(OP) MJ_CUDA_HANDLER(OP)
#define MJ_MODULE_NAME _ffi_cuda
#else
#define MJ_ON_PLATFORM(CPU, CUDA) CPU
#define MJ_HANDLER(OP) MJ_CPU_HANDLER(OP)
#define MJ_MODULE_NAME _ffi_cpu
#endif

// MJ_IF(flag, code...): the code when flag expands to 1, nothing when it expands to 0.
#define MJ_IF(FLAG, ...) MJ_IF_(FLAG, __VA_ARGS__)
#define MJ_IF_(FLAG, ...) MJ_IF_##FLAG(__VA_ARGS__)
#define MJ_IF_1(...) __VA_ARGS__
#define MJ_IF_0(...)

#define MJ_DECLARE_HANDLER(OP, CPU, CUDA, OPERANDS, RESULTS) \
  MJ_IF(MJ_ON_PLATFORM(CPU, CUDA), extern "C" XLA_FFI_Error* MJ_HANDLER(OP)(XLA_FFI_CallFrame*);)
MAMBA_JAX_TARGETS(MJ_DECLARE_HANDLER)

namespace {

nb::tuple names(const char* const* names, size_t count) {
  nb::list l;
  for (size_t i = 0; i < count; ++i) l.append(nb::str(names[i]));
  return nb::tuple(l);
}

template <typename Target>
void add(nb::dict& d, XLA_FFI_Error* (*handler)(XLA_FFI_CallFrame*)) {
  d[Target::name] = nb::make_tuple(nb::capsule(reinterpret_cast<void*>(handler)),
                                   names(Target::operands, Target::num_operands),
                                   names(Target::results, Target::num_results));
}

}  // namespace

#define MJ_ADD_TARGET(OP, CPU, CUDA, OPERANDS, RESULTS) \
  MJ_IF(MJ_ON_PLATFORM(CPU, CUDA), add<mamba_jax::target::OP>(d, MJ_HANDLER(OP));)

// NB_MODULE pastes its name argument, so it is expanded one level up.
#define MJ_NB_MODULE(NAME, M) NB_MODULE(NAME, M)

MJ_NB_MODULE(MJ_MODULE_NAME, m) {
  m.def("targets", []() {
    nb::dict d;
    MAMBA_JAX_TARGETS(MJ_ADD_TARGET)
    return d;
  });
}
