// XLA FFI CPU handler of selective_scan. Absent optional operands (D, z, delta_bias, initial_state)
// arrive as empty arrays.
#include "common/cpu_handler.h"
#include "selective_scan/args.h"
#include "selective_scan/selective_scan.h"

namespace ffi = xla::ffi;
using namespace mamba_jax;
using namespace mamba_jax::ffi_util;

namespace {

ffi::Error SelectiveScanImpl(ffi::ThreadPool pool, ffi::AnyBuffer u, ffi::AnyBuffer delta,
                             ffi::AnyBuffer A, ffi::AnyBuffer Bm, ffi::AnyBuffer Cm, ffi::AnyBuffer Dskip,
                             ffi::AnyBuffer z, ffi::AnyBuffer delta_bias, ffi::AnyBuffer init,
                             ffi::Result<ffi::AnyBuffer> y, ffi::Result<ffi::AnyBuffer> last_state,
                             bool delta_softplus) {
  SelectiveScanArgs a{u, delta, A, Bm, Cm, Dskip, z, delta_bias, init, y, last_state, delta_softplus};
  MJ_RETURN_IF_ERROR(a.check());
  if (a.empty()) return ffi::Error::Success();

  // Wide items (many channel blocks) stream along the rows; just enough of them to keep every
  // thread busy. Tasks below ~2^17 lane-updates (~50 us) are not worth a thread hand-off.
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t per_item = cpu::scan_blocks_per_item(a.batch, a.dim, a.dstate, threads);
  const int64_t items = cpu::selective_scan_num_items(a.batch, a.dim, a.dstate, per_item);
  const int64_t item_work = per_item * cpu::kLanes * std::max<int64_t>(1, a.seqlen * a.dstate);
  const int64_t min_items = std::max<int64_t>(1, ((1 << 17) + item_work - 1) / item_work);
  return parallel_slices(a, pool, items, min_items, [&](const auto& p, auto tag, int64_t b, int64_t e) {
    cpu::selective_scan<typename decltype(tag)::type>(p, per_item, b, e);
  });
}

}  // namespace

MJ_DEFINE_CPU_HANDLER(selective_scan, SelectiveScanImpl, selective_scan_binding<ffi::ThreadPool>());
