// Parameters of one selective_state_update call (one vmap slice).
// Framework-free (no XLA): the handlers fill it from FFI buffers (args.h), the kernels read it.
// Sizes and strides are int64 and counted in elements; the innermost axis of every array is
// contiguous. Shape legend: B batch, L seqlen, D dim (channels), N dstate, G ngroups, W conv width.
#pragma once

#include <cstdint>

namespace mamba_jax {

// One step of the Mamba-1 recurrence (decode).
//   state      : [B, D, N] float32, read and written (may alias new_state)
//   x, dt, z, y: [B, D]    activation dtype
//   A          : [D, N]    float32
//   Bm, Cm     : [B, G, N] activation dtype
//   Dskip, dt_bias : [D]   float32 (nullptr when absent)
// With state_indices ([B] int32, else nullptr), state / new_state are a pool [n_slots, ...] and row b
// reads and writes slot state_indices[b] in place (new_state must alias state); a row whose slot is
// outside [0, n_slots) writes no state and gets y = 0 (the tile kernel reads slot 0's state for it; an
// empty pool keeps the generic kernel, which reads nothing).
struct SelectiveStateUpdateParams {
  int64_t batch, dim, dstate, ngroups, n_slots;
  const int32_t* state_indices;
  const float* state;
  float* new_state;
  const void* x;
  const void* dt;
  const float* A;
  const void* Bm;
  const void* Cm;
  const float* Dskip;
  const void* z;
  const float* dt_bias;
  void* y;
  bool dt_softplus;
};

}  // namespace mamba_jax
