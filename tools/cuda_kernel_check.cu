// Standalone check of the CUDA kernels in ffi/<op>/<op>.cuh, without JAX.
//
//   cuda_kernel_check check   small cases of every kernel (odd sizes, every code path) against a
//                             float64 host reference; exit code 1 on any mismatch. Small enough to
//                             run under compute-sanitizer memcheck and racecheck.
//   cuda_kernel_check sweep   times selective-scan lane layouts (S states x G lanes) at dstate 16
//                             with CUDA events, to pick the default configuration.
//
// Build: nvcc -O3 -std=c++17 --use_fast_math -lineinfo -gencode arch=compute_90,code=sm_90 \
//          -I ffi tools/cuda_kernel_check.cu -o cuda_kernel_check
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "add_rms_norm/add_rms_norm.cuh"
#include "causal_conv1d/causal_conv1d.cuh"
#include "causal_conv1d_update/causal_conv1d_update.cuh"
#include "linear/linear.cuh"
#include "mamba2_step/mamba2_step.cuh"
#include "selective_scan/selective_scan.cuh"
#include "selective_state_update/selective_state_update.cuh"

using namespace mamba_jax;
using namespace mamba_jax::cuda;

#define CK(x)                                                                                  \
  do {                                                                                         \
    cudaError_t e_ = (x);                                                                      \
    if (e_ != cudaSuccess) {                                                                   \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(2);                                                                            \
    }                                                                                          \
  } while (0)

static std::mt19937_64 rng(1234);
static double normal(double s = 1.0) { return std::normal_distribution<double>(0.0, s)(rng); }
static double uniform(double a, double b) { return std::uniform_real_distribution<double>(a, b)(rng); }
static double positive_step(double) { return uniform(0.005, 0.15); }

// Host-side storage of one dtype: values are generated in double, rounded through T, and the
// rounded values are what the reference sees.
template <typename T> T to_t(double x);
template <> float to_t<float>(double x) { return float(x); }
template <> __nv_bfloat16 to_t<__nv_bfloat16>(double x) { return __float2bfloat16(float(x)); }
template <> __half to_t<__half>(double x) { return __float2half(float(x)); }
template <typename T> double to_d(T x);
template <> double to_d<float>(float x) { return x; }
template <> double to_d<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }
template <> double to_d<__half>(__half x) { return __half2float(x); }
template <typename T> const char* tname();
template <> const char* tname<float>() { return "f32"; }
template <> const char* tname<__nv_bfloat16>() { return "bf16"; }
template <> const char* tname<__half>() { return "f16"; }
template <typename T> double tol();
template <> double tol<float>() { return 2e-4; }
template <> double tol<__nv_bfloat16>() { return 1.5e-2; }
template <> double tol<__half>() { return 3e-3; }

template <typename T>
struct HostArr {
  std::vector<T> t;
  std::vector<double> d;  // the rounded values
  void fill(size_t n, double (*gen)(double), double arg) {
    t.resize(n); d.resize(n);
    for (size_t i = 0; i < n; ++i) { t[i] = to_t<T>(gen(arg)); d[i] = to_d<T>(t[i]); }
  }
};

template <typename T>
struct DevBuf {
  T* p = nullptr;
  size_t n = 0;
  explicit DevBuf(size_t count) : n(count) {
    if (n) CK(cudaMalloc(&p, n * sizeof(T)));
  }
  DevBuf(const std::vector<T>& h) : DevBuf(h.size()) {
    if (n) CK(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  ~DevBuf() { if (p) cudaFree(p); }
  std::vector<T> get() const {
    std::vector<T> h(n);
    if (n) CK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
  void poison() { if (n) CK(cudaMemset(p, 0xff, n * sizeof(T))); }  // NaN in every float type
};

static int g_failures = 0;

template <typename T>
static void compare(const char* what, const std::string& id, const std::vector<T>& got,
                    const std::vector<double>& want, double rtol) {
  double rms = 0;
  for (double w : want) rms += w * w;
  rms = want.empty() ? 1.0 : std::sqrt(rms / want.size());
  const double scale = std::max(1.0, rms);
  double worst = 0;
  size_t bad = 0, at = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double g = to_d<T>(got[i]);
    const double err = std::fabs(g - want[i]);
    const double bound = rtol * (scale + std::fabs(want[i]));
    if (!(err <= bound)) { ++bad; if (!(err <= worst)) { worst = err; at = i; } }
  }
  std::printf("  %-6s %-44s %s", what, id.c_str(), bad ? "FAIL" : "ok");
  if (bad) {
    std::printf("  %zu/%zu bad, worst at %zu: got %g want %g", bad, want.size(), at, to_d<T>(got[at]), want[at]);
    ++g_failures;
  }
  std::printf("\n");
}

static double softplus_d(double x) { return x > 20 ? x : std::log1p(std::exp(x)); }
static double silu_d(double x) { return x / (1 + std::exp(-x)); }

// selective_scan
struct ScanCase { int64_t B, L, D, N, G; bool has_D, has_z, has_bias, softplus, has_init; };

template <typename T>
static void check_scan(const ScanCase& c) {
  const int64_t B = c.B, L = c.L, D = c.D, N = c.N, G = c.G;
  HostArr<T> u, dl, z, Bm, Cm;
  u.fill(B * L * D, normal, 1.0);
  if (c.softplus) dl.fill(B * L * D, normal, 1.0);
  else dl.fill(B * L * D, positive_step, 0.0);  // without softplus delta is the step itself: keep it > 0
  z.fill(c.has_z ? B * L * D : 0, normal, 1.0);
  Bm.fill(B * L * G * N, normal, 1.0);
  Cm.fill(B * L * G * N, normal, 1.0);
  std::vector<float> A(D * N), Dk(c.has_D ? D : 0), bias(c.has_bias ? D : 0), init(c.has_init ? B * D * N : 0);
  for (auto& a : A) a = float(-std::exp(normal()));
  for (auto& v : Dk) v = float(normal());
  for (auto& v : bias) v = float(c.softplus ? std::log(std::expm1(uniform(1e-3, 1e-1))) : uniform(0.0, 0.05));
  for (auto& v : init) v = float(normal(0.5));
  // float64 reference on the rounded inputs
  std::vector<double> y(B * L * D), last(B * D * N);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t d = 0; d < D; ++d) {
      const int64_t g = d / (D / G);
      std::vector<double> h(N, 0.0);
      if (c.has_init) for (int64_t n = 0; n < N; ++n) h[n] = init[(b * D + d) * N + n];
      for (int64_t t = 0; t < L; ++t) {
        const int64_t i = (b * L + t) * D + d;
        double dt = dl.d[i] + (c.has_bias ? bias[d] : 0.0);
        if (c.softplus) dt = softplus_d(dt);
        double acc = 0;
        for (int64_t n = 0; n < N; ++n) {
          const int64_t bi = ((b * L + t) * G + g) * N + n;
          h[n] = std::exp(dt * A[d * N + n]) * h[n] + dt * u.d[i] * Bm.d[bi];
          acc += h[n] * Cm.d[bi];
        }
        if (c.has_D) acc += Dk[d] * u.d[i];
        if (c.has_z) acc *= silu_d(z.d[i]);
        y[i] = acc;
      }
      for (int64_t n = 0; n < N; ++n) last[(b * D + d) * N + n] = h[n];
    }
  DevBuf<T> du(u.t), ddl(dl.t), dz(z.t), dB(Bm.t), dC(Cm.t), dy(B * L * D);
  DevBuf<float> dA(A), dD(Dk), dbias(bias), dinit(init), dlast(B * D * N);
  dy.poison(); dlast.poison();
  SelectiveScanParams p{};
  p.batch = B; p.seqlen = L; p.dim = D; p.dstate = N; p.ngroups = G;
  p.u_batch_stride = L * D; p.u_seq_stride = D;
  p.bc_batch_stride = L * G * N; p.bc_seq_stride = G * N; p.bc_group_stride = N;
  p.u = du.p; p.delta = ddl.p; p.A = dA.p; p.Bm = dB.p; p.Cm = dC.p; p.Dskip = dD.p; p.z = dz.p;
  p.delta_bias = dbias.p; p.initial_state = dinit.p; p.y = dy.p; p.last_state = dlast.p;
  p.delta_softplus = c.softplus;
  // The launcher's pick (the time-parallel kernel where it applies), the lane kernel with and without the
  // sequence split of a small grid, at dstate 9..16 the register-capped lane kernel it takes for large
  // grids, and in bfloat16 the other block shapes of the time-parallel kernel.
  const char* names[] = {"", "-lane-nosplit", "-lane", "-mb4", "-tp4x8", "-tp8x8", "-tp16x8"};
  for (int variant = 0; variant < 7; ++variant) {
    if (variant == 3 && !(N > 8 && N <= 16)) continue;
    if (variant == 4 && !scan_tp_applies<T, 4>(p)) continue;
    if (variant == 5 && !(std::is_same_v<T, __nv_bfloat16> && scan_tp_applies<T, 8>(p))) continue;
    if (variant == 6 && !scan_tp_applies<T, 16>(p)) continue;
    dy.poison(); dlast.poison();
    if (variant == 0) CK(launch_selective_scan<T>(p, 0));
    else if (variant == 1) CK(launch_selective_scan_lane<T>(p, 0, false));
    else if (variant == 2) CK(launch_selective_scan_lane<T>(p, 0));
    else if (variant == 3) CK((launch_scan_cfg<T, 2, 8, 16, 1, 4>(p, 0)));
    else if (variant == 4) CK((launch_scan_tp<T, 4, 8, 3>(p, 0)));
    else if (variant == 5) CK((launch_scan_tp<T, 8, 8, 2>(p, 0)));
    else CK((launch_scan_tp<T, 16, 8, 1>(p, 0)));
    CK(cudaDeviceSynchronize());
    char id[160];
    std::snprintf(id, sizeof id, "B%lld-L%lld-D%lld-N%lld-G%lld-%s%s%s%s%s%s%s", (long long)B, (long long)L,
                  (long long)D, (long long)N, (long long)G, tname<T>(), c.has_D ? "+D" : "", c.has_z ? "+z" : "",
                  c.has_bias ? "+bias" : "", c.softplus ? "+sp" : "", c.has_init ? "+init" : "", names[variant]);
    compare<T>("scan y", id, dy.get(), y, tol<T>());
    compare<float>("scan h", id, dlast.get(), last, 2e-4);
  }
}

// selective_state_update
template <typename T>
static void check_update(int64_t B, int64_t D, int64_t N, int64_t G, bool in_place, int tl = -1, int block = 0,
                         bool tile_ok = true) {
  HostArr<T> x, dt, z, Bm, Cm;
  x.fill(B * D, normal, 1.0); dt.fill(B * D, normal, 1.0); z.fill(B * D, normal, 1.0);
  Bm.fill(B * G * N, normal, 1.0); Cm.fill(B * G * N, normal, 1.0);
  std::vector<float> A(D * N), Dk(D), bias(D), st(B * D * N);
  for (auto& a : A) a = float(-std::exp(normal()));
  for (auto& v : Dk) v = float(normal());
  for (auto& v : bias) v = float(std::log(std::expm1(uniform(1e-3, 1e-1))));
  for (auto& v : st) v = float(normal(0.5));
  std::vector<double> y(B * D), ns(B * D * N);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t d = 0; d < D; ++d) {
      const int64_t i = b * D + d, g = d / (D / G);
      const double s = softplus_d(dt.d[i] + bias[d]);
      double acc = 0;
      for (int64_t n = 0; n < N; ++n) {
        const double h = std::exp(s * A[d * N + n]) * st[i * N + n] + s * x.d[i] * Bm.d[(b * G + g) * N + n];
        ns[i * N + n] = h;
        acc += h * Cm.d[(b * G + g) * N + n];
      }
      y[i] = (acc + Dk[d] * x.d[i]) * silu_d(z.d[i]);
    }
  DevBuf<T> dx(x.t), ddt(dt.t), dz(z.t), dB(Bm.t), dC(Cm.t), dy(B * D);
  DevBuf<float> dA(A), dD(Dk), dbias(bias), dst(st), dns(in_place ? 0 : B * D * N);
  dy.poison(); dns.poison();
  SelectiveStateUpdateParams p{};
  p.batch = B; p.dim = D; p.dstate = N; p.ngroups = G;
  p.state = dst.p; p.new_state = in_place ? dst.p : dns.p; p.x = dx.p; p.dt = ddt.p; p.A = dA.p;
  p.Bm = dB.p; p.Cm = dC.p; p.Dskip = dD.p; p.z = dz.p; p.dt_bias = dbias.p; p.y = dy.p; p.dt_softplus = true;
  CK(launch_selective_state_update<T>(p, 0, tl, block, tile_ok));
  CK(cudaDeviceSynchronize());
  char id[160];
  std::snprintf(id, sizeof id, "B%lld-D%lld-N%lld-G%lld-%s%s-tl%d-block%d%s", (long long)B, (long long)D,
                (long long)N, (long long)G, tname<T>(), in_place ? "-inplace" : "", tl, block,
                tile_ok ? "" : "-generic");
  compare<T>("ssu y", id, dy.get(), y, tol<T>());
  compare<float>("ssu h", id, in_place ? dst.get() : dns.get(), ns, 2e-4);
}

// causal_conv1d
template <typename T>
static void check_conv(int64_t B, int64_t L, int64_t D, int64_t W, bool has_init, bool silu,
                       int64_t want_threads = 0) {
  const int64_t S = W - 1;
  HostArr<T> x, init;
  x.fill(B * L * D, normal, 1.0);
  init.fill(has_init ? B * D * S : 0, normal, 1.0);
  std::vector<float> w(D * W), bias(D);
  for (auto& v : w) v = float(normal(1.0 / std::sqrt(double(W))));
  for (auto& v : bias) v = float(normal(0.5));
  std::vector<double> y(B * L * D), fin(B * D * S);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t d = 0; d < D; ++d) {
      std::vector<double> hist(S + L);  // hist[j] = input at step j - S
      for (int64_t k = 0; k < S; ++k) hist[k] = has_init ? init.d[(b * D + d) * S + k] : 0.0;
      for (int64_t t = 0; t < L; ++t) hist[S + t] = x.d[(b * L + t) * D + d];
      for (int64_t t = 0; t < L; ++t) {
        double acc = bias[d];
        for (int64_t k = 0; k < W; ++k) acc += w[d * W + k] * hist[t + k];
        y[(b * L + t) * D + d] = silu ? silu_d(acc) : acc;
      }
      for (int64_t k = 0; k < S; ++k) fin[(b * D + d) * S + k] = hist[L + k];
    }
  DevBuf<T> dx(x.t), dinit(init.t), dy(B * L * D), dfin(B * D * S);
  DevBuf<float> dw(w), dbias(bias);
  dy.poison(); dfin.poison();
  CausalConv1dParams p{};
  p.batch = B; p.seqlen = L; p.dim = D; p.width = W;
  p.x = dx.p; p.weight = dw.p; p.bias = dbias.p; p.initial_state = dinit.p; p.y = dy.p; p.final_state = dfin.p;
  p.silu = silu;
  // the default vector kernel (8-byte vectors, groups of 16 rows), 16-byte vectors in groups of 4,
  // 4-byte vectors in groups of 32
  static const char* const kVariants[] = {"", "-16B-P4", "-4B-P32"};
  for (int variant = 0; variant < 3; ++variant) {
    dy.poison(); dfin.poison();
    if (variant == 0) CK(launch_causal_conv1d<T>(p, 0, want_threads));
    else if (variant == 1) CK((launch_causal_conv1d<T, 16, 4>(p, 0, want_threads)));
    else CK((launch_causal_conv1d<T, 4, 32>(p, 0, want_threads)));
    CK(cudaDeviceSynchronize());
    char id[160];
    std::snprintf(id, sizeof id, "B%lld-L%lld-D%lld-W%lld-%s%s%s-want%lld%s", (long long)B, (long long)L,
                  (long long)D, (long long)W, tname<T>(), has_init ? "+init" : "", silu ? "+silu" : "",
                  (long long)want_threads, kVariants[variant]);
    compare<T>("conv y", id, dy.get(), y, tol<T>());
    compare<T>("conv s", id, dfin.get(), fin, 0.0);
  }
}

template <typename T>
static void check_conv_update(int64_t B, int64_t D, int64_t W, bool in_place, int block = 0, bool vec_ok = true) {
  const int64_t S = W - 1;
  HostArr<T> x, st;
  x.fill(B * D, normal, 1.0);
  st.fill(B * D * S, normal, 1.0);
  std::vector<float> w(D * W), bias(D);
  for (auto& v : w) v = float(normal(1.0 / std::sqrt(double(W))));
  for (auto& v : bias) v = float(normal(0.5));
  std::vector<double> y(B * D), ns(B * D * S);
  for (int64_t i = 0; i < B * D; ++i) {
    const int64_t d = i % D;
    double acc = bias[d];
    for (int64_t k = 0; k < S; ++k) acc += w[d * W + k] * st.d[i * S + k];
    acc += w[d * W + S] * x.d[i];
    y[i] = silu_d(acc);
    for (int64_t k = 0; k + 1 < S; ++k) ns[i * S + k] = st.d[i * S + k + 1];
    ns[i * S + S - 1] = x.d[i];
  }
  DevBuf<T> dx(x.t), dst(st.t), dns(in_place ? 0 : B * D * S), dy(B * D);
  DevBuf<float> dw(w), dbias(bias);
  dy.poison(); dns.poison();
  CausalConv1dUpdateParams p{};
  p.batch = B; p.dim = D; p.width = W;
  p.x = dx.p; p.conv_state = dst.p; p.new_conv_state = in_place ? dst.p : dns.p; p.weight = dw.p;
  p.bias = dbias.p; p.y = dy.p; p.silu = true;
  CK(launch_causal_conv1d_update<T>(p, 0, block, vec_ok));
  CK(cudaDeviceSynchronize());
  char id[160];
  std::snprintf(id, sizeof id, "B%lld-D%lld-W%lld-%s%s-block%d%s", (long long)B, (long long)D, (long long)W,
                tname<T>(), in_place ? "-inplace" : "", block, vec_ok ? "" : "-scalar");
  compare<T>("cupd y", id, dy.get(), y, tol<T>());
  compare<T>("cupd s", id, in_place ? dst.get() : dns.get(), ns, 0.0);
}

// mamba2_step: the conv update + SiLU over C = H P + 2 G N channels, then the SSD state update on the
// split (the second kernel a programmatic dependent of the first). Both states are updated in place, as a
// decode loop runs them; with `pool`, row b takes slot (1 - b) mod (B + 2), the last row an out-of-range
// slot (no state touched, y = 0). The reference rounds the conv output to T, as the op does.
template <typename T>
static void check_mamba2_step(int64_t B, int64_t H, int64_t P, int64_t N, int64_t G, int64_t W, bool pool = false,
                              bool limit = false) {
  const int64_t C = H * P + 2 * G * N, S = W - 1, slots = pool ? B + 2 : B;
  const float dt_min = limit ? 0.02f : 0.0f, dt_max = limit ? 0.5f : INFINITY;
  std::vector<int32_t> idx(B);
  for (int64_t b = 0; b < B; ++b) idx[b] = b + 1 == B && pool ? int32_t(slots) : int32_t((slots + 1 - b) % slots);
  HostArr<T> xbc, dt, z, cst;
  xbc.fill(B * C, normal, 1.0); dt.fill(B * H, normal, 0.5); z.fill(B * H * P, normal, 1.0);
  cst.fill(slots * C * S, normal, 1.0);
  std::vector<float> w(C * W), cb(C), A(H), Dk(H * P), bias(H), st(slots * H * P * N);
  for (auto& v : w) v = float(normal(1.0 / std::sqrt(double(W))));
  for (auto& v : cb) v = float(normal(0.5));
  for (auto& v : A) v = float(-std::exp(normal(0.5)));
  for (auto& v : Dk) v = float(normal());
  for (auto& v : bias) v = float(std::log(std::expm1(uniform(1e-3, 1e-1))));
  for (auto& v : st) v = float(normal(0.5));
  std::vector<double> y(B * H * P, 0.0), ncs(cst.d), nst(st.begin(), st.end()), u(C);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t slot = pool ? idx[b] : b;
    if (slot < 0 || slot >= slots) continue;  // y stays 0
    for (int64_t c = 0; c < C; ++c) {
      const double* s = cst.d.data() + (slot * C + c) * S;
      double acc = cb[c] + w[c * W + S] * xbc.d[b * C + c];
      for (int64_t k = 0; k < S; ++k) acc += w[c * W + k] * s[k];
      u[c] = to_d<T>(to_t<T>(silu_d(acc)));
      for (int64_t k = 0; k < S; ++k) ncs[(slot * C + c) * S + k] = k + 1 < S ? s[k + 1] : xbc.d[b * C + c];
    }
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / (H / G);
      const double d = std::min(std::max(softplus_d(dt.d[b * H + h] + bias[h]), double(dt_min)), double(dt_max));
      const double decay = std::exp(d * A[h]);
      const double* Bv = u.data() + H * P + g * N;
      const double* Cv = Bv + G * N;
      for (int64_t p = 0; p < P; ++p) {
        const double x = u[h * P + p];
        double* hs = nst.data() + ((slot * H + h) * P + p) * N;
        double acc = 0;
        for (int64_t n = 0; n < N; ++n) {
          hs[n] = decay * hs[n] + d * x * Bv[n];
          acc += hs[n] * Cv[n];
        }
        y[(b * H + h) * P + p] = (acc + Dk[h * P + p] * x) * silu_d(z.d[(b * H + h) * P + p]);
      }
    }
  }
  DevBuf<T> dxbc(xbc.t), ddt(dt.t), dz(z.t), dcs(cst.t), dws(B * C), dy(B * H * P);
  DevBuf<float> dw(w), dcb(cb), dA(A), dD(Dk), dbias(bias), dst(st);
  DevBuf<int32_t> didx(pool ? idx : std::vector<int32_t>());
  dws.poison(); dy.poison();
  Mamba2StepParams p{};
  CausalConv1dUpdateParams& cp = p.conv;
  cp.batch = B; cp.dim = C; cp.width = W; cp.n_slots = slots; cp.state_indices = didx.p;
  cp.x = dxbc.p; cp.conv_state = dcs.p; cp.new_conv_state = dcs.p; cp.weight = dw.p; cp.bias = dcb.p; cp.y = dws.p;
  cp.silu = true;
  SsdStateUpdateParams& sp = p.ssm;
  sp.batch = B; sp.nheads = H; sp.headdim = P; sp.dstate = N; sp.ngroups = G; sp.n_slots = slots;
  sp.x_stride = C; sp.bc_stride = C; sp.state_indices = didx.p; sp.state = dst.p; sp.new_state = dst.p;
  sp.x = dws.p; sp.Bm = dws.p + H * P; sp.Cm = dws.p + H * P + G * N; sp.dt = ddt.p; sp.A = dA.p; sp.Dskip = dD.p;
  sp.z = dz.p; sp.dt_bias = dbias.p; sp.y = dy.p; sp.dt_min = dt_min; sp.dt_max = dt_max; sp.dt_softplus = true;
  CK(launch_mamba2_step<T>(p, 0));
  CK(cudaDeviceSynchronize());
  char id[160];
  std::snprintf(id, sizeof id, "B%lld-H%lld-P%lld-N%lld-G%lld-W%lld-%s%s%s", (long long)B, (long long)H, (long long)P,
                (long long)N, (long long)G, (long long)W, tname<T>(), pool ? "-pool" : "", limit ? "-limit" : "");
  compare<T>("m2s y", id, dy.get(), y, tol<T>());
  compare<T>("m2s cs", id, dcs.get(), ncs, 0.0);
  // a conv output one ulp apart (the reference rounds double, the kernel float) moves the state by dt x B's ulp
  compare<float>("m2s h", id, dst.get(), nst, std::is_same<T, float>::value ? 2e-4 : tol<T>());
}

// linear (decode GEMV)
template <typename T>
static void check_linear(int64_t M, int64_t K, int64_t N) {
  HostArr<T> x, w;
  x.fill(M * K, normal, 1.0);
  w.fill(K * N, normal, 1.0 / std::sqrt(double(K)));
  std::vector<double> y(M * N, 0.0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t n = 0; n < N; ++n) y[m * N + n] += x.d[m * K + k] * w.d[k * N + n];
  DevBuf<T> dx(x.t), dw(w.t), dy(M * N);
  dy.poison();
  LinearParams p{M, K, N, dx.p, dw.p, dy.p};
  CK(launch_linear<T>(p, 0));
  CK(cudaDeviceSynchronize());
  char id[96];
  std::snprintf(id, sizeof id, "M%lld-K%lld-N%lld-%s", (long long)M, (long long)K, (long long)N, tname<T>());
  compare<T>("linear y", id, dy.get(), y, tol<T>());
}

// v with o > 0 zero elements put in front, or its first -o elements dropped.
template <typename E>
static std::vector<E> shifted_by(const std::vector<E>& v, int64_t o) {
  if (o <= 0) return std::vector<E>(v.begin() - o, v.end());
  std::vector<E> r(v.size() + o);
  std::copy(v.begin(), v.end(), r.begin() + o);
  return r;
}

// add_rms_norm: T the activation dtype (y), H the residual's (h, h_new), S scale's, O x's. `misalign`
// offsets every operand by one element (the launcher must then take the scalar path).
template <typename T, typename H, typename S = float, typename O = T>
static void check_add_rms_norm(int64_t R, int64_t F, int block = 0, bool vec_ok = true, bool misalign = false) {
  HostArr<H> h;
  HostArr<T> y;
  HostArr<S> scale;
  h.fill(R * F, normal, 2.0);
  y.fill(R * F, normal, 1.0);
  scale.fill(F, [](double) { return 1.0 + normal(0.3); }, 0.0);
  const float eps = 1e-5f;
  std::vector<double> hn(R * F), x(R * F);
  for (int64_t r = 0; r < R; ++r) {
    double ss = 0;
    for (int64_t f = 0; f < F; ++f) {
      const int64_t i = r * F + f;
      hn[i] = h.d[i] + y.d[i];
      const double stored = to_d<H>(to_t<H>(hn[i]));  // the mean is over h_new as stored
      ss += stored * stored;
    }
    const double inv = 1.0 / std::sqrt(ss / double(F) + eps);
    for (int64_t f = 0; f < F; ++f) x[r * F + f] = to_d<H>(to_t<H>(hn[r * F + f])) * inv * scale.d[f];
  }
  const int64_t o = misalign ? 1 : 0;
  DevBuf<H> dh(shifted_by(h.t, o)), dhn(R * F + o);
  DevBuf<T> dy(shifted_by(y.t, o));
  DevBuf<S> dscale(shifted_by(scale.t, o));
  DevBuf<O> dx(R * F + o);
  dhn.poison(); dx.poison();
  AddRmsNormParams p{};
  p.rows = R; p.features = F; p.eps = eps;
  p.h = dh.p + o; p.y = dy.p + o; p.scale = dscale.p + o; p.h_new = dhn.p + o; p.x = dx.p + o;
  p.h_f32 = std::is_same<H, float>::value; p.scale_f32 = std::is_same<S, float>::value;
  p.out_f32 = std::is_same<O, float>::value;
  CK(launch_add_rms_norm<T>(p, 0, block, vec_ok));
  CK(cudaDeviceSynchronize());
  char id[160];
  std::snprintf(id, sizeof id, "R%lld-F%lld-y%s-h%s-scale%s-x%s-block%d%s%s", (long long)R, (long long)F, tname<T>(),
                tname<H>(), tname<S>(), tname<O>(), block, vec_ok ? "" : "-scalar", misalign ? "-misaligned" : "");
  compare<H>("arn h", id, shifted_by(dhn.get(), -o), hn, tol<H>());
  compare<O>("arn x", id, shifted_by(dx.get(), -o), x, std::max(tol<H>(), tol<O>()));
}

static int run_checks() {
  std::printf("selective_scan\n");
  check_scan<__nv_bfloat16>({2, 150, 64, 16, 1, true, true, true, true, false});
  check_scan<__nv_bfloat16>({1, 64, 32, 16, 1, false, false, false, true, true});
  check_scan<float>({2, 70, 20, 16, 1, true, true, true, true, true});     // scalar rows (D % 8 != 0)
  check_scan<float>({1, 65, 64, 16, 2, true, false, true, false, false});  // two groups, one launch
  check_scan<__half>({1, 33, 48, 5, 2, true, true, true, true, false});    // dstate 5: scalar B/C
  check_scan<float>({1, 40, 30, 64, 3, true, true, true, true, true});     // group of 10: launch per group
  check_scan<__nv_bfloat16>({1, 20, 16, 256, 1, true, true, true, true, true});  // > 48 KB shared memory
  check_scan<__nv_bfloat16>({1, 0, 16, 16, 1, true, true, true, true, true});    // seqlen 0: last = init
  check_scan<float>({1, 17, 8, 1, 1, true, true, true, true, false});
  check_scan<__half>({3, 100, 40, 32, 1, true, true, true, true, false});
  check_scan<float>({1, 30, 24, 8, 1, true, true, true, true, false});
  check_scan<float>({1, 30, 24, 128, 1, true, true, true, true, false});
  check_scan<__nv_bfloat16>({2, 131, 40, 16, 1, true, true, true, true, true});  // D % 16 != 0: partial block
  check_scan<__nv_bfloat16>({1, 70, 48, 16, 2, true, true, true, true, false});  // group of 24: launch per group
  check_scan<__nv_bfloat16>({3, 70, 2128, 16, 1, true, true, true, true, true});  // 399 blocks: > 3 per SM on 132 SMs
  // time-parallel kernel: several chunks of 256 steps with a partial last one, a long sequence (the
  // carried state over 4099 steps), float16 with 3 groups of 8 channels, float32 with dstate 8
  check_scan<__nv_bfloat16>({2, 1000, 64, 16, 1, true, true, true, true, true});
  check_scan<__nv_bfloat16>({1, 4099, 32, 16, 1, true, true, true, true, false});
  check_scan<__half>({2, 600, 24, 8, 3, true, true, true, true, true});
  check_scan<float>({1, 513, 12, 8, 1, true, false, false, true, true});
  check_scan<__half>({1, 300, 32, 16, 1, true, true, true, true, true});   // 16-channel blocks, float16
  check_scan<float>({2, 290, 48, 12, 1, true, true, true, true, true});    // 16-channel blocks, dstate 12
  check_scan<float>({1, 64, 32, 4, 1, true, true, true, true, true});            // dstate 4 = one f32 vector
  // the sequence split (small grids, D % 16 == 0): pieces of a multiple of the staging chunk, the last
  // piece longer; with and without an initial state, two groups in one launch, dstate 8 and 64
  check_scan<__nv_bfloat16>({1, 1000, 64, 16, 1, true, true, true, true, true});
  check_scan<__nv_bfloat16>({2, 777, 32, 16, 1, true, true, true, true, false});
  check_scan<float>({1, 517, 64, 16, 2, true, false, true, true, true});
  check_scan<__half>({1, 700, 48, 8, 1, true, true, true, true, true});
  check_scan<float>({1, 400, 16, 64, 1, true, true, true, false, true});
  check_scan<__nv_bfloat16>({1, 2048, 1536, 16, 1, true, true, true, true, true});  // the benchmark's D1536
  std::printf("selective_state_update\n");
  check_update<__nv_bfloat16>(3, 40, 16, 1, false);
  check_update<__nv_bfloat16>(3, 40, 16, 1, true);
  check_update<float>(2, 10, 5, 2, false);
  check_update<__half>(1, 24, 256, 4, true);
  check_update<float>(2, 7, 1, 1, false);
  check_update<__nv_bfloat16>(5, 34, 32, 2, true);   // rows kernel, 8 lanes per row, partial block
  check_update<float>(2, 100, 4, 1, false);          // rows kernel, 1 lane per row
  check_update<__half>(1, 70, 128, 1, true);         // rows kernel, 32 lanes per row
  check_update<float>(3, 13, 8, 1, true);
  check_update<__nv_bfloat16>(1, 24, 12, 1, false);  // dstate % 4 == 0 but not a power of two: generic
  // the lane and block choices the kernels mode sweeps (256 threads: the largest the kernel declares)
  for (int tl : {0, 1, 2})
    for (int block : {64, 256}) check_update<__nv_bfloat16>(3, 72, 16, 1, true, tl, block);
  check_update<float>(2, 40, 64, 2, false, 3, 64);
  // tile kernel: every (lanes, float4s per lane) it instantiates, partial blocks; and the generic kernel
  for (int tl : {0, 1, 2, 3})
    for (int64_t n : {int64_t(4), int64_t(8), int64_t(16), int64_t(32), int64_t(64), int64_t(128)})
      if ((int64_t(4) << tl) <= n && n <= (int64_t(16) << tl)) check_update<__nv_bfloat16>(3, 37, n, 1, true, tl, 128);
  check_update<__half>(2, 48, 16, 4, false, 2, 64);
  check_update<float>(5, 30, 32, 2, true, 1, 256);
  check_update<__nv_bfloat16>(3, 40, 16, 1, true, -1, 0, false);
  check_update<__nv_bfloat16>(2, 33, 64, 1, false, -1, 0, false);
  std::printf("causal_conv1d\n");
  check_conv<__nv_bfloat16>(2, 37, 64, 4, true, true);
  check_conv<__nv_bfloat16>(1, 2048, 24, 4, false, true);
  check_conv<float>(2, 1, 12, 2, true, false);
  check_conv<__half>(1, 3, 20, 8, true, true);   // seqlen < width - 1: state reaches into init
  check_conv<__nv_bfloat16>(1, 0, 16, 3, true, false);
  check_conv<float>(2, 19, 10, 4, false, true);  // scalar path
  check_conv<__half>(1, 9, 16, 5, true, false);
  check_conv<__nv_bfloat16>(2, 37, 64, 4, true, true, 1);  // one span of 48 steps, a partial last group
  check_conv<float>(1, 1000, 24, 4, true, true, 30);       // 3 spans of 336 steps
  check_conv<__half>(2, 5, 16, 8, true, false, 1);         // seqlen < width - 1, one span
  check_conv<__nv_bfloat16>(3, 129, 40, 3, false, true, 10);
  check_conv<__nv_bfloat16>(2, 200, 32, 4, true, true, 112);  // 7 spans of 32 steps: halos from the previous span
  check_conv<float>(1, 100, 8, 8, true, true, 40);            // width 8: a 7-row halo, spans of 16
  std::printf("linear (GEMV)\n");
  check_linear<__nv_bfloat16>(1, 768, 3072);   // clusters of 4
  check_linear<__nv_bfloat16>(3, 1536, 80);    // ragged last tile, clusters of 8
  check_linear<float>(8, 517, 36);             // K tail, f32 tiles of 32
  check_linear<__half>(12, 200, 64);           // M > 8: two launches
  check_linear<__nv_bfloat16>(2, 40, 16);      // K < 64: no cluster
  check_linear<float>(1, 0, 8);                // K = 0: zeros
  std::printf("causal_conv1d_update\n");
  check_conv_update<__nv_bfloat16>(2, 50, 4, true);
  check_conv_update<float>(3, 17, 8, false);
  check_conv_update<__half>(1, 9, 2, true);
  for (int block : {32, 64, 128}) check_conv_update<__nv_bfloat16>(3, 50, 4, true, block);
  // vector path (dim a multiple of 16 / sizeof(T)): every width, partial blocks, and the scalar kernel
  for (int64_t w = 2; w <= 8; ++w) check_conv_update<__nv_bfloat16>(3, 40, w, w % 2 == 0, 32);
  check_conv_update<float>(2, 36, 4, true, 64);
  check_conv_update<float>(1, 12, 7, false, 0);
  check_conv_update<__half>(5, 24, 3, true, 128);
  check_conv_update<__nv_bfloat16>(2, 64, 4, true, 0, false);
  std::printf("mamba2_step\n");
  check_mamba2_step<__nv_bfloat16>(1, 80, 64, 128, 1, 4);  // mamba2-2.7b's layer
  check_mamba2_step<__nv_bfloat16>(4, 80, 64, 128, 1, 4);
  check_mamba2_step<float>(3, 3, 5, 7, 3, 3, false, true);  // odd: scalar conv and state paths
  check_mamba2_step<__nv_bfloat16>(4, 3, 5, 7, 1, 4, true);  // odd, a pool with an out-of-range slot
  check_mamba2_step<float>(2, 3, 5, 16, 1, 4);               // dstate 16 but B misaligned in the row: scalar
  check_mamba2_step<__half>(5, 6, 16, 16, 2, 2, true, true);  // vector paths, pool
  check_mamba2_step<__nv_bfloat16>(2, 4, 8, 256, 1, 8);      // dstate 256: two float4s per lane
  std::printf("add_rms_norm\n");
  using bf = __nv_bfloat16;
  check_add_rms_norm<bf, float>(3, 2560);          // vector path, the model's float32 residual
  check_add_rms_norm<bf, bf>(4, 768);              // bf16 residual
  check_add_rms_norm<bf, float>(2, 7);             // F % 8 != 0: scalar path, one partial warp
  check_add_rms_norm<bf, bf>(5, 33);
  check_add_rms_norm<__half, float>(1, 4097);      // scalar path past its 16 register chunks
  check_add_rms_norm<__half, __half>(2, 4097);
  check_add_rms_norm<float, float>(3, 768);
  check_add_rms_norm<float, float>(2, 101);
  check_add_rms_norm<bf, float>(2, 8200);          // vector path past its 4 register chunks
  check_add_rms_norm<bf, bf>(3, 2560, 32);         // 32 threads: 10 chunks each, 6 reread from h_new
  check_add_rms_norm<bf, float>(3, 2560, 0, false);
  check_add_rms_norm<bf, float>(2, 2560, 0, true, true);  // misaligned operands: scalar path
  check_add_rms_norm<bf, bf, bf>(2, 768);                 // scale in the activation dtype
  check_add_rms_norm<bf, float, float, float>(2, 768);    // x in float32
  check_add_rms_norm<bf, bf, bf, float>(3, 40);
  check_add_rms_norm<__half, __half, __half, float>(2, 24);
  check_add_rms_norm<bf, float>(0, 2560);          // no rows: no launch
  std::printf("%s: %d failing comparison(s)\n", g_failures ? "FAILED" : "PASSED", g_failures);
  return g_failures ? 1 : 0;
}

// lane-layout sweep
template <int S, int G, int K = 8, int UNR = 1, int MB = 0>
static float time_scan(const SelectiveScanParams& p, int reps) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b));
  for (int i = 0; i < 3; ++i) CK((launch_scan_cfg<__nv_bfloat16, S, G, K, UNR, MB>(p, 0)));
  std::vector<float> ms(reps);
  for (int i = 0; i < reps; ++i) {
    CK(cudaEventRecord(a));
    CK((launch_scan_cfg<__nv_bfloat16, S, G, K, UNR, MB>(p, 0)));
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    CK(cudaEventElapsedTime(&ms[i], a, b));
  }
  std::sort(ms.begin(), ms.end());
  return ms[reps / 2];
}

static int run_sweep() {
  struct Shape { int64_t B, L, D; };
  const Shape shapes[] = {{1, 2048, 5120}, {4, 2048, 5120}, {1, 8192, 5120}, {1, 2048, 1536}};
  for (const Shape& s : shapes) {
    const int64_t N = 16;
    DevBuf<__nv_bfloat16> u(s.B * s.L * s.D), dl(s.B * s.L * s.D), z(s.B * s.L * s.D), y(s.B * s.L * s.D);
    DevBuf<__nv_bfloat16> Bm(s.B * s.L * N), Cm(s.B * s.L * N);
    DevBuf<float> A(s.D * N), Dk(s.D), bias(s.D), last(s.B * s.D * N);
    // Realistic values matter for timing (no zeros): fill on the host once.
    auto fillh = [](auto& buf, double lo, double hi) {
      using E = typename std::remove_reference<decltype(*buf.p)>::type;
      std::vector<E> h(buf.n);
      for (auto& v : h) v = to_t<E>(uniform(lo, hi));
      CK(cudaMemcpy(buf.p, h.data(), buf.n * sizeof(E), cudaMemcpyHostToDevice));
    };
    fillh(u, -1, 1); fillh(dl, -1, 1); fillh(z, -1, 1); fillh(Bm, -1, 1); fillh(Cm, -1, 1);
    fillh(A, -3, -0.1); fillh(Dk, -1, 1); fillh(bias, -5, -2);
    SelectiveScanParams p{};
    p.batch = s.B; p.seqlen = s.L; p.dim = s.D; p.dstate = N; p.ngroups = 1;
    p.u_batch_stride = s.L * s.D; p.u_seq_stride = s.D;
    p.bc_batch_stride = s.L * N; p.bc_seq_stride = N; p.bc_group_stride = N;
    p.u = u.p; p.delta = dl.p; p.A = A.p; p.Bm = Bm.p; p.Cm = Cm.p; p.Dskip = Dk.p; p.z = z.p;
    p.delta_bias = bias.p; p.initial_state = nullptr; p.y = y.p; p.last_state = last.p; p.delta_softplus = true;
    if (std::getenv("SWEEP_LAYOUTS")) {
      const float t14 = time_scan<4, 4>(p, 20), t28 = time_scan<2, 8>(p, 20), t116 = time_scan<1, 16>(p, 20);
      std::printf("sweep B%lld L%lld D%lld N16 bf16: S4xG4 %.4f ms  S2xG8 %.4f ms  S1xG16 %.4f ms\n",
                  (long long)s.B, (long long)s.L, (long long)s.D, t14, t28, t116);
    }
    // S2xG8: 8 or 16 channels per block; registers free (MB 0) or capped so MB blocks fit per SM.
    const float k8 = time_scan<2, 8, 8>(p, 20), k16 = time_scan<2, 8, 16>(p, 20);
    const float k8m8 = time_scan<2, 8, 8, 1, 8>(p, 20), k16m4 = time_scan<2, 8, 16, 1, 4>(p, 20);
    std::printf("sweep B%lld L%lld D%lld N16 bf16 S2xG8 (channels per block, min blocks): 8,- %.4f  16,- %.4f  "
                "8,8 %.4f  16,4 %.4f ms\n", (long long)s.B, (long long)s.L, (long long)s.D, k8, k16, k8m8, k16m4);
  }
  return 0;
}

// kernel-only times (no JAX)
template <typename F>
static float time_ms(F launch, int reps = 20) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b));
  for (int i = 0; i < 3; ++i) CK(launch());
  std::vector<float> ms(reps);
  for (int i = 0; i < reps; ++i) {
    CK(cudaEventRecord(a)); CK(launch()); CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b)); CK(cudaEventElapsedTime(&ms[i], a, b));
  }
  std::sort(ms.begin(), ms.end());
  return ms[reps / 2];
}

// per launch of `n` back-to-back launches between two events (what a graph or a loop sees; a single
// launch timed alone adds the launch latency), median of `reps`.
template <typename F>
static float time_burst_ms(F launch, int n = 64, int reps = 15) {
  return time_ms([&] {
    for (int i = 0; i < n - 1; ++i) CK(launch());
    return launch();
  }, reps) / n;
}

template <typename E>
static void fill_uniform(DevBuf<E>& buf, double lo, double hi) {
  std::vector<E> h(buf.n);
  for (auto& v : h) v = to_t<E>(uniform(lo, hi));
  CK(cudaMemcpy(buf.p, h.data(), buf.n * sizeof(E), cudaMemcpyHostToDevice));
}

// Ceiling of the state update's traffic: an in-place read-modify-write of float4s, one per thread,
// with the streaming (evict-first) hints or plain accesses.
template <bool kStream>
__global__ void rmw_kernel(float4* p, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float4 v = kStream ? __ldcs(p + i) : p[i];
  v.x = fmaf(v.x, 0.5f, 1.0f); v.y = fmaf(v.y, 0.5f, 1.0f); v.z = fmaf(v.z, 0.5f, 1.0f); v.w = fmaf(v.w, 0.5f, 1.0f);
  if (kStream) __stcs(p + i, v); else p[i] = v;
}

static int run_kernel_times() {
  using bf = __nv_bfloat16;
  {  // in-place float4 read-modify-write of one B256 D5120 N16 state (84 MB): rotating over 5 copies / one
    const int64_t n4 = int64_t(256) * 5120 * 16 / 4, copies = 5;
    DevBuf<float4> buf(copies * n4);
    CK(cudaMemset(buf.p, 0, copies * n4 * sizeof(float4)));
    const double gb = 2.0 * n4 * 16 / 1e9;
    for (int stream : {1, 0})
      for (int64_t nc : {copies, int64_t(1)}) {
        int i = 0;
        const float t = time_burst_ms([&] {
          float4* q = buf.p + (i++ % nc) * n4;
          if (stream) rmw_kernel<true><<<unsigned((n4 + 127) / 128), 128>>>(q, n4);
          else rmw_kernel<false><<<unsigned((n4 + 127) / 128), 128>>>(q, n4);
          return cudaGetLastError();
        });
        std::printf("ceiling in-place float4 rmw 84 MB (%s, %lld copies): %.4f ms, %.0f GB/s (r+w)\n",
                    stream ? "streaming hints" : "plain", (long long)nc, t, gb / (t * 1e-3));
      }
  }
  {  // causal_conv1d B4 L2048 D5120 W4 silu bias
    const int64_t B = 4, L = 2048, D = 5120, W = 4;
    DevBuf<bf> x(B * L * D), y(B * L * D), fin(B * D * (W - 1));
    DevBuf<float> w(D * W), bias(D);
    fill_uniform(x, -1, 1); fill_uniform(w, -1, 1); fill_uniform(bias, -1, 1);
    CausalConv1dParams p{};
    p.batch = B; p.seqlen = L; p.dim = D; p.width = W; p.x = x.p; p.weight = w.p; p.bias = bias.p;
    p.initial_state = nullptr; p.y = y.p; p.final_state = fin.p; p.silu = true;
    auto report = [&](const char* what, int64_t want, float ms) {
      std::printf("kernel causal_conv1d B4 L2048 D5120 W4 bf16 (%s, want %lld threads): %.4f ms, %.0f GB/s (x + y)\n",
                  what, (long long)want, ms, 2.0 * B * L * D * 2 / (ms * 1e-3) / 1e9);
    };
    // per launch of 16 back to back (x and y, 168 MB, exceed L2)
    auto t = [&](auto launch) { return time_burst_ms(launch, 16, 15); };
    for (int64_t want : {int64_t(0), int64_t(33792), int64_t(135168)}) {  // 0: the default (67584)
      report("default: 8B P16", want, t([&] { return launch_causal_conv1d<bf>(p, 0, want); }));
      report("8B P8", want, t([&] { return launch_causal_conv1d<bf, 8, 8>(p, 0, want); }));
      report("8B P24", want, t([&] { return launch_causal_conv1d<bf, 8, 24>(p, 0, want); }));
      report("8B P32", want, t([&] { return launch_causal_conv1d<bf, 8, 32>(p, 0, want); }));
      report("4B P16", want, t([&] { return launch_causal_conv1d<bf, 4, 16>(p, 0, want); }));
      report("4B P32", want, t([&] { return launch_causal_conv1d<bf, 4, 32>(p, 0, want); }));
      report("16B P8", want, t([&] { return launch_causal_conv1d<bf, 16, 8>(p, 0, want); }));
      report("16B P16", want, t([&] { return launch_causal_conv1d<bf, 16, 16>(p, 0, want); }));
    }
  }
  {  // selective_state_update D5120 N16, in place. At B64 / B256 the launches rotate over state copies
     // (>= 320 MB in all) so that each reads its state from DRAM, as in a program (one copy of 42 MB
     // at B64 stays partly in the 50 MB L2); at B1 one copy, L2-resident as in a chain of calls.
    const int64_t B = 256, D = 5120, N = 16, copies = 8;
    DevBuf<bf> x(B * D), dt(B * D), z(B * D), Bm(B * N), Cm(B * N), y(B * D);
    DevBuf<float> st(copies * B * D * N), A(D * N), Dk(D), bias(D);
    fill_uniform(x, -1, 1); fill_uniform(dt, -1, 1); fill_uniform(z, -1, 1); fill_uniform(Bm, -1, 1);
    fill_uniform(Cm, -1, 1); fill_uniform(st, -1, 1); fill_uniform(A, -2, -0.1); fill_uniform(Dk, -1, 1);
    fill_uniform(bias, -5, -2);
    SelectiveStateUpdateParams p{};
    p.batch = B; p.dim = D; p.dstate = N; p.ngroups = 1; p.state = st.p; p.new_state = st.p; p.x = x.p;
    p.dt = dt.p; p.A = A.p; p.Bm = Bm.p; p.Cm = Cm.p; p.Dskip = Dk.p; p.z = z.p; p.dt_bias = bias.p;
    p.y = y.p; p.dt_softplus = true;
    // default launch, then the sweep: lanes per row x threads per block, per launch
    // of 64 back to back
    for (int64_t b : {int64_t(256), int64_t(64), int64_t(1)}) {
      const int64_t per = b * D * N, ncopy = b == 1 ? 1 : (320LL << 20) / (per * 4) + 1;
      int i = 0;
      SelectiveStateUpdateParams one = p;  // batch b on the first state copy
      one.batch = b;
      auto at = [&](SelectiveStateUpdateParams q) {
        q.batch = b;
        q.state = q.new_state = st.p + (i++ % ncopy) * per;
        return q;
      };
      const double gb = 2.0 * b * D * N * 4 / 1e9;
      const float ms = time_ms([&] { return launch_selective_state_update<bf>(at(p), 0); }, 50);
      const float burst = time_burst_ms([&] { return launch_selective_state_update<bf>(at(p), 0); });
      std::printf("kernel selective_state_update B%lld D5120 N16 bf16 (default, %lld state copies): %.4f ms alone, "
                  "%.4f ms per launch of 64, %.0f GB/s (state r+w)\n", (long long)b, (long long)ncopy, ms, burst,
                  gb / (burst * 1e-3));
      for (int tile : {1, 0})
        for (int tl : {0, 1, 2})
          for (int block : {128, 256}) {
            const float t = time_burst_ms(
                [&] { return launch_selective_state_update<bf>(at(p), 0, tl, block, tile == 1); });
            std::printf("sweep selective_state_update B%lld %s lanes %d block %d: %.4f ms, %.0f GB/s\n", (long long)b,
                        tile ? "tile" : "generic", 1 << tl, block, t, gb / (t * 1e-3));
          }
      // one state updated in place launch after launch, as a decode loop or the op benchmark's chain does
      if (b > 1)
        for (int tile : {1, 0}) {
          const float t = time_burst_ms([&] { return launch_selective_state_update<bf>(one, 0, -1, 0, tile == 1); });
          std::printf("sweep selective_state_update B%lld %s default, one state: %.4f ms, %.0f GB/s\n", (long long)b,
                      tile ? "tile" : "generic", t, gb / (t * 1e-3));
        }
    }
  }
  {  // causal_conv1d_update B1 / B64 / B256 D5120 W4 silu, in place
    const int64_t D = 5120, W = 4;
    for (int64_t B : {int64_t(1), int64_t(64), int64_t(256)}) {
      DevBuf<bf> x(B * D), st(B * D * (W - 1)), y(B * D);
      DevBuf<float> w(D * W), bias(D);
      fill_uniform(x, -1, 1); fill_uniform(st, -1, 1); fill_uniform(w, -1, 1); fill_uniform(bias, -1, 1);
      CausalConv1dUpdateParams p{};
      p.batch = B; p.dim = D; p.width = W; p.x = x.p; p.conv_state = st.p; p.new_conv_state = st.p;
      p.weight = w.p; p.bias = bias.p; p.y = y.p; p.silu = true;
      const float ms = time_ms([&] { return launch_causal_conv1d_update<bf>(p, 0); }, 50);
      std::printf("kernel causal_conv1d_update B%lld D5120 W4 bf16: %.4f ms, %.0f GB/s (x, state r+w, y)\n",
                  (long long)B, ms, B * D * 2.0 * (2 + 2 * (W - 1)) / (ms * 1e-3) / 1e9);
      for (int vec : {1, 0})
        for (int block : {32, 64, 128, 256}) {
          const float t = time_burst_ms([&] { return launch_causal_conv1d_update<bf>(p, 0, block, vec == 1); });
          std::printf("sweep causal_conv1d_update B%lld %s block %d: %.4f ms per launch of 64, %.0f GB/s\n",
                      (long long)B, vec ? "vec" : "scalar", block, t, B * D * 2.0 * (2 + 2 * (W - 1)) / (t * 1e-3) / 1e9);
        }
    }
  }
  {  // add_rms_norm at decode: mamba-2.8b (F 2560) at 1 and 64 rows, mamba-130m (F 768) at 1 row; float32
     // residual, bf16 y and x, float32 scale (the models' layout), per launch of 64 back to back
    struct S { const char* what; int64_t R, F; };
    for (S c : {S{"mamba-2.8b", 1, 2560}, S{"mamba-2.8b", 64, 2560}, S{"mamba-130m", 1, 768}}) {
      DevBuf<float> h(c.R * c.F), hn(c.R * c.F), scale(c.F);
      DevBuf<bf> y(c.R * c.F), x(c.R * c.F);
      fill_uniform(h, -1, 1); fill_uniform(y, -1, 1); fill_uniform(scale, 0.5, 1.5);
      AddRmsNormParams p{};
      p.rows = c.R; p.features = c.F; p.eps = 1e-5f; p.h = h.p; p.y = y.p; p.scale = scale.p; p.h_new = hn.p;
      p.x = x.p; p.h_f32 = true; p.scale_f32 = true; p.out_f32 = false;
      const double bytes = c.R * c.F * (4.0 + 2.0 + 4.0 + 2.0) + c.F * 4.0;
      for (int block : {0, 64, 128, 256}) {
        const float t = time_burst_ms([&] { return launch_add_rms_norm<bf>(p, 0, block); });
        std::printf("kernel add_rms_norm %s R%lld F%lld hf32 y/x bf16 (block %d%s): %.2f us per launch of 64, "
                    "%.0f GB/s\n", c.what, (long long)c.R, (long long)c.F, block, block ? "" : " = default",
                    t * 1e3, bytes / (t * 1e-3) / 1e9);
      }
    }
  }
  {  // linear (decode GEMV) at the decode projections of mamba-130m and mamba-2.8b, batch 1
    struct G { const char* what; int64_t K, N; };
    for (G g : {G{"130m in_proj", 768, 3072}, G{"130m x_proj", 1536, 80}, G{"130m dt_proj", 48, 1536},
                G{"130m out_proj", 1536, 768}, G{"2.8b in_proj", 2560, 10240}, G{"2.8b x_proj", 5120, 192},
                G{"2.8b dt_proj", 160, 5120}, G{"2.8b out_proj", 5120, 2560}}) {
      for (int64_t M : {int64_t(1), int64_t(8)}) {
        // 8 weight copies (> L2) so each call reads from DRAM
        const int64_t copies = 8;
        DevBuf<bf> x(M * g.K), w(copies * g.K * g.N), y(M * g.N);
        fill_uniform(x, -1, 1); fill_uniform(w, -1, 1);
        // per launch of 64 back to back (a lone launch adds its launch latency); clusters sized for
        // 264 blocks (the default) and 528
        for (int64_t want : {kLinearWantBlocks, int64_t(528)}) {
          int i = 0;
          const float ms = time_burst_ms([&] {
            LinearParams p{M, g.K, g.N, x.p, w.p + (i++ % copies) * g.K * g.N, y.p};
            return launch_linear<bf>(p, 0, want);
          });
          std::printf("kernel linear %-13s M%lld K%lld N%lld bf16 (want %lld blocks): %.4f ms, %.0f GB/s (weights)\n",
                      g.what, (long long)M, (long long)g.K, (long long)g.N, (long long)want, ms,
                      2.0 * g.K * g.N / (ms * 1e-3) / 1e9);
        }
      }
    }
  }
  {  // selective_scan at the issue's four shapes (D, z, delta_bias, softplus, last state)
    struct Shape { int64_t B, L, D; };
    for (Shape sh : {Shape{1, 2048, 5120}, Shape{4, 2048, 5120}, Shape{1, 8192, 5120}, Shape{1, 2048, 1536}}) {
      const int64_t B = sh.B, L = sh.L, D = sh.D, N = 16;
      DevBuf<bf> u(B * L * D), dl(B * L * D), z(B * L * D), y(B * L * D), Bm(B * L * N), Cm(B * L * N);
      DevBuf<float> A(D * N), Dk(D), bias(D), last(B * D * N);
      fill_uniform(u, -1, 1); fill_uniform(dl, -1, 1); fill_uniform(z, -1, 1); fill_uniform(Bm, -1, 1);
      fill_uniform(Cm, -1, 1); fill_uniform(A, -16, -1); fill_uniform(Dk, -1, 1); fill_uniform(bias, -6, -2);
      SelectiveScanParams p{};
      p.batch = B; p.seqlen = L; p.dim = D; p.dstate = N; p.ngroups = 1;
      p.u_batch_stride = L * D; p.u_seq_stride = D; p.bc_batch_stride = L * N; p.bc_seq_stride = N;
      p.bc_group_stride = N; p.u = u.p; p.delta = dl.p; p.A = A.p; p.Bm = Bm.p; p.Cm = Cm.p; p.Dskip = Dk.p;
      p.z = z.p; p.delta_bias = bias.p; p.initial_state = nullptr; p.y = y.p; p.last_state = last.p;
      p.delta_softplus = true;
      const float ms = time_ms([&] { return launch_selective_scan<bf>(p, 0); });
      const float lane = time_ms([&] { return launch_selective_scan_lane<bf>(p, 0); });
      const float whole = time_ms([&] { return launch_selective_scan_lane<bf>(p, 0, false); });
      const float tp48 = time_ms([&] { return launch_scan_tp<bf, 4, 8, 3>(p, 0); });
      const float tp88 = time_ms([&] { return launch_scan_tp<bf, 8, 8, 2>(p, 0); });
      const float tp168 = time_ms([&] { return launch_scan_tp<bf, 16, 8, 1>(p, 0); });
      std::printf("kernel selective_scan B%lld L%lld D%lld N16 bf16: %.4f ms (lane kernel %.4f, without the sequence "
                  "split %.4f; tp K4 I8 %.4f, K8 I8 %.4f, K16 I8 %.4f)\n",
                  (long long)B, (long long)L, (long long)D, ms, lane, whole, tp48, tp88, tp168);
    }
  }
  return 0;
}

// One launch of each kernel worth a profile, for `ncu` (gpu_all.sh step ncu1): the state update at B256
// (tile kernel, then the generic 2-lane kernel), the in-place read-modify-write ceiling, conv1d at
// B4 L2048 D5120, the conv update at B256 (vector, then scalar kernel). Each after one warm-up launch.
static int run_profile_launches() {
  using bf = __nv_bfloat16;
  const int64_t B = 256, D = 5120, N = 16, W = 4;
  DevBuf<bf> x(B * D), dt(B * D), z(B * D), Bm(B * N), Cm(B * N), y(B * D), cs(B * D * (W - 1));
  DevBuf<float> st(B * D * N), A(D * N), Dk(D), bias(D), cw(D * W);
  fill_uniform(x, -1, 1); fill_uniform(dt, -1, 1); fill_uniform(z, -1, 1); fill_uniform(Bm, -1, 1);
  fill_uniform(Cm, -1, 1); fill_uniform(st, -1, 1); fill_uniform(A, -2, -0.1); fill_uniform(Dk, -1, 1);
  fill_uniform(bias, -5, -2); fill_uniform(cs, -1, 1); fill_uniform(cw, -1, 1);
  SelectiveStateUpdateParams p{};
  p.batch = B; p.dim = D; p.dstate = N; p.ngroups = 1; p.state = st.p; p.new_state = st.p; p.x = x.p;
  p.dt = dt.p; p.A = A.p; p.Bm = Bm.p; p.Cm = Cm.p; p.Dskip = Dk.p; p.z = z.p; p.dt_bias = bias.p;
  p.y = y.p; p.dt_softplus = true;
  for (int i = 0; i < 2; ++i) CK(launch_selective_state_update<bf>(p, 0));
  for (int i = 0; i < 2; ++i) CK(launch_selective_state_update<bf>(p, 0, 1, 128, false));
  for (int i = 0; i < 2; ++i) rmw_kernel<true><<<unsigned(B * D * N / 4 / 128), 128>>>(reinterpret_cast<float4*>(st.p), B * D * N / 4);
  {
    const int64_t L = 2048, Bc = 4;
    DevBuf<bf> cx(Bc * L * D), cy(Bc * L * D), fin(Bc * D * (W - 1));
    fill_uniform(cx, -1, 1);
    CausalConv1dParams c{};
    c.batch = Bc; c.seqlen = L; c.dim = D; c.width = W; c.x = cx.p; c.weight = cw.p; c.bias = bias.p;
    c.initial_state = nullptr; c.y = cy.p; c.final_state = fin.p; c.silu = true;
    for (int i = 0; i < 2; ++i) CK(launch_causal_conv1d<bf>(c, 0));
  }
  CausalConv1dUpdateParams u{};
  u.batch = B; u.dim = D; u.width = W; u.x = x.p; u.conv_state = cs.p; u.new_conv_state = cs.p; u.weight = cw.p;
  u.bias = bias.p; u.y = y.p; u.silu = true;
  for (int i = 0; i < 2; ++i) CK(launch_causal_conv1d_update<bf>(u, 0));
  for (int i = 0; i < 2; ++i) CK(launch_causal_conv1d_update<bf>(u, 0, 0, false));
  CK(cudaDeviceSynchronize());
  std::printf("profile launches done\n");
  return 0;
}

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "check";
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  if (mode == "check") return run_checks();
  if (mode == "sweep") return run_sweep();
  if (mode == "kernels") return run_kernel_times();
  if (mode == "profile") return run_profile_launches();
  std::fprintf(stderr, "usage: %s check|sweep|kernels|profile\n", argv[0]);
  return 2;
}
