// Helpers shared by the CPU and CUDA XLA FFI handlers: shape and dtype checks with readable errors,
// and the leading "vmap" dimensions that ffi_call(vmap_method="broadcast_all") prepends to every
// operand.
//
// Messages are built with std::string and std::to_string only, never with iostreams. On the GPU host
// the compiler (CXX=/opt/gcc/bin/g++) links libstdc++ statically into the module and exported that
// copy; mixed with the process's own libstdc++, formatting an integer through std::ostringstream
// segfaulted in the locale code, so every error that printed a shape crashed instead of raising.
// CMakeLists.txt now keeps such a copy private; std::to_string needs no locale either way.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "common/limits.h"
#include "xla/ffi/api/ffi.h"

namespace mamba_jax {
namespace ffi_util {

namespace ffi = xla::ffi;

inline std::string dims_str(ffi::Span<const int64_t> d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(d[i]);
  }
  s += "]";
  return s;
}

inline std::string dims_str(const std::vector<int64_t>& d) {
  return dims_str(ffi::Span<const int64_t>(d.data(), d.size()));
}

// XLA's short name of a dtype ("f32", "bf16", "s32", ...).
inline std::string dtype_name(ffi::DataType t) {
  switch (t) {
    case ffi::DataType::PRED: return "pred";
    case ffi::DataType::S8: return "s8";
    case ffi::DataType::S16: return "s16";
    case ffi::DataType::S32: return "s32";
    case ffi::DataType::S64: return "s64";
    case ffi::DataType::U8: return "u8";
    case ffi::DataType::U16: return "u16";
    case ffi::DataType::U32: return "u32";
    case ffi::DataType::U64: return "u64";
    case ffi::DataType::F16: return "f16";
    case ffi::DataType::F32: return "f32";
    case ffi::DataType::F64: return "f64";
    case ffi::DataType::BF16: return "bf16";
    case ffi::DataType::C64: return "c64";
    case ffi::DataType::C128: return "c128";
    default: return "dtype code " + std::to_string(static_cast<int>(t));
  }
}

// Leading dimensions shared by every operand (vmap). `base_rank` is the rank of the reference
// operand without them.
struct Lead {
  std::vector<int64_t> dims;
  int64_t count = 1;
};

inline ffi::Error get_lead(const ffi::AnyBuffer& ref, const char* name, size_t base_rank, Lead* lead) {
  auto d = ref.dimensions();
  if (d.size() < base_rank)
    return ffi::Error::InvalidArgument(std::string(name) + " must have rank >= " +
                                       std::to_string(base_rank) + ", got shape " + dims_str(d));
  lead->dims.assign(d.begin(), d.begin() + (d.size() - base_rank));
  lead->count = 1;
  for (int64_t x : lead->dims) lead->count *= x;
  return ffi::Error::Success();
}

// Checks that `buf` has shape lead + expected; an empty buffer is accepted when `optional`.
inline ffi::Error expect_shape(const ffi::AnyBuffer& buf, const char* name, const Lead& lead,
                               std::initializer_list<int64_t> expected, bool optional = false) {
  if (optional && buf.element_count() == 0) return ffi::Error::Success();
  std::vector<int64_t> want(lead.dims);
  want.insert(want.end(), expected.begin(), expected.end());
  auto d = buf.dimensions();
  bool ok = d.size() == want.size();
  for (size_t i = 0; ok && i < want.size(); ++i) ok = d[i] == want[i];
  if (!ok)
    return ffi::Error::InvalidArgument(std::string(name) + " has shape " + dims_str(d) +
                                       ", expected " + dims_str(want));
  return ffi::Error::Success();
}

// Checks that `buf` has dtype `want`; an empty buffer is accepted when `optional`. `want_from`
// names the operand `want` was taken from, if any ("x" gives "expected f32 (the dtype of x)").
inline ffi::Error expect_dtype(const ffi::AnyBuffer& buf, const char* name, ffi::DataType want,
                               bool optional = false, const char* want_from = nullptr) {
  if (optional && buf.element_count() == 0) return ffi::Error::Success();
  if (buf.element_type() != want) {
    std::string msg = std::string(name) + " has dtype " + dtype_name(buf.element_type()) + ", expected " +
                      dtype_name(want);
    if (want_from) msg += std::string(" (the dtype of ") + want_from + ")";
    return ffi::Error::InvalidArgument(msg);
  }
  return ffi::Error::Success();
}

inline bool is_activation_dtype(ffi::DataType t) {
  return t == ffi::DataType::F32 || t == ffi::DataType::BF16 || t == ffi::DataType::F16;
}

// The activation operand (u or x) decides the kernel's dtype: f32, bf16 or f16.
inline ffi::Error expect_activation_dtype(const ffi::AnyBuffer& buf, const char* name) {
  if (is_activation_dtype(buf.element_type())) return ffi::Error::Success();
  return ffi::Error::InvalidArgument(std::string(name) + " has dtype " + dtype_name(buf.element_type()) +
                                     ", expected one of f32, bf16, f16");
}

// ngroups (the groups axis of B and C) must be >= 1 and divide dim.
inline ffi::Error check_ngroups(int64_t ngroups, int64_t dim, ffi::Span<const int64_t> b_dims) {
  if (ngroups >= 1 && dim % ngroups == 0) return ffi::Error::Success();
  return ffi::Error::InvalidArgument("ngroups = " + std::to_string(ngroups) + " (B has shape " + dims_str(b_dims) +
                                     ") must be >= 1 and divide dim = " + std::to_string(dim));
}

inline ffi::Error check_dstate(int64_t dstate, const ffi::AnyBuffer& ref, const char* name) {
  if (dstate < 1 || dstate > kMaxDstate)
    return ffi::Error::InvalidArgument("dstate must be in [1, " + std::to_string(kMaxDstate) + "], got " +
                                       std::to_string(dstate) + " (" + name + " has shape " +
                                       dims_str(ref.dimensions()) + ")");
  return ffi::Error::Success();
}

// The conv width from weight [dim, width] (after the leading dims), checked against the limits and dim.
inline ffi::Error get_conv_width(const ffi::AnyBuffer& weight, const Lead& lead, int64_t dim, int64_t* width) {
  auto wd = weight.dimensions();
  if (wd.size() != lead.dims.size() + 2)
    return ffi::Error::InvalidArgument("weight must be [dim, width], got " + dims_str(wd));
  *width = wd[lead.dims.size() + 1];
  if (*width < kMinConvWidth || *width > kMaxConvWidth)
    return ffi::Error::InvalidArgument("conv width must be in [" + std::to_string(kMinConvWidth) + ", " +
                                       std::to_string(kMaxConvWidth) + "], got " + std::to_string(*width) +
                                       " (weight has shape " + dims_str(wd) + ")");
  return expect_shape(weight, "weight", lead, {dim, *width});
}

// Byte offset of slice `i` of the leading dims for a buffer, or null for an absent optional one.
template <typename P>
inline P* slice_ptr(const ffi::AnyBuffer& buf, const Lead& lead, int64_t i) {
  if (buf.element_count() == 0) return nullptr;
  const int64_t per = static_cast<int64_t>(buf.size_bytes()) / lead.count;
  return reinterpret_cast<P*>(static_cast<char*>(const_cast<void*>(buf.untyped_data())) + i * per);
}

template <typename P>
inline P* slice_ptr(ffi::Result<ffi::AnyBuffer>& buf, const Lead& lead, int64_t i) {
  const int64_t per = static_cast<int64_t>(buf->size_bytes()) / lead.count;
  return reinterpret_cast<P*>(static_cast<char*>(buf->untyped_data()) + i * per);
}

#define MJ_RETURN_IF_ERROR(expr)            \
  do {                                      \
    ::xla::ffi::Error _err = (expr);        \
    if (_err.failure()) return _err;        \
  } while (0)

}  // namespace ffi_util
}  // namespace mamba_jax
