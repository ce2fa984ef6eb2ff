// XLA FFI CUDA handlers for mamba_jax_selective_scan and mamba_jax_selective_state_update.
// Same operands, attributes and checks as ffi/cpu/selective_scan.cc: absent optional operands (D, z,
// delta_bias, initial_state) arrive as empty arrays; leading (vmap) dimensions are looped over.
// Command-buffer compatible: only kernel launches on the given stream, no sync, no allocation.
#include "mamba_jax/selective_scan.cuh"
#include "handler_util.h"

namespace ffi = xla::ffi;
using namespace mamba_jax;
using namespace mamba_jax::ffi_util;

namespace mamba_jax {
namespace cuda {
// Instantiated in selective_scan_{f32,bf16,f16}.cu.
extern template cudaError_t launch_selective_scan<float>(const SelectiveScanParams&, cudaStream_t);
extern template cudaError_t launch_selective_scan<__nv_bfloat16>(const SelectiveScanParams&, cudaStream_t);
extern template cudaError_t launch_selective_scan<__half>(const SelectiveScanParams&, cudaStream_t);
}  // namespace cuda
}  // namespace mamba_jax

namespace {

ffi::Error SelectiveScanImpl(cudaStream_t stream, ffi::AnyBuffer u, ffi::AnyBuffer delta, ffi::AnyBuffer A,
                             ffi::AnyBuffer Bm, ffi::AnyBuffer Cm, ffi::AnyBuffer Dskip, ffi::AnyBuffer z,
                             ffi::AnyBuffer delta_bias, ffi::AnyBuffer init, ffi::Result<ffi::AnyBuffer> y,
                             ffi::Result<ffi::AnyBuffer> last_state, bool delta_softplus) {
  SelectiveScanArgs a{u, delta, A, Bm, Cm, Dskip, z, delta_bias, init, y, last_state, delta_softplus};
  return launch_slices(a, "selective_scan", [&](const SelectiveScanParams& p, auto tag) {
    return cuda::launch_selective_scan<typename decltype(tag)::type>(p, stream);
  });
}

ffi::Error StateUpdateImpl(cudaStream_t stream, ffi::AnyBuffer state, ffi::AnyBuffer x, ffi::AnyBuffer dt,
                           ffi::AnyBuffer A, ffi::AnyBuffer Bm, ffi::AnyBuffer Cm, ffi::AnyBuffer Dskip,
                           ffi::AnyBuffer z, ffi::AnyBuffer dt_bias, ffi::Result<ffi::AnyBuffer> y,
                           ffi::Result<ffi::AnyBuffer> new_state, bool dt_softplus) {
  StateUpdateArgs a{state, x, dt, A, Bm, Cm, Dskip, z, dt_bias, y, new_state, dt_softplus};
  return launch_slices(a, "selective_state_update", [&](const StateUpdateParams& p, auto tag) {
    return cuda::launch_selective_state_update<typename decltype(tag)::type>(p, stream);
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MambaJaxSelectiveScanCuda, SelectiveScanImpl,
                              selective_scan_binding<ffi::PlatformStream<cudaStream_t>>(),
                              {ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(MambaJaxSelectiveStateUpdateCuda, StateUpdateImpl,
                              selective_state_update_binding<ffi::PlatformStream<cudaStream_t>>(),
                              {ffi::Traits::kCmdBufferCompatible});
