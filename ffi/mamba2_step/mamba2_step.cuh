// CUDA kernels of mamba2_step: a Mamba-2 decode step from in_proj's output to the gated norm's input in two
// launches, the kernels of the unfused ops (so the fused step equals them bit for bit):
//   1. causal_conv1d_update's kernel over all C channels of every row (one thread per vector of channels,
//      or per channel on the scalar path): new conv state, and silu(conv) rounded to T into the workspace
//      [B, C]. It calls pdl_trigger() first.
//   2. ssd_state_update's kernel (one (b, h) per block, LPR lanes per state row; a warp per row on the
//      scalar path) as a programmatic dependent launch (sm_90+): it loads the state rows, dt, dt_bias, A,
//      D and z, then waits (pdl_wait) for kernel 1, then reads x, B and C from the workspace's rows.
// What the step saves over the unfused ops: the slices and copies between them (XLA's split of xBC into
// x, B, C), one launch's latency (kernel 2's state loads overlap kernel 1), and one custom call.
#pragma once

#include "causal_conv1d_update/causal_conv1d_update.cuh"
#include "mamba2_step/params.h"
#include "ssd_state_update/ssd_state_update.cuh"

namespace mamba_jax {
namespace cuda {

template <typename T>
cudaError_t launch_mamba2_step(const Mamba2StepParams& p, cudaStream_t stream) {
  if (p.conv.batch == 0) return cudaSuccess;
  cudaError_t e = launch_causal_conv1d_update<T, /*TRIGGER=*/true>(p.conv, stream);
  if (e != cudaSuccess) return e;
  return launch_ssd_state_update<T, /*PDL=*/true>(p.ssm, stream);
}

}  // namespace cuda
}  // namespace mamba_jax
