// What the CUDA handlers of the vmapped ops share: check the operands, then one launch per vmap slice
// on the given stream, a failed launch becoming an Internal error that names the op.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>

#include "common/handler.h"

namespace mamba_jax {
namespace ffi_util {

// launch(params, TypeTag<T>{}) -> cudaError_t, T the CUDA type of the call's activation dtype.
template <typename Args, typename Launch>
ffi::Error launch_slices(Args& a, const char* op, Launch&& launch) {
  MJ_RETURN_IF_ERROR(a.check());
  if (a.empty()) return ffi::Error::Success();
  return for_each_slice<float, __nv_bfloat16, __half>(a, [&](const auto& p, auto tag) {
    const cudaError_t e = launch(p, tag);
    return e == cudaSuccess ? ffi::Error::Success()
                            : ffi::Error::Internal(std::string(op) + ": CUDA launch failed: " + cudaGetErrorString(e));
  });
}

}  // namespace ffi_util
}  // namespace mamba_jax
