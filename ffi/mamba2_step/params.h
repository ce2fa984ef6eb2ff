// Parameters of one mamba2_step call (one vmap slice): the part of a Mamba-2 decode step between in_proj
// and the gated norm, fused: the conv update + SiLU over xBC, then the SSD state update on its x, B, C.
// Framework-free (no XLA): args.h fills it, the kernels read it. Shape legend: B batch, H nheads,
// P headdim, N dstate, G ngroups, C = H P + 2 G N conv channels, W conv width, S rows of the state pools
// (S = B without state_indices).
#pragma once

#include "causal_conv1d_update/params.h"
#include "ssd_state_update/params.h"

namespace mamba_jax {

//   xBC            : [B, C]          activation dtype T (in_proj's x, B, C columns)
//   dt             : [B, H]          T (in_proj's dt columns, before dt_bias and the softplus)
//   conv_state     : [S, C, W-1]     T, -> new_conv_state (may alias); conv_weight [C, W], conv_bias [C] f32
//   ssm_state      : [S, H, P, N]    f32, -> new_ssm_state (may alias)
//   A [H], D [H, P], dt_bias [H] f32 (D, dt_bias optional); z [B, H, P] T, optional
//   workspace      : [B, C]          T: the conv output (silu, rounded to T as causal_conv1d_update outputs
//                                    it): row b is x [H, P], then B [G, N], then C [G, N]
//   y              : [B, H, P]       T
// The two stages are the ops' own: `conv` is causal_conv1d_update's Params (x = xBC, y = the workspace,
// silu), `ssm` is ssd_state_update's (x, Bm, Cm inside the workspace's rows, dt_softplus). With
// state_indices both pools are indexed by the same slots (see the ops' params.h).
struct Mamba2StepParams {
  CausalConv1dUpdateParams conv;
  SsdStateUpdateParams ssm;
};

}  // namespace mamba_jax
