// Explicit instantiation of the selective-scan launcher for float, one file per dtype so the
// heaviest kernel templates compile in parallel.
#include "selective_scan/selective_scan.cuh"

namespace mamba_jax {
namespace cuda {
template cudaError_t launch_selective_scan<float>(const SelectiveScanParams&, cudaStream_t, bool);
}  // namespace cuda
}  // namespace mamba_jax
