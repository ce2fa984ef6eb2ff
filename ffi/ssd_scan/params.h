// Parameters of one ssd_scan call (one vmap slice), the Mamba-2 SSD scan over whole sequences.
// Framework-free (no XLA): the handlers fill it from FFI buffers (args.h), the CPU kernel
// (ssd_scan.h) and the CUDA kernel (ssd_scan.cuh) read it.
// Sizes and strides are int64 and counted in elements; the innermost axis of every array is
// contiguous. Shape legend: B batch, L seqlen, H nheads, P headdim, N dstate, G ngroups,
// S num_sequences.
#pragma once

#include <cstdint>

namespace mamba_jax {

//   x, z, y       : [B, L, H, P] activation dtype (f32, bf16, f16); z nullptr when absent
//   dt            : [B, L, H]    activation dtype
//   A             : [H]          f32
//   Bm, Cm        : [B, L, G, N] activation dtype; head h reads group h / (H / G)
//   Dskip         : [H, P]       f32, nullptr when absent
//   dt_bias       : [H]          f32, nullptr when absent
//   initial_state : [B, H, P, N] f32, nullptr for zeros
//   seq_idx       : [B, L]       int32, nullptr when absent (or when L == 0); has_seq_idx says
//                                whether it was given, which decides the layout of final_state
//   final_state   : f32 output, always written: [B, H, P, N] (the state after the last step) without
//                   seq_idx; [B, S, H, P, N] with it, entry [b, s] the state after the last position
//                   whose seq_idx is s (zeros where s never occurs; ids outside [0, S) are not stored).
// dt = clip(softplus?(dt + dt_bias), dt_min, dt_max); per head, h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T
// ([P, N]), y_t = h_t C_t + D x_t, times silu(z_t) when z is given. With seq_idx the state restarts
// from zero wherever seq_idx[t] != seq_idx[t - 1]; initial_state applies before t = 0 only.
// chunk_size (>= 1) is a performance knob of the chunked GPU kernel; the CPU kernel ignores it.
struct SsdScanParams {
  int64_t batch, seqlen, nheads, headdim, dstate, ngroups;
  int64_t num_sequences;  // S (may be 0) with seq_idx; 0 without
  int64_t chunk_size;
  int64_t x_batch_stride, x_seq_stride, x_head_stride;  // shared by x, z, y
  int64_t dt_batch_stride, dt_seq_stride;
  int64_t bc_batch_stride, bc_seq_stride, bc_group_stride;  // shared by Bm, Cm
  int64_t seq_idx_batch_stride;
  int64_t state_batch_stride, state_head_stride;  // initial_state, and final_state without seq_idx
  int64_t final_batch_stride, final_seq_stride, final_head_stride;  // final_state (seq stride 0 without seq_idx)
  const void* x;
  const void* dt;
  const float* A;
  const void* Bm;
  const void* Cm;
  const float* Dskip;
  const void* z;
  const float* dt_bias;
  const float* initial_state;
  const int32_t* seq_idx;
  void* y;
  float* final_state;
  float dt_min, dt_max;
  bool dt_softplus;
  bool has_seq_idx;
};

}  // namespace mamba_jax
