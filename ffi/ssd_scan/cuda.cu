// XLA FFI CUDA handler of ssd_scan: the checks of args.h, one launch per vmap slice.
// Command-buffer compatible: only kernel launches on the given stream, no sync, no allocation.
#include "common/cuda_handler.h"
#include "ssd_scan/args.h"
#include "ssd_scan/ssd_scan.cuh"

namespace ffi = xla::ffi;
using namespace mamba_jax;
using namespace mamba_jax::ffi_util;

namespace mamba_jax {
namespace cuda {
// Instantiated in cuda_{f32,bf16,f16}.cu.
extern template cudaError_t launch_ssd_scan<float>(const SsdScanParams&, cudaStream_t);
extern template cudaError_t launch_ssd_scan<__nv_bfloat16>(const SsdScanParams&, cudaStream_t);
extern template cudaError_t launch_ssd_scan<__half>(const SsdScanParams&, cudaStream_t);
}  // namespace cuda
}  // namespace mamba_jax

namespace {

ffi::Error SsdScanImpl(cudaStream_t stream, ffi::AnyBuffer x, ffi::AnyBuffer dt, ffi::AnyBuffer A, ffi::AnyBuffer B,
                       ffi::AnyBuffer C, ffi::AnyBuffer D, ffi::AnyBuffer z, ffi::AnyBuffer dt_bias,
                       ffi::AnyBuffer initial_state, ffi::AnyBuffer seq_idx, ffi::Result<ffi::AnyBuffer> y,
                       ffi::Result<ffi::AnyBuffer> final_state, bool dt_softplus, float dt_min, float dt_max,
                       int64_t chunk_size) {
  SsdScanArgs a{x, dt, A, B, C, D, z, dt_bias, initial_state, seq_idx, y, final_state,
                dt_softplus, dt_min, dt_max, chunk_size};
  return launch_slices(a, "ssd_scan", [&](const SsdScanParams& p, auto tag) {
    return cuda::launch_ssd_scan<typename decltype(tag)::type>(p, stream);
  });
}

}  // namespace

MJ_DEFINE_CUDA_HANDLER(ssd_scan, SsdScanImpl, ssd_scan_binding<ffi::PlatformStream<cudaStream_t>>(),
                       {ffi::Traits::kCmdBufferCompatible});
