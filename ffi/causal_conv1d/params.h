// Parameters of one causal_conv1d call (one vmap slice).
// Framework-free (no XLA): the handlers fill it from FFI buffers (args.h), the kernels read it.
// Sizes and strides are int64 and counted in elements; the innermost axis of every array is
// contiguous. Shape legend: B batch, L seqlen, D dim (channels), N dstate, G ngroups, W conv width.
#pragma once

#include <cstdint>

namespace mamba_jax {

// Causal depthwise conv1d over a sequence.
//   x, y          : [B, L, D] activation dtype
//   weight        : [D, W]    float32
//   bias          : [D]       float32 (nullptr when absent)
//   initial_state : [B, D, W-1] activation dtype, oldest first (nullptr: zeros)
//   final_state   : [B, D, W-1] activation dtype output, always written
//   seq_idx       : [B, L]    int32 (nullptr: one sequence per row); a tap reads no input across a
//                   change of seq_idx, and the inputs before t = 0 belong to seq_idx[b, 0]
struct CausalConv1dParams {
  int64_t batch, seqlen, dim, width;
  const void* x;
  const float* weight;
  const float* bias;
  const void* initial_state;
  void* y;
  void* final_state;
  const int32_t* seq_idx;
  bool silu;
};

}  // namespace mamba_jax
