// XLA FFI CPU handler of ssd_scan. Absent optional operands (D, z, dt_bias, initial_state, seq_idx)
// arrive as empty arrays. The workspace result is the CUDA kernel's (chunk-parallel path): unused here.
#include "common/parallel.h"
#include "ssd_scan/args.h"
#include "ssd_scan/ssd_scan.h"

namespace ffi = xla::ffi;
using namespace mamba_jax;
using namespace mamba_jax::ffi_util;

namespace {

ffi::Error SsdScanImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer dt, ffi::AnyBuffer A, ffi::AnyBuffer B,
                       ffi::AnyBuffer C, ffi::AnyBuffer D, ffi::AnyBuffer z, ffi::AnyBuffer dt_bias,
                       ffi::AnyBuffer initial_state, ffi::AnyBuffer seq_idx, ffi::Result<ffi::AnyBuffer> y,
                       ffi::Result<ffi::AnyBuffer> final_state, ffi::Result<ffi::AnyBuffer> /*workspace*/,
                       bool dt_softplus, float dt_min, float dt_max, int64_t chunk_size) {
  SsdScanArgs a{x, dt, A, B, C, D, z, dt_bias, initial_state, seq_idx, y, final_state,
                dt_softplus, dt_min, dt_max, chunk_size};
  MJ_RETURN_IF_ERROR(a.check());
  if (a.empty()) return ffi::Error::Success();

  // Items are (batch, head), each the whole sequence; tasks below ~2^17 state-entry updates
  // (~10 us) are not worth a thread hand-off.
  const int64_t items = a.batch * a.nheads;
  const int64_t item_work = std::max<int64_t>(1, a.seqlen * a.headdim * a.dstate);
  const int64_t min_items = std::max<int64_t>(1, ((1 << 17) + item_work - 1) / item_work);
  return for_each_slice<float, bf16_t, f16_t>(a, [&](const SsdScanParams& p, auto tag) {
    cpu::parallel_for(pool, items, min_items, [&](int64_t b, int64_t e) {
      cpu::ssd_scan<typename decltype(tag)::type>(p, b, e);
    });
    return ffi::Error::Success();
  });
}

}  // namespace

MJ_DEFINE_CPU_HANDLER(ssd_scan, SsdScanImpl, ssd_scan_binding<ffi::ThreadPool>());
