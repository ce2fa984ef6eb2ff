// Parameters of one mamba1_step call (one vmap slice): the part of a Mamba-1 decode step between
// in_proj and out_proj, fused. Framework-free (no XLA): args.h fills it, the kernels read it.
// Sizes and strides are int64 and counted in elements; the innermost axis of every array is contiguous.
// Shape legend: B batch, E d_inner, N dstate, R dt_rank, J = R + 2N, W conv width, S rows of the state
// pools (S = B without state_indices).
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define MJ_STEP_HD __host__ __device__
#else
#define MJ_STEP_HD
#endif

namespace mamba_jax {

// Channels per block of the fused step's kernels; the workspace holds one x_proj partial sum per block.
constexpr int64_t kStepChannels = 64;

//   xz             : [B, 2E]     activation dtype T (in_proj's output: the conv input, then the gate z)
//   conv_state     : [S, E, W-1] T, -> new_conv_state (may alias)
//   conv_weight    : [E, W] f32;  conv_bias [E] f32 or null
//   x_proj         : [E, J] T     (x_proj's kernel: columns dt_low, B, C)
//   dt_proj        : [R, E] T;    dt_bias [E] f32;  A [E, N] f32 (= -exp(A_log));  D [E] f32 or null
//   ssm_state      : [S, E, N] f32, -> new_ssm_state (may alias)
//   y              : [B, E] T     (D skip and silu(z) gate applied: out_proj's input)
//   workspace      : f32, [B, ceil(E / kStepChannels), J] partial sums, then [B, J] x_proj output,
//                    then [B, E] conv output (the SSM input)
// With state_indices ([B] int32, else nullptr), both states are pools and row b reads and writes slot
// state_indices[b] in place; a row whose slot is outside [0, S) touches no state and gets y = 0.
struct Mamba1StepParams {
  int64_t batch, dim, dstate, dt_rank, width, n_slots;
  int64_t cols, blocks;  // J = dt_rank + 2 dstate; channel blocks ceil(dim / kStepChannels)
  const int32_t* state_indices;
  const void* xz;
  const void* conv_state;
  void* new_conv_state;
  const float* conv_weight;
  const float* conv_bias;
  const void* x_proj;
  const void* dt_proj;
  const float* dt_bias;
  const float* A;
  const float* D;
  const float* ssm_state;
  float* new_ssm_state;
  void* y;
  float* workspace;

  // The workspace's parts (see above), for both kernels: x_proj's output [B, J] and the conv output [B, E].
  MJ_STEP_HD float* x_dbl() const { return workspace + batch * blocks * cols; }
  MJ_STEP_HD float* u() const { return workspace + batch * (blocks * cols + cols); }

  static int64_t workspace_floats(int64_t batch, int64_t dim, int64_t dstate, int64_t dt_rank) {
    const int64_t j = dt_rank + 2 * dstate, nb = (dim + kStepChannels - 1) / kStepChannels;
    return batch * (nb * j + j + dim);
  }
};

}  // namespace mamba_jax
