// Explicit instantiation of the ssd_scan launcher for float, one file per dtype so the kernel
// templates compile in parallel.
#include "ssd_scan/ssd_scan.cuh"

namespace mamba_jax {
namespace cuda {
template cudaError_t launch_ssd_scan<float>(const SsdScanParams&, cudaStream_t);
}  // namespace cuda
}  // namespace mamba_jax
