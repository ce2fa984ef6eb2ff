// XLA FFI CPU handlers for mamba_jax_selective_scan and mamba_jax_selective_state_update.
// Absent optional operands (D, z, delta_bias, initial_state) arrive as empty arrays.
#include "mamba_jax/cpu_kernels.h"
#include "../common/ffi_util.h"
#include "parallel.h"

namespace ffi = xla::ffi;
using namespace mamba_jax;
using namespace mamba_jax::ffi_util;

namespace {

template <typename Params, typename Fn>
void run_items(ffi::ThreadPool& pool, const Params& p, int64_t items, int64_t min_items, Fn kernel) {
  cpu::parallel_for(pool, items, min_items, [&](int64_t b, int64_t e) { kernel(p, b, e); });
}

ffi::Error SelectiveScanImpl(ffi::ThreadPool pool, ffi::AnyBuffer u, ffi::AnyBuffer delta,
                             ffi::AnyBuffer A, ffi::AnyBuffer Bm, ffi::AnyBuffer Cm, ffi::AnyBuffer Dskip,
                             ffi::AnyBuffer z, ffi::AnyBuffer delta_bias, ffi::AnyBuffer init,
                             ffi::Result<ffi::AnyBuffer> y, ffi::Result<ffi::AnyBuffer> last_state,
                             bool delta_softplus) {
  Lead lead;
  MJ_RETURN_IF_ERROR(get_lead(u, "u", 3, &lead));
  auto ud = u.dimensions();
  const size_t r = lead.dims.size();
  const int64_t batch = ud[r], seqlen = ud[r + 1], dim = ud[r + 2];
  auto bd = Bm.dimensions();
  if (bd.size() != r + 4) return ffi::Error::InvalidArgument("B must be [batch, seqlen, ngroups, dstate], got " + dims_str(bd));
  const int64_t ngroups = bd[r + 2], dstate = bd[r + 3];
  if (dstate < 1 || dstate > kMaxDstate) return ffi::Error::InvalidArgument("dstate must be in [1, 256], got " + std::to_string(dstate));
  MJ_RETURN_IF_ERROR(check_ngroups(ngroups, dim, bd));
  MJ_RETURN_IF_ERROR(expect_shape(delta, "delta", lead, {batch, seqlen, dim}));
  MJ_RETURN_IF_ERROR(expect_shape(A, "A", lead, {dim, dstate}));
  MJ_RETURN_IF_ERROR(expect_shape(Bm, "B", lead, {batch, seqlen, ngroups, dstate}));
  MJ_RETURN_IF_ERROR(expect_shape(Cm, "C", lead, {batch, seqlen, ngroups, dstate}));
  MJ_RETURN_IF_ERROR(expect_shape(Dskip, "D", lead, {dim}, true));
  MJ_RETURN_IF_ERROR(expect_shape(z, "z", lead, {batch, seqlen, dim}, true));
  MJ_RETURN_IF_ERROR(expect_shape(delta_bias, "delta_bias", lead, {dim}, true));
  MJ_RETURN_IF_ERROR(expect_shape(init, "initial_state", lead, {batch, dim, dstate}, true));
  MJ_RETURN_IF_ERROR(expect_shape(*y, "y", lead, {batch, seqlen, dim}));
  MJ_RETURN_IF_ERROR(expect_shape(*last_state, "last_state", lead, {batch, dim, dstate}));
  const auto dt = u.element_type();
  MJ_RETURN_IF_ERROR(expect_activation_dtype(u, "u"));
  MJ_RETURN_IF_ERROR(expect_dtype(delta, "delta", dt, false, "u"));
  MJ_RETURN_IF_ERROR(expect_dtype(Bm, "B", dt, false, "u"));
  MJ_RETURN_IF_ERROR(expect_dtype(Cm, "C", dt, false, "u"));
  MJ_RETURN_IF_ERROR(expect_dtype(z, "z", dt, true, "u"));
  MJ_RETURN_IF_ERROR(expect_dtype(*y, "y", dt, false, "u"));
  MJ_RETURN_IF_ERROR(expect_dtype(A, "A", ffi::DataType::F32));
  MJ_RETURN_IF_ERROR(expect_dtype(Dskip, "D", ffi::DataType::F32, true));
  MJ_RETURN_IF_ERROR(expect_dtype(delta_bias, "delta_bias", ffi::DataType::F32, true));
  MJ_RETURN_IF_ERROR(expect_dtype(init, "initial_state", ffi::DataType::F32, true));
  MJ_RETURN_IF_ERROR(expect_dtype(*last_state, "last_state", ffi::DataType::F32));
  if (batch == 0 || dim == 0) return ffi::Error::Success();

  // Wide items (many channel blocks) stream along the rows; just enough of them to keep every
  // thread busy. Tasks below ~2^17 lane-updates (~50 us) are not worth a thread hand-off.
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t per_item = cpu::scan_blocks_per_item(batch, dim, dstate, threads);
  const int64_t items = cpu::selective_scan_num_items(batch, dim, dstate, per_item);
  const int64_t item_work = per_item * cpu::kLanes * std::max<int64_t>(1, seqlen * dstate);
  const int64_t min_items = std::max<int64_t>(1, ((1 << 17) + item_work - 1) / item_work);
  for (int64_t i = 0; i < lead.count; ++i) {
    SelectiveScanParams p{};
    p.batch = batch; p.seqlen = seqlen; p.dim = dim; p.dstate = dstate; p.ngroups = ngroups;
    p.u_batch_stride = seqlen * dim; p.u_seq_stride = dim;
    p.bc_batch_stride = seqlen * ngroups * dstate; p.bc_seq_stride = ngroups * dstate; p.bc_group_stride = dstate;
    p.u = slice_ptr<const void>(u, lead, i);
    p.delta = slice_ptr<const void>(delta, lead, i);
    p.A = slice_ptr<const float>(A, lead, i);
    p.Bm = slice_ptr<const void>(Bm, lead, i);
    p.Cm = slice_ptr<const void>(Cm, lead, i);
    p.Dskip = slice_ptr<const float>(Dskip, lead, i);
    p.z = slice_ptr<const void>(z, lead, i);
    p.delta_bias = slice_ptr<const float>(delta_bias, lead, i);
    p.initial_state = slice_ptr<const float>(init, lead, i);
    p.y = slice_ptr<void>(y, lead, i);
    p.last_state = slice_ptr<float>(last_state, lead, i);
    p.delta_softplus = delta_softplus;
    auto scan = [&](auto kernel) {
      cpu::parallel_for(pool, items, min_items, [&](int64_t b, int64_t e) { kernel(p, per_item, b, e); });
    };
    switch (dt) {
      case ffi::DataType::F32: scan(cpu::selective_scan<float>); break;
      case ffi::DataType::BF16: scan(cpu::selective_scan<bf16_t>); break;
      default: scan(cpu::selective_scan<f16_t>); break;
    }
  }
  return ffi::Error::Success();
}

ffi::Error StateUpdateImpl(ffi::ThreadPool pool, ffi::AnyBuffer state, ffi::AnyBuffer x, ffi::AnyBuffer dt,
                           ffi::AnyBuffer A, ffi::AnyBuffer Bm, ffi::AnyBuffer Cm, ffi::AnyBuffer Dskip,
                           ffi::AnyBuffer z, ffi::AnyBuffer dt_bias, ffi::Result<ffi::AnyBuffer> y,
                           ffi::Result<ffi::AnyBuffer> new_state, bool dt_softplus) {
  Lead lead;
  MJ_RETURN_IF_ERROR(get_lead(state, "state", 3, &lead));
  auto sd = state.dimensions();
  const size_t r = lead.dims.size();
  const int64_t batch = sd[r], dim = sd[r + 1], dstate = sd[r + 2];
  auto bd = Bm.dimensions();
  if (bd.size() != r + 3) return ffi::Error::InvalidArgument("B must be [batch, ngroups, dstate], got " + dims_str(bd));
  const int64_t ngroups = bd[r + 1];
  if (dstate < 1 || dstate > kMaxDstate) return ffi::Error::InvalidArgument("dstate must be in [1, 256], got " + std::to_string(dstate));
  MJ_RETURN_IF_ERROR(check_ngroups(ngroups, dim, bd));
  MJ_RETURN_IF_ERROR(expect_shape(x, "x", lead, {batch, dim}));
  MJ_RETURN_IF_ERROR(expect_shape(dt, "dt", lead, {batch, dim}));
  MJ_RETURN_IF_ERROR(expect_shape(A, "A", lead, {dim, dstate}));
  MJ_RETURN_IF_ERROR(expect_shape(Bm, "B", lead, {batch, ngroups, dstate}));
  MJ_RETURN_IF_ERROR(expect_shape(Cm, "C", lead, {batch, ngroups, dstate}));
  MJ_RETURN_IF_ERROR(expect_shape(Dskip, "D", lead, {dim}, true));
  MJ_RETURN_IF_ERROR(expect_shape(z, "z", lead, {batch, dim}, true));
  MJ_RETURN_IF_ERROR(expect_shape(dt_bias, "dt_bias", lead, {dim}, true));
  MJ_RETURN_IF_ERROR(expect_shape(*y, "y", lead, {batch, dim}));
  MJ_RETURN_IF_ERROR(expect_shape(*new_state, "new_state", lead, {batch, dim, dstate}));
  const auto et = x.element_type();
  MJ_RETURN_IF_ERROR(expect_activation_dtype(x, "x"));
  MJ_RETURN_IF_ERROR(expect_dtype(dt, "dt", et, false, "x"));
  MJ_RETURN_IF_ERROR(expect_dtype(Bm, "B", et, false, "x"));
  MJ_RETURN_IF_ERROR(expect_dtype(Cm, "C", et, false, "x"));
  MJ_RETURN_IF_ERROR(expect_dtype(z, "z", et, true, "x"));
  MJ_RETURN_IF_ERROR(expect_dtype(*y, "y", et, false, "x"));
  MJ_RETURN_IF_ERROR(expect_dtype(state, "state", ffi::DataType::F32));
  MJ_RETURN_IF_ERROR(expect_dtype(A, "A", ffi::DataType::F32));
  MJ_RETURN_IF_ERROR(expect_dtype(Dskip, "D", ffi::DataType::F32, true));
  MJ_RETURN_IF_ERROR(expect_dtype(dt_bias, "dt_bias", ffi::DataType::F32, true));
  MJ_RETURN_IF_ERROR(expect_dtype(*new_state, "new_state", ffi::DataType::F32));
  if (batch == 0 || dim == 0) return ffi::Error::Success();

  const int64_t items = batch * cpu::num_channel_blocks(dim);
  // Items are (batch, block of 16 channels); tasks of >= ~2^17 lane-updates (~50 us).
  const int64_t min_items = std::max<int64_t>(1, (1 << 17) / (cpu::kLanes * dstate));
  for (int64_t i = 0; i < lead.count; ++i) {
    StateUpdateParams p{};
    p.batch = batch; p.dim = dim; p.dstate = dstate; p.ngroups = ngroups;
    p.state = slice_ptr<const float>(state, lead, i);
    p.new_state = slice_ptr<float>(new_state, lead, i);
    p.x = slice_ptr<const void>(x, lead, i);
    p.dt = slice_ptr<const void>(dt, lead, i);
    p.A = slice_ptr<const float>(A, lead, i);
    p.Bm = slice_ptr<const void>(Bm, lead, i);
    p.Cm = slice_ptr<const void>(Cm, lead, i);
    p.Dskip = slice_ptr<const float>(Dskip, lead, i);
    p.z = slice_ptr<const void>(z, lead, i);
    p.dt_bias = slice_ptr<const float>(dt_bias, lead, i);
    p.y = slice_ptr<void>(y, lead, i);
    p.dt_softplus = dt_softplus;
    switch (et) {
      case ffi::DataType::F32: run_items(pool, p, items, min_items, cpu::selective_state_update<float>); break;
      case ffi::DataType::BF16: run_items(pool, p, items, min_items, cpu::selective_state_update<bf16_t>); break;
      default: run_items(pool, p, items, min_items, cpu::selective_state_update<f16_t>); break;
    }
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MambaJaxSelectiveScanCpu, SelectiveScanImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()  // u
                                  .Arg<ffi::AnyBuffer>()  // delta
                                  .Arg<ffi::AnyBuffer>()  // A
                                  .Arg<ffi::AnyBuffer>()  // B
                                  .Arg<ffi::AnyBuffer>()  // C
                                  .Arg<ffi::AnyBuffer>()  // D
                                  .Arg<ffi::AnyBuffer>()  // z
                                  .Arg<ffi::AnyBuffer>()  // delta_bias
                                  .Arg<ffi::AnyBuffer>()  // initial_state
                                  .Ret<ffi::AnyBuffer>()  // y
                                  .Ret<ffi::AnyBuffer>()  // last_state
                                  .Attr<bool>("delta_softplus"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(MambaJaxSelectiveStateUpdateCpu, StateUpdateImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()  // state
                                  .Arg<ffi::AnyBuffer>()  // x
                                  .Arg<ffi::AnyBuffer>()  // dt
                                  .Arg<ffi::AnyBuffer>()  // A
                                  .Arg<ffi::AnyBuffer>()  // B
                                  .Arg<ffi::AnyBuffer>()  // C
                                  .Arg<ffi::AnyBuffer>()  // D
                                  .Arg<ffi::AnyBuffer>()  // z
                                  .Arg<ffi::AnyBuffer>()  // dt_bias
                                  .Ret<ffi::AnyBuffer>()  // y
                                  .Ret<ffi::AnyBuffer>()  // new_state
                                  .Attr<bool>("dt_softplus"));
