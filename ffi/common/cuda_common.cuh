// Device helpers shared by the CUDA kernels: dtype conversion, the fast math the scans use, 16-byte
// vectors and cp.async staging. Framework-free (no XLA).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace mamba_jax {
namespace cuda {

#define MJ_DEVICE __device__ __forceinline__

// dtype conversion (activations are float32, bfloat16 or float16; math is float32)
template <typename T> MJ_DEVICE float to_f32(T x);
template <> MJ_DEVICE float to_f32<float>(float x) { return x; }
template <> MJ_DEVICE float to_f32<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }
template <> MJ_DEVICE float to_f32<__half>(__half x) { return __half2float(x); }

template <typename T> MJ_DEVICE T from_f32(float x);
template <> MJ_DEVICE float from_f32<float>(float x) { return x; }
template <> MJ_DEVICE __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <> MJ_DEVICE __half from_f32<__half>(float x) { return __float2half_rn(x); }

// math
constexpr float kLog2e = 1.4426950408889634f;

// 2^x on the special-function unit (one MUFU.EX2, ~2 ulp). Denormal results flush to zero, which
// is what a decaying state wants; -inf gives 0. Written out so it does not depend on --use_fast_math.
MJ_DEVICE float ex2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

MJ_DEVICE float exp_fast(float x) { return ex2_approx(x * kLog2e); }

// 2^x for the state decay exp(dt * A) (x = dt * A * log2 e <= 0). ex2.approx is off by up to ~2 ulp
// near 1, and for small |x| that error is large relative to 1 - 2^x, the rate at which the state
// forgets; it compounds over the ~1/|x| steps the state remembers (measured: 3e-4 relative error in
// float32 y at dt ~ 1e-3 over 2048 steps, and at dt ~ 1e-4 over 65536). Small |x| (< 1/8) therefore
// takes the degree-4 Taylor polynomial of 2^x (truncation < 4.2e-8, i.e. < 5e-7 relative to 1 - 2^x;
// rounding ~1 ulp); larger |x| keeps the MUFU, whose error is then < 3e-6 relative to 1 - 2^x.
// (v3 used degree 6 below 0.18: two more FMAs per state per step for accuracy nothing needed.)
MJ_DEVICE float exp2_decay(float x) {
  float p = 9.6181291076284772e-3f;
  p = fmaf(p, x, 5.5504108664821580e-2f);
  p = fmaf(p, x, 0.24022650695910071f);
  p = fmaf(p, x, 0.69314718055994531f);
  p = fmaf(p, x, 1.0f);
  return fabsf(x) < 0.125f ? p : ex2_approx(x);
}

// softplus(x) = log(1 + e^x). Small results (dt ~ 1e-4) need log1p's relative accuracy: below
// e = 0.05 a 4-term series (relative error < e^4/5 = 1.3e-6 at the switch), above it the MUFU log,
// whose ~4e-7 absolute error is < 1e-5 relative to log(1.05). No libm call, no branch divergence cost.
MJ_DEVICE float softplus(float x) {
  const float e = exp_fast(x);
  const float series = e * (1.0f - e * (0.5f - e * (0.33333334f - 0.25f * e)));
  const float lg = __logf(1.0f + e);
  return x > 20.0f ? x : (e < 0.05f ? series : lg);
}

// x * sigmoid(x). For x << 0, e^-x overflows to inf and the quotient is -0, as it should be.
MJ_DEVICE float silu(float x) { return __fdividef(x, 1.0f + exp_fast(-x)); }

// vectors
// S consecutive floats (shared memory), in the widest aligned accesses.
template <int S>
MJ_DEVICE void load_lane_floats(const float* src, float (&dst)[S]) {
  if constexpr (S % 4 == 0) {
#pragma unroll
    for (int i = 0; i < S; i += 4) {
      const float4 v = *reinterpret_cast<const float4*>(src + i);
      dst[i] = v.x; dst[i + 1] = v.y; dst[i + 2] = v.z; dst[i + 3] = v.w;
    }
  } else if constexpr (S == 2) {
    const float2 v = *reinterpret_cast<const float2*>(src);
    dst[0] = v.x; dst[1] = v.y;
  } else {
#pragma unroll
    for (int i = 0; i < S; ++i) dst[i] = src[i];
  }
}

// M consecutive floats to shared memory, in the widest aligned accesses (dst aligned to 4 * M bytes
// when M is 2 or a multiple of 4).
template <int M>
MJ_DEVICE void store_floats(float* dst, const float* v) {
  if constexpr (M % 4 == 0) {
#pragma unroll
    for (int i = 0; i < M; i += 4) *reinterpret_cast<float4*>(dst + i) = make_float4(v[i], v[i + 1], v[i + 2], v[i + 3]);
  } else if constexpr (M == 2) {
    *reinterpret_cast<float2*>(dst) = make_float2(v[0], v[1]);
  } else {
#pragma unroll
    for (int i = 0; i < M; ++i) dst[i] = v[i];
  }
}

// VEC elements of T loaded/stored as one access (16 bytes when VEC * sizeof(T) == 16).
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Vec {
  T v[VEC];
};

// Whole-vector loads and stores as one 4/8/16-byte access. (Copying a Vec of __nv_bfloat16 member by
// member can compile to one 2-byte access per element.)
template <typename T, int VEC>
MJ_DEVICE Vec<T, VEC> load_vec(const T* src) {
  Vec<T, VEC> r;
  constexpr int bytes = sizeof(T) * VEC;
  if constexpr (bytes == 16) {
    *reinterpret_cast<int4*>(&r) = *reinterpret_cast<const int4*>(src);
  } else if constexpr (bytes == 8) {
    *reinterpret_cast<int2*>(&r) = *reinterpret_cast<const int2*>(src);
  } else if constexpr (bytes == 4) {
    *reinterpret_cast<int*>(&r) = *reinterpret_cast<const int*>(src);
  } else {
#pragma unroll
    for (int i = 0; i < VEC; ++i) r.v[i] = src[i];
  }
  return r;
}

template <typename T, int VEC>
MJ_DEVICE void store_vec(T* dst, const Vec<T, VEC>& r) {
  constexpr int bytes = sizeof(T) * VEC;
  if constexpr (bytes == 16) {
    *reinterpret_cast<int4*>(dst) = *reinterpret_cast<const int4*>(&r);
  } else if constexpr (bytes == 8) {
    *reinterpret_cast<int2*>(dst) = *reinterpret_cast<const int2*>(&r);
  } else if constexpr (bytes == 4) {
    *reinterpret_cast<int*>(dst) = *reinterpret_cast<const int*>(&r);
  } else {
#pragma unroll
    for (int i = 0; i < VEC; ++i) dst[i] = r.v[i];
  }
}

inline bool aligned_host(const void* p, uintptr_t bytes) { return (reinterpret_cast<uintptr_t>(p) & (bytes - 1)) == 0; }
inline bool aligned16_host(const void* p) { return aligned_host(p, 16); }

// An attribute of the current device (host calls only: no stream work, so fine in a command buffer).
inline cudaError_t current_device_attribute(cudaDeviceAttr attr, int* value) {
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  return e == cudaSuccess ? cudaDeviceGetAttribute(value, attr, dev) : e;
}

// Programmatic dependent launch (sm_90+). A kernel launched with `launch_pdl` may start while the
// kernel before it on the stream is still running: it issues the loads that do not depend on that
// kernel, then `pdl_wait()` blocks until the previous grid has finished and its writes are visible.
// `pdl_trigger()` lets the next PDL-launched kernel start before this one ends. Both are no-ops below
// sm_90 and when the kernel was launched normally.
MJ_DEVICE void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

MJ_DEVICE void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// Whether launch_pdl sets the programmatic-serialization attribute: on devices of compute capability 9+,
// unless the environment sets MAMBA_JAX_PDL=0 (read once; for measuring with and without).
inline bool pdl_enabled() {
  static const bool on = [] {
    const char* env = std::getenv("MAMBA_JAX_PDL");
    if (env && std::strcmp(env, "0") == 0) return false;
    int major = 0;
    return current_device_attribute(cudaDevAttrComputeCapabilityMajor, &major) == cudaSuccess && major >= 9;
  }();
  return on;
}

// Launches kernel<<<grid, block, smem, stream>>>(args...) as a programmatic dependent of the previous
// kernel on the stream (when pdl_enabled(); otherwise an ordinary launch). The kernel must call
// pdl_wait() before it reads anything the previous kernel writes.
template <typename... KArgs, typename... Args>
cudaError_t launch_pdl(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                       Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl_enabled() ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}

// BYTES (4, 8 or 16) from global to shared memory, asynchronously (both addresses aligned to BYTES).
template <int BYTES>
MJ_DEVICE void cp_async_bytes(void* smem, const void* gmem) {
  static_assert(BYTES == 4 || BYTES == 8 || BYTES == 16, "cp.async copies 4, 8 or 16 bytes");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  if constexpr (BYTES == 16)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem) : "memory");
  else
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(s), "l"(gmem), "n"(BYTES) : "memory");
#else
  if constexpr (BYTES == 16) *reinterpret_cast<int4*>(smem) = *reinterpret_cast<const int4*>(gmem);
  else if constexpr (BYTES == 8) *reinterpret_cast<int2*>(smem) = *reinterpret_cast<const int2*>(gmem);
  else *reinterpret_cast<int*>(smem) = *reinterpret_cast<const int*>(gmem);
#endif
}

// cp.async (sm_80+): global -> shared copies that complete in the background
MJ_DEVICE void cp_async16(void* smem, const void* gmem) { cp_async_bytes<16>(smem, gmem); }

MJ_DEVICE void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Waits until at most N of this thread's committed cp.async groups are still in flight.
template <int N>
MJ_DEVICE void cp_async_wait_group() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

MJ_DEVICE void cp_async_wait_all() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");
#endif
}

}  // namespace cuda
}  // namespace mamba_jax
