// XLA FFI CUDA handler of ssd_state_update: the checks of args.h, one launch per vmap slice.
// Command-buffer compatible: only kernel launches on the given stream, no sync, no allocation.
// new_state may alias state (in place under donation): each element is read before it is written,
// by the same thread.
#include "common/cuda_handler.h"
#include "ssd_state_update/args.h"
#include "ssd_state_update/ssd_state_update.cuh"

namespace ffi = xla::ffi;
using namespace mamba_jax;
using namespace mamba_jax::ffi_util;

namespace {

ffi::Error SsdStateUpdateImpl(cudaStream_t stream, ffi::AnyBuffer state, ffi::AnyBuffer x, ffi::AnyBuffer dt,
                              ffi::AnyBuffer A, ffi::AnyBuffer B, ffi::AnyBuffer C, ffi::AnyBuffer D, ffi::AnyBuffer z,
                              ffi::AnyBuffer dt_bias, ffi::AnyBuffer state_indices, ffi::Result<ffi::AnyBuffer> y,
                              ffi::Result<ffi::AnyBuffer> new_state, bool dt_softplus, float dt_min, float dt_max) {
  SsdStateUpdateArgs a{state, x, dt, A, B, C, D, z, dt_bias, state_indices, y, new_state, dt_softplus, dt_min, dt_max};
  return launch_slices(a, "ssd_state_update", [&](const SsdStateUpdateParams& p, auto tag) {
    return cuda::launch_ssd_state_update<typename decltype(tag)::type>(p, stream);
  });
}

}  // namespace

MJ_DEFINE_CUDA_HANDLER(ssd_state_update, SsdStateUpdateImpl,
                       ssd_state_update_binding<ffi::PlatformStream<cudaStream_t>>(),
                       {ffi::Traits::kCmdBufferCompatible});
