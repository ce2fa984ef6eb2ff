// XLA FFI CUDA handler of ssd_scan: the checks of args.h, then per vmap slice either the sequential
// kernel (v2, one launch) or the chunk-parallel one (v3, three launches). The choice is the
// workspace result's size, which Python sets (mamba_jax/ops/ssd_scan/ffi.py): empty selects v2;
// otherwise it must hold ssd_scan_v3_workspace_floats() float32s per slice and selects v3.
// Command-buffer compatible: only kernel launches on the given stream, no sync, no allocation.
#include <string>

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
extern template cudaError_t launch_ssd_scan_v3<float>(const SsdScanParams&, float*, cudaStream_t);
extern template cudaError_t launch_ssd_scan_v3<__nv_bfloat16>(const SsdScanParams&, float*, cudaStream_t);
extern template cudaError_t launch_ssd_scan_v3<__half>(const SsdScanParams&, float*, cudaStream_t);
}  // namespace cuda
}  // namespace mamba_jax

namespace {

ffi::Error SsdScanImpl(cudaStream_t stream, ffi::AnyBuffer x, ffi::AnyBuffer dt, ffi::AnyBuffer A, ffi::AnyBuffer B,
                       ffi::AnyBuffer C, ffi::AnyBuffer D, ffi::AnyBuffer z, ffi::AnyBuffer dt_bias,
                       ffi::AnyBuffer initial_state, ffi::AnyBuffer seq_idx, ffi::Result<ffi::AnyBuffer> y,
                       ffi::Result<ffi::AnyBuffer> final_state, ffi::Result<ffi::AnyBuffer> workspace,
                       bool dt_softplus, float dt_min, float dt_max, int64_t chunk_size) {
  SsdScanArgs a{x, dt, A, B, C, D, z, dt_bias, initial_state, seq_idx, y, final_state,
                dt_softplus, dt_min, dt_max, chunk_size};
  MJ_RETURN_IF_ERROR(a.check());
  const int64_t ws_count = static_cast<int64_t>(workspace->element_count());
  float* ws = ws_count > 0 ? static_cast<float*>(workspace->untyped_data()) : nullptr;
  int64_t per_slice = 0;
  if (ws) {
    if (workspace->element_type() != ffi::DataType::F32)
      return ffi::Error::InvalidArgument("ssd_scan: the workspace result must be float32");
    per_slice = cuda::ssd_scan_v3_workspace_floats(a.params(0));
    if (ws_count != per_slice * a.lead.count)
      return ffi::Error::InvalidArgument("ssd_scan: the workspace result has " + std::to_string(ws_count) +
                                         " elements, expected 0 (sequential kernel) or " +
                                         std::to_string(per_slice * a.lead.count) + " (chunk-parallel kernel)");
  }
  int64_t slice = 0;  // launch_slices visits the vmap slices in order 0, 1, ...
  return launch_slices(a, "ssd_scan", [&](const SsdScanParams& p, auto tag) {
    using T = typename decltype(tag)::type;
    float* slice_ws = ws ? ws + per_slice * slice++ : nullptr;
    return slice_ws ? cuda::launch_ssd_scan_v3<T>(p, slice_ws, stream) : cuda::launch_ssd_scan<T>(p, stream);
  });
}

}  // namespace

MJ_DEFINE_CUDA_HANDLER(ssd_scan, SsdScanImpl, ssd_scan_binding<ffi::PlatformStream<cudaStream_t>>(),
                       {ffi::Traits::kCmdBufferCompatible});
