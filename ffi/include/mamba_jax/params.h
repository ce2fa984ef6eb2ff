// Plain parameter structs shared by the CPU loops and the CUDA kernels.
//
// Nothing here knows about XLA: handlers in ffi/cpu and ffi/cuda fill these from FFI buffers.
// Sizes and strides are int64 and counted in elements. The innermost axis of every array
// (dim for activations, dstate for B/C/state, width-1 for conv state) is contiguous.
//
// Shape legend: B batch, L seqlen, D dim (channels), N dstate, G ngroups, W conv width,
// H nheads, P headdim.
#pragma once

#include <cstdint>

namespace mamba_jax {

// Limits shared with the Python checks (mamba_jax/ops/_checks.py keeps the same numbers).
constexpr int64_t kMaxDstate = 256;
constexpr int64_t kMinConvWidth = 2;
constexpr int64_t kMaxConvWidth = 8;

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

// One step of the Mamba-1 recurrence (decode).
//   state      : [B, D, N] float32, read and written (may alias new_state)
//   x, dt, z, y: [B, D]    activation dtype
//   A          : [D, N]    float32
//   Bm, Cm     : [B, G, N] activation dtype
//   Dskip, dt_bias : [D]   float32 (nullptr when absent)
struct StateUpdateParams {
  int64_t batch, dim, dstate, ngroups;
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

// Causal depthwise conv1d over a sequence.
//   x, y          : [B, L, D] activation dtype
//   weight        : [D, W]    float32
//   bias          : [D]       float32 (nullptr when absent)
//   initial_state : [B, D, W-1] activation dtype, oldest first (nullptr: zeros)
//   final_state   : [B, D, W-1] activation dtype output, always written
struct Conv1dParams {
  int64_t batch, seqlen, dim, width;
  const void* x;
  const float* weight;
  const float* bias;
  const void* initial_state;
  void* y;
  void* final_state;
  bool silu;
};

// One step of the causal conv1d (decode).
//   x, y                 : [B, D]      activation dtype
//   conv_state/new_state : [B, D, W-1] activation dtype (may alias)
struct Conv1dUpdateParams {
  int64_t batch, dim, width;
  const void* x;
  const void* conv_state;
  void* new_conv_state;
  const float* weight;
  const float* bias;
  void* y;
  bool silu;
};

// Small-batch projection (decode): y = x @ w.
//   x : [M, K], w : [K, N] (row-major, N contiguous), y : [M, N]; one dtype; float32 accumulation.
struct LinearParams {
  int64_t m, k, n;
  const void* x;
  const void* w;
  void* y;
};

}  // namespace mamba_jax
