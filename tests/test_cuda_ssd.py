"""GPU-only checks of the Mamba-2 CUDA kernels (ssd_scan, ssd_state_update) at real sizes. The
backend-agnostic tests in tests/ops/test_ssd_*.py cover odd sizes, options, dtypes, vmap and gradients
on whatever backend runs them, the CUDA one included.

  * ssd_scan at mamba2-2.7b layer sizes (80 heads, headdim 64, dstate 128) with a tail chunk, every
    dtype, D, z, dt_bias, softplus and an initial state, against a float64 oracle run on the GPU
    through CuPy (a NumPy loop would take minutes): the plain recurrence, one thread per (batch,
    head, headdim row), written from the math of the design note;
  * packed sequences (seq_idx) with boundaries inside and at the edge of chunks, an id that never
    occurs and ids out of range, several groups;
  * seqlen 65536 with long memory (dt ~ 1e-4) stays within tolerance;
  * ssd_state_update at batch 64 in place under donation (the state keeps its buffer) and chained
    64 times inside one jitted function, against the oracle.

Every ssd_scan case runs with both CUDA scan kernels: v2 (sequential over chunks) and v3 (chunk-
parallel), selected by MAMBA_JAX_SSD_SCAN (read by mamba_jax/ops/ssd_scan/ffi.py when a call is traced).

`python tests/test_cuda_ssd.py --bench [--impls=ffi-v2,ffi-v3,xla] [out.json]` times the CUDA kernels and the
pure-JAX path on the mamba2-2.7b shapes of issue 12 (per call, inside one jitted function, launches
captured in command buffers) and prints one JSON object per line.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mamba_jax import ops
from mamba_jax.ops import ssd_scan, ssd_state_update


def _has_cuda() -> bool:
    try:
        return len(jax.devices("cuda")) > 0
    except RuntimeError:
        return False


def _kernels_built() -> bool:
    try:
        from mamba_jax import _ffi_cuda

        return {"ssd_scan", "ssd_state_update"} <= set(_ffi_cuda.targets())
    except ImportError:
        return False


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA GPU (jax has no 'cuda' backend here)"),
    pytest.mark.skipif(_has_cuda() and not _kernels_built(),
                       reason="the mamba_jax CUDA kernels are not built (no nvcc at build time)"),
]

try:
    import cupy as cp
except ImportError:  # pragma: no cover - CuPy is on the GPU host
    cp = None

needs_cupy = pytest.mark.skipif(cp is None, reason="the float64 GPU oracle needs CuPy")

_ORACLE_SRC = r"""
extern "C" __global__ void ssd_f64(
    const double* x, const double* dt, const double* A, const double* Bm, const double* Cm,
    const double* Dk, const double* z, const double* bias, const double* init, const int* seq,
    double* y, double* fin, long long batch, long long L, long long H, long long P, long long N,
    long long G, long long S, int softplus, double dt_min, double dt_max) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;  // (b * H + h) * P + p
  if (i >= batch * H * P) return;
  const long long p = i % P, h = (i / P) % H, b = i / (P * H), g = h / (H / G);
  double st[256];
  for (long long n = 0; n < N; ++n) st[n] = init ? init[((b * H + h) * P + p) * N + n] : 0.0;
  for (long long t = 0; t < L; ++t) {
    if (seq && t > 0 && seq[b * L + t] != seq[b * L + t - 1])
      for (long long n = 0; n < N; ++n) st[n] = 0.0;
    double d = dt[(b * L + t) * H + h] + (bias ? bias[h] : 0.0);
    if (softplus) d = fmax(d, 0.0) + log1p(exp(-fabs(d)));
    d = fmin(fmax(d, dt_min), dt_max);
    const double decay = exp(d * A[h]);
    const long long k = ((b * L + t) * H + h) * P + p;
    const double xv = x[k];
    const double* Bt = Bm + ((b * L + t) * G + g) * N;
    const double* Ct = Cm + ((b * L + t) * G + g) * N;
    double acc = 0.0;
    for (long long n = 0; n < N; ++n) {
      st[n] = decay * st[n] + d * xv * Bt[n];
      acc += st[n] * Ct[n];
    }
    if (Dk) acc += Dk[h * P + p] * xv;
    if (z) acc *= z[k] / (1.0 + exp(-z[k]));
    y[k] = acc;
    if (seq) {
      const int s = seq[b * L + t];
      if (s >= 0 && s < S)
        for (long long n = 0; n < N; ++n) fin[(((b * S + s) * H + h) * P + p) * N + n] = st[n];
    }
  }
  if (!seq)
    for (long long n = 0; n < N; ++n) fin[((b * H + h) * P + p) * N + n] = st[n];
}
"""


@functools.lru_cache(maxsize=1)
def _oracle_kernel():
    return cp.RawKernel(_ORACLE_SRC, "ssd_f64")


def _c64(a):
    return None if a is None else cp.asarray(np.asarray(np.asarray(a).astype(np.float64)))


def oracle_scan(x, dt, A, B, C, *, D=None, z=None, dt_bias=None, dt_softplus=False, dt_limit=(0.0, math.inf),
                initial_state=None, seq_idx=None, num_sequences=None):
    """float64 (y, final_state) on the GPU through CuPy; inputs as given (already rounded)."""
    batch, L, H, P = x.shape
    G, N = B.shape[-2:]
    S = num_sequences or 0
    if D is not None and np.ndim(D) == 1:
        D = np.broadcast_to(np.asarray(D)[:, None], (H, P))
    args = [_c64(v) for v in (x, dt, A, B, C, D, z, dt_bias, initial_state)]
    seq = None if seq_idx is None else cp.asarray(np.asarray(seq_idx, np.int32))
    y = cp.zeros((batch, L, H, P), cp.float64)
    fin = cp.zeros((batch, S, H, P, N) if seq is not None else (batch, H, P, N), cp.float64)
    threads = batch * H * P
    _oracle_kernel()(((threads + 127) // 128,), (128,),
                     (*args, seq, y, fin, np.int64(batch), np.int64(L), np.int64(H), np.int64(P), np.int64(N),
                      np.int64(G), np.int64(S), np.int32(dt_softplus), np.float64(dt_limit[0]),
                      np.float64(min(dt_limit[1], 1e300))))
    cp.cuda.Device().synchronize()
    return cp.asnumpy(y), cp.asnumpy(fin)


def _assert_close(actual, expected, dtype, quantity, what):
    from conftest import assert_close

    assert_close(np.asarray(actual), expected, dtype, quantity, what)


def _inputs(rng, batch, L, H, P, N, G, dtype, *, dt_shift=-3.0, init=True, z=True):
    f = lambda *s: rng.standard_normal(s, dtype=np.float32)
    x = jnp.asarray(f(batch, L, H, P), dtype)
    dt = jnp.asarray(0.5 * f(batch, L, H), dtype)
    A = jnp.asarray(-np.exp(rng.uniform(-1.0, 2.0, H)).astype(np.float32))
    B = jnp.asarray(f(batch, L, G, N) / math.sqrt(N) * 2, dtype)
    C = jnp.asarray(f(batch, L, G, N) / math.sqrt(N) * 2, dtype)
    D = jnp.asarray(f(H, P))
    zz = jnp.asarray(f(batch, L, H, P), dtype) if z else None
    bias = jnp.asarray(rng.uniform(dt_shift - 1, dt_shift + 1, H).astype(np.float32))
    h0 = jnp.asarray(f(batch, H, P, N)) if init else None
    return dict(x=x, dt=dt, A=A, B=B, C=C), dict(D=D, z=zz, dt_bias=bias, initial_state=h0)


DTYPES = {"f32": jnp.float32, "bf16": jnp.bfloat16, "f16": jnp.float16}
SCAN_VERSIONS = ("v2", "v3")


@pytest.fixture(params=SCAN_VERSIONS)
def version(request, monkeypatch):
    """The CUDA scan kernel under test; each test traces its calls afresh under this setting."""
    monkeypatch.setenv("MAMBA_JAX_SSD_SCAN", request.param)
    return request.param


def test_version_reaches_the_program(version):
    """v3's workspace result (B * ceil(L / 256) * H * (P * N + 1) floats) is in the program; v2's is empty."""
    batch, L, H, P, N = 2, 300, 3, 16, 8
    f = lambda *s: jnp.zeros(s, jnp.float32)
    text = jax.jit(functools.partial(ssd_scan, implementation="ffi")).lower(
        f(batch, L, H, P), f(batch, L, H), f(H), f(batch, L, 1, N), f(batch, L, 1, N)).as_text()
    sizes = {int(n) for n in re.findall(r"tensor<(\d+)xf32>", text)}
    v3_size = -(-batch * 2 * H * (P * N + 1) // 4) * 4
    assert (v3_size in sizes) == (version == "v3"), f"{version}: f32 buffer sizes in the program: {sorted(sizes)}"


@needs_cupy
@pytest.mark.parametrize("tag", list(DTYPES))
@pytest.mark.parametrize("L", [2048 + 37, 256])
def test_scan_real_size(tag, L, version):
    dtype = DTYPES[tag]
    rng = np.random.default_rng(L + len(tag))
    batch, H, P, N, G = 2, 80, 64, 128, 1
    pos, kw = _inputs(rng, batch, L, H, P, N, G, dtype)
    y, fin = jax.jit(functools.partial(ssd_scan, dt_softplus=True, return_final_state=True,
                                       implementation="ffi"))(**pos, **kw)
    y_ref, fin_ref = oracle_scan(**pos, **kw, dt_softplus=True)
    _assert_close(y, y_ref, dtype, "out", f"B{batch}-L{L}-H{H}-P{P}-N{N}-{tag} y")
    _assert_close(fin, fin_ref, dtype, "state", f"B{batch}-L{L}-H{H}-P{P}-N{N}-{tag} final_state")


@needs_cupy
@pytest.mark.parametrize("tag", ["bf16", "f32"])
@pytest.mark.parametrize("N", [16, 64, 256])
def test_scan_other_shapes(tag, N, version):
    """headdim not a multiple of 32, dstate of each kernel variant, several groups, no z/init."""
    dtype = DTYPES[tag]
    rng = np.random.default_rng(N)
    batch, L, H, P, G = 2, 333, 6, 48, 3
    pos, kw = _inputs(rng, batch, L, H, P, N, G, dtype, init=False, z=False)
    y, fin = ssd_scan(**pos, **kw, dt_softplus=True, dt_limit=(1e-3, 0.5), return_final_state=True,
                      implementation="ffi")
    y_ref, fin_ref = oracle_scan(**pos, **kw, dt_softplus=True, dt_limit=(1e-3, 0.5))
    _assert_close(y, y_ref, dtype, "out", f"B{batch}-L{L}-H{H}-P{P}-N{N}-G{G}-{tag} y")
    _assert_close(fin, fin_ref, dtype, "state", f"B{batch}-L{L}-H{H}-P{P}-N{N}-G{G}-{tag} final_state")


@needs_cupy
@pytest.mark.parametrize("tag", ["bf16", "f32"])
def test_scan_packed(tag, version):
    dtype = DTYPES[tag]
    rng = np.random.default_rng(7)
    batch, L, H, P, N, G, S = 3, 700, 8, 64, 128, 2, 6
    pos, kw = _inputs(rng, batch, L, H, P, N, G, dtype)
    # Row 0: boundaries inside chunks, at a chunk edge (128), a one-token sequence, id 4 never occurs.
    # Row 1: an id out of range (9, not stored) between stored ones, then -1 (not stored).
    # Row 2: at v3's chunk edges (256, 512), a one-token sequence ending at one (255).
    cuts0 = [(0, 0), (50, 1), (128, 2), (129, 3), (600, 5)]
    cuts1 = [(0, 0), (64, 9), (300, 1), (640, -1)]
    cuts2 = [(0, 1), (255, 2), (256, 3), (512, 5)]
    seq = np.zeros((batch, L), np.int32)
    for row, cuts in enumerate((cuts0, cuts1, cuts2)):
        for start, sid in cuts:
            seq[row, start:] = sid
    y, fin = ssd_scan(**pos, **kw, dt_softplus=True, seq_idx=jnp.asarray(seq), num_sequences=S,
                      return_final_state=True, implementation="ffi")
    y_ref, fin_ref = oracle_scan(**pos, **kw, dt_softplus=True, seq_idx=seq, num_sequences=S)
    _assert_close(y, y_ref, dtype, "out", f"packed-{tag} y")
    _assert_close(fin, fin_ref, dtype, "state", f"packed-{tag} final_state")
    assert not np.any(np.asarray(fin)[0, 4]), "final state of an id that never occurs must be zeros"


@needs_cupy
def test_scan_vmap(version):
    """Under vmap each slice gets its own workspace part (v3) and its own launches."""
    rng = np.random.default_rng(5)
    batch, L, H, P, N, G = 1, 600, 4, 64, 64, 1
    ins = [_inputs(rng, batch, L, H, P, N, G, jnp.bfloat16) for _ in range(3)]
    stack = lambda d: {k: jnp.stack([i[d][k] for i in ins]) for k in ins[0][d]}
    fn = jax.jit(jax.vmap(lambda pos, kw: ssd_scan(**pos, **kw, dt_softplus=True, return_final_state=True,
                                                   implementation="ffi")))
    y, fin = fn(stack(0), stack(1))
    for i, (pos, kw) in enumerate(ins):
        y_ref, fin_ref = oracle_scan(**pos, **kw, dt_softplus=True)
        _assert_close(y[i], y_ref, jnp.bfloat16, "out", f"vmap slice {i} y")
        _assert_close(fin[i], fin_ref, jnp.bfloat16, "state", f"vmap slice {i} final_state")


@needs_cupy
def test_scan_long_memory(version):
    """seqlen 65536 with dt ~ 1e-4: the state remembers ~10^4 steps; float32 stays within tolerance."""
    rng = np.random.default_rng(65536)
    batch, L, H, P, N, G = 1, 65536, 2, 32, 64, 1
    pos, kw = _inputs(rng, batch, L, H, P, N, G, jnp.float32, dt_shift=-9.0, init=False)
    y, fin = ssd_scan(**pos, **kw, dt_softplus=True, return_final_state=True, implementation="ffi")
    y_ref, fin_ref = oracle_scan(**pos, **kw, dt_softplus=True)
    _assert_close(y, y_ref, jnp.float32, "out", "L65536 long-memory y")
    _assert_close(fin, fin_ref, jnp.float32, "state", "L65536 long-memory final_state")


def _np_state_update(state, x, dt, A, B, C, D, z, bias):
    f = lambda a: np.asarray(np.asarray(a).astype(np.float64))
    state, x, dt, A, B, C, D, z, bias = map(f, (state, x, dt, A, B, C, D, z, bias))
    H = x.shape[1]
    d = dt + bias
    d = np.maximum(d, 0) + np.log1p(np.exp(-np.abs(d)))
    Bh, Ch = np.repeat(B, H // B.shape[1], axis=1), np.repeat(C, H // C.shape[1], axis=1)
    new = np.exp(d * A)[:, :, None, None] * state + (d[:, :, None] * x)[..., None] * Bh[:, :, None, :]
    y = np.einsum("bhpn,bhn->bhp", new, Ch) + D * x
    return y * z / (1 + np.exp(-z)), new


@pytest.mark.parametrize("tag", list(DTYPES))
def test_state_update_in_place(tag):
    dtype = DTYPES[tag]
    rng = np.random.default_rng(64)
    batch, H, P, N, G = 64, 80, 64, 128, 1
    f = lambda *s: rng.standard_normal(s, dtype=np.float32)
    state = f(batch, H, P, N)
    x, z = jnp.asarray(f(batch, H, P), dtype), jnp.asarray(f(batch, H, P), dtype)
    dt = jnp.asarray(f(batch, H), dtype)
    A = jnp.asarray(-np.exp(rng.uniform(-1, 2, H)).astype(np.float32))
    B, C = jnp.asarray(f(batch, G, N), dtype), jnp.asarray(f(batch, G, N), dtype)
    D, bias = jnp.asarray(f(H, P)), jnp.asarray(rng.uniform(-4, -2, H).astype(np.float32))
    step = jax.jit(lambda s, *a: ssd_state_update(s, *a, D=D, z=z, dt_bias=bias, dt_softplus=True,
                                                  implementation="ffi")[::-1], donate_argnums=0)
    s = jnp.asarray(state)
    ptr = s.unsafe_buffer_pointer()
    new, y = step(s, x, dt, A, B, C)
    assert new.unsafe_buffer_pointer() == ptr, "the donated state was not updated in place"
    y_ref, new_ref = _np_state_update(state, x, dt, A, B, C, D, z, bias)
    _assert_close(y, y_ref, dtype, "out", f"state update {tag} y")
    _assert_close(new, new_ref, dtype, "state", f"state update {tag} new_state")

    def chain(s):
        for _ in range(64):
            y, s = ssd_state_update(s, x, dt, A, B, C, D=D, z=z, dt_bias=bias, dt_softplus=True,
                                    implementation="ffi")
        return s, y

    s2, y2 = jax.jit(chain, donate_argnums=0)(jnp.asarray(state))
    ref_s = state
    for _ in range(64):
        ref_y, ref_s = _np_state_update(ref_s, x, dt, A, B, C, D, z, bias)
    _assert_close(s2, ref_s, dtype, "state", f"64 chained updates {tag} state")
    _assert_close(y2, ref_y, dtype, "out", f"64 chained updates {tag} y")


def _mamba2_step_built() -> bool:
    return ops.cuda_available("mamba2_step")


@pytest.mark.skipif(_has_cuda() and not _mamba2_step_built(), reason="the mamba2_step CUDA kernel is not built")
@pytest.mark.parametrize("tag,batch", [("bf16", 1), ("bf16", 4), ("bf16", 64), ("bf16", 257), ("f32", 1), ("f16", 4)])
def test_mamba2_step_real_size(tag, batch):
    """ops.mamba2_step (one custom call: the conv update, then the state update as its programmatic
    dependent) at mamba2-2.7b's layer equals the unfused causal_conv1d_update + ssd_state_update kernels bit
    for bit: one step (both states donated: in place), 16 chained steps, and a slot pool with an
    out-of-range slot. (tests/ops/test_mamba2_step.py compares the op with a float64 oracle at this size.)"""
    from mamba_jax.ops.mamba2_step import split_xbc

    dtype = DTYPES[tag]
    rng = np.random.default_rng(batch)
    H, P, N, G, W = 80, 64, 128, 1, 4
    c = H * P + 2 * G * N
    f = lambda *s: rng.standard_normal(s, dtype=np.float32)
    xBC, dt = jnp.asarray(f(batch, c), dtype), jnp.asarray(0.5 * f(batch, H), dtype)
    conv0, ssm0 = f(batch, c, W - 1), f(batch, H, P, N)
    w, b = jnp.asarray(0.5 * f(c, W)), jnp.asarray(0.1 * f(c))
    A = jnp.asarray(-np.exp(rng.uniform(-1, 2, H)).astype(np.float32))
    D, bias = jnp.asarray(f(H)), jnp.asarray(rng.uniform(-4, -2, H).astype(np.float32))

    def fused(conv, ssm, impl="ffi", idx=None):
        return ops.mamba2_step(xBC, dt, conv, ssm, w, b, A, D, bias, state_indices=idx, implementation=impl)

    def unfused(conv, ssm, idx=None):
        u, conv = ops.causal_conv1d_update(xBC, conv, w, b, activation="silu", state_indices=idx, implementation="ffi")
        x, B, C = split_xbc(u, H, P, N)
        y, ssm = ops.ssd_state_update(ssm, x, dt, A, B, C, D, None, bias, dt_softplus=True, state_indices=idx,
                                      implementation="ffi")
        return y, conv, ssm

    def chain(step, n=16):
        def run(conv, ssm):
            for _ in range(n):
                y, conv, ssm = step(conv, ssm)
            return y, conv, ssm
        return jax.jit(run, donate_argnums=(0, 1))

    states = lambda: (jnp.asarray(conv0, dtype), jnp.asarray(ssm0))
    conv, ssm = states()
    ptrs = (conv.unsafe_buffer_pointer(), ssm.unsafe_buffer_pointer())
    one_f = jax.jit(fused, donate_argnums=(0, 1))(conv, ssm)
    assert (one_f[1].unsafe_buffer_pointer(), one_f[2].unsafe_buffer_pointer()) == ptrs, "not updated in place"
    one_u = jax.jit(unfused)(*states())
    many_f, many_u = chain(fused)(*states()), chain(unfused)(*states())
    names = ("y", "new_conv_state", "new_ssm_state")
    for what, got, want in (("one step", one_f, one_u), ("16 steps", many_f, many_u)):
        for name, a, r in zip(names, got, want):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(r), err_msg=f"{tag} B{batch} {what} {name}")
    if batch >= 4:  # slot pool of batch + 3 rows; the last row's slot is out of range
        idx = jnp.asarray(np.r_[rng.permutation(batch + 3)[:batch - 1], batch + 3].astype(np.int32))
        pool = lambda: (jnp.asarray(f(batch + 3, c, W - 1), dtype), jnp.asarray(f(batch + 3, H, P, N)))
        conv_p, ssm_p = pool()
        got = jax.jit(lambda cs, ss, i: fused(cs, ss, idx=i))(conv_p, ssm_p, idx)
        want = jax.jit(lambda cs, ss, i: unfused(cs, ss, idx=i))(conv_p, ssm_p, idx)
        for name, a, r in zip(names, got, want):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(r), err_msg=f"{tag} B{batch} pool {name}")
        assert not np.any(np.asarray(got[0][-1], np.float32)), "the out-of-range row's y must be 0"


# ---------------------------------------------------------------------------------------------------
# Timing (python tests/test_cuda_ssd.py --bench [out.json])
# ---------------------------------------------------------------------------------------------------
def _per_call_ms(fn, args, k, reps=7):
    out = fn(*args)
    jax.block_until_ready(out)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append((time.perf_counter() - t0) * 1e3 / k)
    return sorted(ts)[len(ts) // 2]


def _use(impl):
    """impl "ffi-v2" / "ffi-v3": the FFI kernel with MAMBA_JAX_SSD_SCAN set (read when a call is traced)."""
    if impl.startswith("ffi-"):
        os.environ["MAMBA_JAX_SSD_SCAN"] = impl[4:]
        return "ffi"
    return impl


def bench(out_path=None, impls=("ffi-v2", "ffi-v3", "xla")):
    rows = []

    def emit(**kw):
        print(json.dumps(kw), flush=True)
        rows.append(kw)

    rng = np.random.default_rng(0)
    H, P, N, G = 80, 64, 128, 1
    k = 10
    for batch, L in [(1, 2048), (8, 2048), (1, 8192), (1, 32768)]:
        pos, kw = _inputs(rng, batch, L, H, P, N, G, jnp.bfloat16, init=False)
        kw["D"] = kw["D"][:, 0]
        for impl in impls:
            if impl == "xla" and L > 8192:
                continue

            def chain(x, dt, A, B, C, impl=_use(impl)):
                fin = None
                for _ in range(k):  # y feeds the next call's x: k dependent calls, nothing to CSE
                    x, fin = ssd_scan(x, dt, A, B, C, chunk_size=256, **kw, dt_softplus=True,
                                      return_final_state=True, implementation=impl)
                return x, fin

            ms = _per_call_ms(jax.jit(chain), (pos["x"], pos["dt"], pos["A"], pos["B"], pos["C"]), k)
            io = sum(int(np.prod(v.shape)) * v.dtype.itemsize for v in (*pos.values(), kw["z"]))
            io += int(np.prod(pos["x"].shape)) * 2 + batch * H * P * N * 4
            emit(who="mamba_jax", impl=impl, what=f"ssd b{batch} l{L} h{H} p{P} n{N}", ms=round(ms, 5),
                 io_bytes=io, tbps=round(io / ms / 1e9, 3))
    for batch in (1, 64):
        f = lambda *s: rng.standard_normal(s, dtype=np.float32)
        st = jnp.asarray(f(batch, H, P, N))
        x, z = jnp.asarray(f(batch, H, P), jnp.bfloat16), jnp.asarray(f(batch, H, P), jnp.bfloat16)
        dt = jnp.asarray(f(batch, H), jnp.bfloat16)
        A = jnp.asarray(-np.exp(f(H)))
        B, C = jnp.asarray(f(batch, G, N), jnp.bfloat16), jnp.asarray(f(batch, G, N), jnp.bfloat16)
        D, bias = jnp.asarray(f(H)), jnp.asarray(f(H) - 3)
        kk = 64
        for impl in dict.fromkeys(_use(i) for i in impls):  # one state-update kernel: ffi once
            def chain(s, x, impl=impl):
                for _ in range(kk):
                    x, s = ssd_state_update(s, x, dt, A, B, C, D=D, z=z, dt_bias=bias, dt_softplus=True,
                                            implementation=impl)
                return s, x

            fn = jax.jit(chain, donate_argnums=0)
            s = jnp.array(st)
            s, _ = fn(s, x)
            jax.block_until_ready(s)
            ts = []
            for _ in range(7):
                t0 = time.perf_counter()
                s, _ = fn(s, x)
                jax.block_until_ready(s)
                ts.append((time.perf_counter() - t0) * 1e3 / kk)
            ms = sorted(ts)[3]
            emit(who="mamba_jax", impl=impl, what=f"ssd_update b{batch} h{H} p{P} n{N}", ms=round(ms, 5),
                 tbps=round(2 * batch * H * P * N * 4 / ms / 1e9, 3))
    if out_path:
        with open(out_path, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    if "--bench" in sys.argv:
        rest = [a for a in sys.argv[1:] if a != "--bench"]
        impls = [a.split("=", 1)[1] for a in rest if a.startswith("--impls=")]
        rest = [a for a in rest if not a.startswith("--impls=")]
        bench(rest[0] if rest else None, tuple(impls[0].split(",")) if impls else ("ffi-v2", "ffi-v3", "xla"))
