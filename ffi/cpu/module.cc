// nanobind module mamba_jax._ffi_cpu: registrations() -> {target name: capsule of the CPU handler}.
#include <nanobind/nanobind.h>

#include "xla/ffi/api/c_api.h"

namespace nb = nanobind;

extern "C" {
XLA_FFI_Error* MambaJaxSelectiveScanCpu(XLA_FFI_CallFrame*);
XLA_FFI_Error* MambaJaxSelectiveStateUpdateCpu(XLA_FFI_CallFrame*);
XLA_FFI_Error* MambaJaxCausalConv1dCpu(XLA_FFI_CallFrame*);
XLA_FFI_Error* MambaJaxCausalConv1dUpdateCpu(XLA_FFI_CallFrame*);
}

template <typename Fn>
static nb::capsule capsule(Fn* fn) {
  return nb::capsule(reinterpret_cast<void*>(fn));
}

NB_MODULE(_ffi_cpu, m) {
  m.def("registrations", []() {
    nb::dict d;
    d["mamba_jax_selective_scan"] = capsule(MambaJaxSelectiveScanCpu);
    d["mamba_jax_selective_state_update"] = capsule(MambaJaxSelectiveStateUpdateCpu);
    d["mamba_jax_causal_conv1d"] = capsule(MambaJaxCausalConv1dCpu);
    d["mamba_jax_causal_conv1d_update"] = capsule(MambaJaxCausalConv1dUpdateCpu);
    return d;
  });
}
