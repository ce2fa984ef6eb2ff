// nanobind module mamba_jax._ffi_cuda: registrations() -> {target name: capsule of the CUDA handler}.
// The target names are the CPU module's, so one jax.ffi.ffi_call lowers to either platform.
#include <nanobind/nanobind.h>

#include "xla/ffi/api/c_api.h"

namespace nb = nanobind;

extern "C" {
XLA_FFI_Error* MambaJaxSelectiveScanCuda(XLA_FFI_CallFrame*);
XLA_FFI_Error* MambaJaxSelectiveStateUpdateCuda(XLA_FFI_CallFrame*);
XLA_FFI_Error* MambaJaxCausalConv1dCuda(XLA_FFI_CallFrame*);
XLA_FFI_Error* MambaJaxCausalConv1dUpdateCuda(XLA_FFI_CallFrame*);
XLA_FFI_Error* MambaJaxLinearCuda(XLA_FFI_CallFrame*);
}

template <typename Fn>
static nb::capsule capsule(Fn* fn) {
  return nb::capsule(reinterpret_cast<void*>(fn));
}

NB_MODULE(_ffi_cuda, m) {
  m.def("registrations", []() {
    nb::dict d;
    d["mamba_jax_selective_scan"] = capsule(MambaJaxSelectiveScanCuda);
    d["mamba_jax_selective_state_update"] = capsule(MambaJaxSelectiveStateUpdateCuda);
    d["mamba_jax_causal_conv1d"] = capsule(MambaJaxCausalConv1dCuda);
    d["mamba_jax_causal_conv1d_update"] = capsule(MambaJaxCausalConv1dUpdateCuda);
    d["mamba_jax_linear"] = capsule(MambaJaxLinearCuda);
    return d;
  });
}
