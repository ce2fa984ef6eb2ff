// Parameters of one causal_conv1d_update call (one vmap slice).
// Framework-free (no XLA): the handlers fill it from FFI buffers (args.h), the kernels read it.
// Sizes and strides are int64 and counted in elements; the innermost axis of every array is
// contiguous. Shape legend: B batch, L seqlen, D dim (channels), N dstate, G ngroups, W conv width.
#pragma once

#include <cstdint>

namespace mamba_jax {

// One step of the causal conv1d (decode).
//   x, y                 : [B, D]      activation dtype
//   conv_state/new_state : [B, D, W-1] activation dtype (may alias)
// With state_indices ([B] int32, else nullptr), state / new_state are a pool [n_slots, ...] and row b
// reads and writes slot state_indices[b] in place (new_state must alias state); a row whose slot is
// outside [0, n_slots) touches no state and gets y = 0.
struct CausalConv1dUpdateParams {
  int64_t batch, dim, width, n_slots;
  const int32_t* state_indices;
  const void* x;
  const void* conv_state;
  void* new_conv_state;
  const float* weight;
  const float* bias;
  void* y;
  bool silu;
};

}  // namespace mamba_jax
