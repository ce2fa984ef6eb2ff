// XLA FFI CUDA handler of selective_scan: the checks of args.h, one launch per vmap slice.
// Command-buffer compatible: only kernel launches on the given stream, no sync, no allocation.
#include "common/cuda_handler.h"
#include "selective_scan/args.h"
#include "selective_scan/selective_scan.cuh"

namespace ffi = xla::ffi;
using namespace mamba_jax;
using namespace mamba_jax::ffi_util;

namespace mamba_jax {
namespace cuda {
// Instantiated in cuda_{f32,bf16,f16}.cu.
extern template cudaError_t launch_selective_scan<float>(const SelectiveScanParams&, cudaStream_t, bool);
extern template cudaError_t launch_selective_scan<__nv_bfloat16>(const SelectiveScanParams&, cudaStream_t, bool);
extern template cudaError_t launch_selective_scan<__half>(const SelectiveScanParams&, cudaStream_t, bool);
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

}  // namespace

MJ_DEFINE_CUDA_HANDLER(selective_scan, SelectiveScanImpl,
                       selective_scan_binding<ffi::PlatformStream<cudaStream_t>>(),
                       {ffi::Traits::kCmdBufferCompatible});
