// XLA FFI CUDA handler of selective_state_update: the checks of args.h, one launch per vmap slice.
// Command-buffer compatible: only kernel launches on the given stream, no sync, no allocation.
#include "common/cuda_handler.h"
#include "selective_state_update/args.h"
#include "selective_state_update/selective_state_update.cuh"

namespace ffi = xla::ffi;
using namespace mamba_jax;
using namespace mamba_jax::ffi_util;

namespace {

ffi::Error SelectiveStateUpdateImpl(cudaStream_t stream, ffi::AnyBuffer state, ffi::AnyBuffer x, ffi::AnyBuffer dt,
                                    ffi::AnyBuffer A, ffi::AnyBuffer Bm, ffi::AnyBuffer Cm, ffi::AnyBuffer Dskip,
                                    ffi::AnyBuffer z, ffi::AnyBuffer dt_bias, ffi::AnyBuffer state_indices,
                                    ffi::Result<ffi::AnyBuffer> y,
                                    ffi::Result<ffi::AnyBuffer> new_state, bool dt_softplus) {
  SelectiveStateUpdateArgs a{state, x, dt, A, Bm, Cm, Dskip, z, dt_bias, state_indices, y, new_state, dt_softplus};
  return launch_slices(a, "selective_state_update", [&](const SelectiveStateUpdateParams& p, auto tag) {
    return cuda::launch_selective_state_update<typename decltype(tag)::type>(p, stream);
  });
}

}  // namespace

MJ_DEFINE_CUDA_HANDLER(selective_state_update, SelectiveStateUpdateImpl,
                       selective_state_update_binding<ffi::PlatformStream<cudaStream_t>>(),
                       {ffi::Traits::kCmdBufferCompatible});
