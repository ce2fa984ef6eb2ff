// Explicit instantiation of the ssd_scan launcher for __nv_bfloat16, one file per dtype so the kernel
// templates compile in parallel.
#include "ssd_scan/ssd_scan.cuh"

namespace mamba_jax {
namespace cuda {
template cudaError_t launch_ssd_scan<__nv_bfloat16>(const SsdScanParams&, cudaStream_t);
}  // namespace cuda
}  // namespace mamba_jax
