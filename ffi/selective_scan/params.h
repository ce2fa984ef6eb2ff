// Parameters of one selective_scan call (one vmap slice).
// Framework-free (no XLA): the handlers fill it from FFI buffers (args.h), the kernels read it.
// Sizes and strides are int64 and counted in elements; the innermost axis of every array is
// contiguous. Shape legend: B batch, L seqlen, D dim (channels), N dstate, G ngroups, W conv width.
#pragma once

#include <cstdint>

namespace mamba_jax {

// Mamba-1 selective scan over a whole sequence.
//   u, delta, z, y : [B, L, D]  activation dtype
//   A              : [D, N]     float32
//   Bm, Cm         : [B, L, G, N] activation dtype; channel d reads group d / (D / G)
//   Dskip, delta_bias : [D]     float32 (nullptr when absent)
//   initial_state  : [B, D, N]  float32 (nullptr when absent)
//   last_state     : [B, D, N]  float32 output, always written
struct SelectiveScanParams {
  int64_t batch, seqlen, dim, dstate, ngroups;
  int64_t u_batch_stride, u_seq_stride;        // shared by u, delta, z, y (all contiguous [B, L, D])
  int64_t bc_batch_stride, bc_seq_stride, bc_group_stride;
  const void* u;
  const void* delta;
  const float* A;
  const void* Bm;
  const void* Cm;
  const float* Dskip;
  const void* z;
  const float* delta_bias;
  const float* initial_state;
  void* y;
  float* last_state;
  bool delta_softplus;
};

}  // namespace mamba_jax
