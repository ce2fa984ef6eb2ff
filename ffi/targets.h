// The one list of mamba_jax's XLA FFI targets: each op, the platforms that have a handler for it, its
// operand names in call order and its result names. Both nanobind modules are generated from it
// (common/module.cc: targets() -> {op: (capsule, operand names, result names)}); Python registers
// each op as "mamba_jax_" + op and passes operands by these names; every handler's buffer binding
// takes its Arg/Ret counts from here (common/handler.h), so none of them can drift from this list.
//
// Adding an op `foo` (see ffi/selective_scan/ for a complete one):
//   1. ffi/foo/params.h (FooParams), foo.h (CPU kernel) and/or foo.cuh (CUDA kernel): no XLA there.
//   2. ffi/foo/args.h: FooArgs (check() and params(i)) and foo_binding<Ctx>(), which is
//      bind_buffers<target::foo, Ctx>() plus the op's attributes.
//   3. ffi/foo/cpu.cc: MJ_DEFINE_CPU_HANDLER(foo, ...); ffi/foo/cuda.cu: MJ_DEFINE_CUDA_HANDLER(foo, ...).
//      CMake picks up ffi/*/cpu.cc and ffi/*/*.cu by themselves.
//   4. One entry below: X(foo, CPU, CUDA, ("operand", ...), ("result", ...)), CPU and CUDA 1 or 0.
//   5. Python: mamba_jax/ops/foo/ffi.py calls mamba_jax.ops._ffi.call("foo", ...) with these names.
// Optional operands are still listed: Python passes an empty (0,) array when one is absent.
#pragma once

#include <cstddef>

// X(op, CPU, CUDA, (operand names...), (result names...))
#define MAMBA_JAX_TARGETS(X)                                                                         \
  X(selective_scan, 1, 1, ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"),     \
    ("y", "last_state"))                                                                              \
  X(selective_state_update, 1, 1, ("state", "x", "dt", "A", "B", "C", "D", "z", "dt_bias",             \
                                  "state_indices"),                                                   \
    ("y", "new_state"))                                                                               \
  X(causal_conv1d, 1, 1, ("x", "weight", "bias", "initial_state", "seq_idx"), ("y", "final_state"))   \
  X(causal_conv1d_update, 1, 1, ("x", "conv_state", "weight", "bias", "state_indices"),                \
    ("y", "new_conv_state"))                                                                          \
  X(linear, 0, 1, ("x", "w"), ("y"))                                                                  \
  X(ssd_scan, 1, 1, ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_state", "seq_idx"),      \
    ("y", "final_state", "workspace"))                                                                \
  X(ssd_state_update, 1, 1, ("state", "x", "dt", "A", "B", "C", "D", "z", "dt_bias", "state_indices"),  \
    ("y", "new_state"))                                                                               \
  X(mamba1_step, 1, 1, ("xz", "conv_state", "conv_weight", "conv_bias", "x_proj", "dt_proj", "dt_bias",   \
                        "A", "D", "ssm_state", "state_indices"),                                      \
    ("y", "new_conv_state", "new_ssm_state", "workspace"))                                        \
  X(mamba2_step, 1, 1, ("xBC", "dt", "conv_state", "ssm_state", "conv_weight", "conv_bias", "A", "D",        \
                        "dt_bias", "z", "state_indices"),                                             \
    ("y", "new_conv_state", "new_ssm_state", "workspace"))                                            \
  X(add_rms_norm, 1, 1, ("h", "y", "scale"), ("h_new", "x"))

// The exported handler symbol of an op on each platform (defined in ffi/<op>/cpu.cc and cuda.cu).
#define MJ_CPU_HANDLER(OP) mamba_jax_##OP##_cpu
#define MJ_CUDA_HANDLER(OP) mamba_jax_##OP##_cuda

#define MJ_UNPAREN(...) __VA_ARGS__

namespace mamba_jax {
namespace target {

// target::<op>: the entry of <op> as constants (name, operands, results, on_cpu, on_cuda).
#define MJ_TARGET_STRUCT(OP, CPU, CUDA, OPERANDS, RESULTS)                          \
  struct OP {                                                                       \
    static constexpr const char* name = #OP;                                        \
    static constexpr const char* operands[] = {MJ_UNPAREN OPERANDS};                \
    static constexpr const char* results[] = {MJ_UNPAREN RESULTS};                  \
    static constexpr size_t num_operands = sizeof(operands) / sizeof(operands[0]); \
    static constexpr size_t num_results = sizeof(results) / sizeof(results[0]);    \
    static constexpr bool on_cpu = CPU, on_cuda = CUDA;                             \
  };
MAMBA_JAX_TARGETS(MJ_TARGET_STRUCT)
#undef MJ_TARGET_STRUCT

}  // namespace target
}  // namespace mamba_jax
