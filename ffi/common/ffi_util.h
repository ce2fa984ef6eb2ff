// Helpers shared by the CPU and CUDA XLA FFI handlers: shape checks with readable errors, and the
// leading "vmap" dimensions that ffi_call(vmap_method="broadcast_all") prepends to every operand.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <sstream>
#include <string>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace mamba_jax {
namespace ffi_util {

namespace ffi = xla::ffi;

inline std::string dims_str(ffi::Span<const int64_t> d) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < d.size(); ++i) s << (i ? ", " : "") << d[i];
  s << "]";
  return s.str();
}

inline std::string dims_str(const std::vector<int64_t>& d) {
  return dims_str(ffi::Span<const int64_t>(d.data(), d.size()));
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

inline ffi::Error expect_dtype(const ffi::AnyBuffer& buf, const char* name, ffi::DataType want,
                               bool optional = false) {
  if (optional && buf.element_count() == 0) return ffi::Error::Success();
  if (buf.element_type() != want)
    return ffi::Error::InvalidArgument(std::string(name) + " has the wrong dtype (code " +
                                       std::to_string(static_cast<int>(buf.element_type())) +
                                       ", expected code " + std::to_string(static_cast<int>(want)) + ")");
  return ffi::Error::Success();
}

inline bool is_activation_dtype(ffi::DataType t) {
  return t == ffi::DataType::F32 || t == ffi::DataType::BF16 || t == ffi::DataType::F16;
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
