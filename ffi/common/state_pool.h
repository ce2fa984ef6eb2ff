// The optional state_indices operand of the decode-step ops (selective_state_update,
// causal_conv1d_update, ssd_state_update): row b of the batch reads and writes row
// state_indices[b] of a state pool [n_slots, ...], in place. The check shared by their args.h.
#pragma once

#include <string>

#include "common/ffi_util.h"

namespace mamba_jax {
namespace ffi_util {

// Without state_indices (an empty operand) the state has one row per batch row. With it: [batch]
// int32, and the pool must be updated in place (new_state aliasing state), since the rows that are
// not indexed are not written. Slot values are not checked here: the kernels skip a row whose slot
// is outside [0, n_slots) (Python rejects such values when they are known before the call).
inline ffi::Error check_state_pool(const ffi::AnyBuffer& state_indices, const ffi::AnyBuffer& state,
                                   ffi::Result<ffi::AnyBuffer>& new_state, const Lead& lead, int64_t batch,
                                   int64_t n_slots, const char* state_name) {
  if (state_indices.element_count() == 0) {
    if (n_slots != batch && batch > 0)
      return ffi::Error::InvalidArgument(std::string(state_name) + " has " + std::to_string(n_slots) +
                                         " rows but the batch is " + std::to_string(batch) +
                                         " (a state pool needs state_indices)");
    return ffi::Error::Success();
  }
  MJ_RETURN_IF_ERROR(expect_shape(state_indices, "state_indices", lead, {batch}));
  MJ_RETURN_IF_ERROR(expect_dtype(state_indices, "state_indices", ffi::DataType::S32));
  if (state.untyped_data() != new_state->untyped_data())
    return ffi::Error::InvalidArgument(std::string("with state_indices the new ") + state_name +
                                       " must alias " + state_name + " (the pool is updated in place)");
  return ffi::Error::Success();
}

}  // namespace ffi_util
}  // namespace mamba_jax
