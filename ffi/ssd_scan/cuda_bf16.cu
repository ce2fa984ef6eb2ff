// Explicit instantiation of the ssd_scan launchers (v2 and the chunk-parallel v3) for __nv_bfloat16, one file
// per dtype so the kernel templates compile in parallel.
#include "ssd_scan/ssd_scan.cuh"

namespace mamba_jax {
namespace cuda {
template cudaError_t launch_ssd_scan<__nv_bfloat16>(const SsdScanParams&, cudaStream_t);
template cudaError_t launch_ssd_scan_v3<__nv_bfloat16>(const SsdScanParams&, float*, cudaStream_t);
}  // namespace cuda
}  // namespace mamba_jax
