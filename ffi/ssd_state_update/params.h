// Parameters of one ssd_state_update call (one vmap slice): one step of the Mamba-2 recurrence
// (decode). Framework-free (no XLA): the handlers fill it from FFI buffers (args.h), the CPU kernel
// (ssd_state_update.h) and the CUDA kernel (ssd_state_update.cuh) read it.
// Sizes are int64; every array is row-major with a contiguous innermost axis. Shape legend: B batch,
// H nheads, P headdim, N dstate, G ngroups.
#pragma once

#include <cstdint>

namespace mamba_jax {

//   state, new_state : [B, H, P, N] f32; new_state may alias state (in place under donation)
//   x, z, y          : [B, H, P]    activation dtype (f32, bf16, f16); z nullptr when absent; the rows of
//                                   x are x_stride elements apart (H * P when contiguous)
//   dt               : [B, H]       activation dtype
//   A                : [H]          f32
//   Bm, Cm           : [B, G, N]    activation dtype; head h reads group h / (H / G); rows bc_stride
//                                   elements apart (G * N when contiguous)
//   Dskip            : [H, P]       f32, nullptr when absent
//   dt_bias          : [H]          f32, nullptr when absent
// dt = clip(softplus?(dt + dt_bias), dt_min, dt_max); new_state = exp(dt A) state + dt x B^T per
// head; y = new_state C + D x, times silu(z) when z is given.
// With state_indices ([B] int32, else nullptr), state / new_state are a pool [n_slots, ...] and row b
// reads and writes slot state_indices[b] in place (new_state must alias state); a row whose slot is
// outside [0, n_slots) touches no state and gets y = 0.
struct SsdStateUpdateParams {
  int64_t batch, nheads, headdim, dstate, ngroups, n_slots;
  int64_t x_stride, bc_stride;  // elements between batch rows of x and of Bm / Cm (mamba2_step reads them
                                // from the rows of its conv output)
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
  float dt_min, dt_max;
  bool dt_softplus;
};

}  // namespace mamba_jax
