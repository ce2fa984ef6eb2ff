"""GPU-only checks of the CUDA kernels at real sizes (the backend-agnostic op tests cover odd sizes,
options, dtypes, vmap and gradients on whatever backend runs them, the CUDA one included).

  * implementation=None lowers to the CUDA custom calls on a GPU;
  * selective_scan and causal_conv1d at batch 4, seqlen 8192, dim 5120 against a float64 oracle that
    runs on the GPU through CuPy (a NumPy loop would take minutes): a plain sequential recurrence in
    double precision, one thread per (batch, channel), written from the math of the design note;
  * every MAMBA_JAX_SCAN choice (lane kernel, time-parallel kernel and its block shapes) at a small
    grid, each in its own process;
  * seqlen 65536 at batch 1 stays exact, with no NaN/overflow, when delta_bias pushes the softplus'd
    step to ~1e-4 (long memory) and to ~10 (instant forgetting);
  * the peak device memory of a jitted selective_scan at batch 1, seqlen 65536, dim 5120 stays within
    1.1x of its inputs plus outputs (measured in a fresh process by benchmarks/bench_ops.py);
  * 64 chained in-place state updates at batch 256 inside one jitted function (command buffers):
    the state keeps its buffer and matches the oracle;
  * add_rms_norm at decode sizes (rows 1 to 257, F 768 and 2560, and an odd F for the scalar path)
    against the float64 NumPy oracle.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import oracle
from conftest import assert_close, tolerance
from mamba_jax import ops
from mamba_jax.ops import add_rms_norm, causal_conv1d, causal_conv1d_update, selective_scan, selective_state_update


def _has_cuda() -> bool:
    try:
        return len(jax.devices("cuda")) > 0
    except RuntimeError:
        return False


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA GPU (jax has no 'cuda' backend here)"),
    pytest.mark.skipif(_has_cuda() and not ops.cuda_available(),
                       reason="the mamba_jax CUDA kernels are not built (no nvcc at build time)"),
]

try:
    import cupy as cp
except ImportError:  # pragma: no cover - CuPy is on the GPU host
    cp = None

needs_cupy = pytest.mark.skipif(cp is None, reason="the float64 GPU oracle needs CuPy")
REPO = Path(__file__).resolve().parent.parent

# ---- the float64 oracle on the GPU ---------------------------------------------------------------
_ORACLE_SRC = r"""
extern "C" __global__ void scan_f64(
    const double* u, const double* dl, const double* A, const double* Bm, const double* Cm,
    const double* Dk, const double* z, const double* bias, double* y, double* last,
    long long batch, long long L, long long D, long long N, long long G, int softplus) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;  // b * D + d
  if (i >= batch * D) return;
  const long long b = i / D, d = i % D, g = d / (D / G);
  double h[256];
  for (long long n = 0; n < N; ++n) h[n] = 0.0;
  for (long long t = 0; t < L; ++t) {
    const long long k = (b * L + t) * D + d;
    double dt = dl[k] + (bias ? bias[d] : 0.0);
    if (softplus) dt = fmax(dt, 0.0) + log1p(exp(-fabs(dt)));   // log(1 + e^dt), stable
    const double* Bt = Bm + ((b * L + t) * G + g) * N;
    const double* Ct = Cm + ((b * L + t) * G + g) * N;
    double acc = 0.0;
    for (long long n = 0; n < N; ++n) {
      h[n] = exp(dt * A[d * N + n]) * h[n] + dt * u[k] * Bt[n];
      acc += h[n] * Ct[n];
    }
    if (Dk) acc += Dk[d] * u[k];
    if (z) acc *= z[k] / (1.0 + exp(-z[k]));
    y[k] = acc;
  }
  for (long long n = 0; n < N; ++n) last[i * N + n] = h[n];
}
"""


@functools.lru_cache(maxsize=None)
def _oracle_kernel():
    return cp.RawKernel(_ORACLE_SRC, "scan_f64")


def _c64(x):
    """A jax array (any float dtype) as a float64 CuPy array on the same GPU."""
    if x is None:
        return None
    # JAX computes asynchronously on its own stream, and frees x32 (memory it may hand to the next op)
    # once this function returns: wait for x32 before CuPy reads it, and for CuPy's copy before x32
    # goes. (Without both, a real-size comparison once read a half-written buffer: 97% "wrong" values.)
    x32 = jnp.asarray(x, jnp.float32).block_until_ready()
    try:
        out = cp.from_dlpack(x32).astype(cp.float64)
        cp.cuda.get_current_stream().synchronize()
        return out
    except Exception:  # a CuPy/JAX pair without a common DLPack path: go through the host
        return cp.asarray(np.asarray(x32), dtype=cp.float64)


def _ptr(a):
    return np.uint64(0) if a is None else a


def scan_oracle(u, delta, A, B, C, D=None, z=None, delta_bias=None, *, softplus=True):
    """B, C [batch, seqlen, dstate] or [batch, seqlen, ngroups, dstate]; returns float64 (y, last)."""
    batch, L, dim = u.shape
    n = A.shape[1]
    groups = B.shape[2] if B.ndim == 4 else 1
    args = [_c64(v) for v in (u, delta, A, B, C, D, z, delta_bias)]
    y = cp.empty((batch, L, dim), cp.float64)
    last = cp.empty((batch, dim, n), cp.float64)
    threads = 128
    _oracle_kernel()(((batch * dim + threads - 1) // threads,), (threads,),
                     tuple(_ptr(a) for a in args) + (y, last, np.int64(batch), np.int64(L), np.int64(dim),
                                                     np.int64(n), np.int64(groups), np.int32(softplus)))
    cp.cuda.Device().synchronize()
    return y, last


def assert_close_gpu(actual, expected, dtype, quantity, what):
    """conftest.assert_close's rule, evaluated on the GPU: |a - e| <= atol * max(1, rms(e)) + rtol * |e|."""
    rtol, atol = tolerance(dtype, quantity)
    a = _c64(actual)
    assert a.shape == expected.shape, f"{what}: shape {a.shape}, expected {expected.shape}"
    assert bool(cp.all(cp.isfinite(a))), f"{what}: non-finite values"
    scale = max(1.0, float(cp.sqrt(cp.mean(expected ** 2))))
    err = cp.abs(a - expected)
    excess = err - (atol * scale + rtol * cp.abs(expected))
    bad = int(cp.count_nonzero(excess > 0))
    if bad:
        i = np.unravel_index(int(cp.argmax(excess)), excess.shape)
        raise AssertionError(f"{what} ({np.dtype(dtype).name}, {quantity}): {bad}/{err.size} out of tolerance; "
                             f"worst at {tuple(map(int, i))}: got {float(a[i]):.6g}, expected "
                             f"{float(expected[i]):.6g}; max abs err {float(err.max()):.3g}")


def _normal(key, shape, dtype, scale=1.0, shift=0.0):
    return (jax.random.normal(key, shape) * scale + shift).astype(dtype)


# ---- dispatch ------------------------------------------------------------------------------------
def test_default_implementation_is_the_cuda_kernel():
    b, l, d, n, w = 1, 8, 16, 4, 4
    u = jnp.ones((b, l, d), jnp.bfloat16)
    A = -jnp.ones((d, n))
    Bm = jnp.ones((b, l, n), jnp.bfloat16)
    hlo = jax.jit(lambda u: selective_scan(u, u, A, Bm, Bm)).lower(u).as_text()
    assert "mamba_jax_selective_scan" in hlo
    hlo = jax.jit(lambda u: causal_conv1d(u, jnp.ones((d, w)))).lower(u).as_text()
    assert "mamba_jax_causal_conv1d" in hlo
    st = jnp.zeros((b, d, n))
    x = jnp.ones((b, d), jnp.bfloat16)
    hlo = jax.jit(lambda s, x: selective_state_update(s, x, x, A, Bm[:, 0], Bm[:, 0])).lower(st, x).as_text()
    assert "mamba_jax_selective_state_update" in hlo
    cs = jnp.zeros((b, d, w - 1), jnp.bfloat16)
    hlo = jax.jit(lambda x, cs: causal_conv1d_update(x, cs, jnp.ones((d, w)))).lower(x, cs).as_text()
    assert "mamba_jax_causal_conv1d_update" in hlo


def test_decode_projections_use_the_linear_kernel():
    """ops.linear lowers to mamba_jax_linear where its rule applies, and a model's decode step uses it."""
    x = jnp.ones((1, 768), jnp.bfloat16)
    w = jnp.ones((768, 3072), jnp.bfloat16)
    assert "mamba_jax_linear" in jax.jit(ops.linear).lower(x, w).as_text()
    assert "mamba_jax_linear" not in jax.jit(lambda x, w: ops.linear(x, w, implementation="xla")).lower(x, w).as_text()
    from flax import nnx
    from mamba_jax.nn import MambaConfig, MambaLM
    model = MambaLM(MambaConfig(vocab_size=64, d_model=512, n_layer=1), dtype=jnp.bfloat16,
                    param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    cache = model.init_cache(1)
    graphdef, state = nnx.split(model)
    hlo = jax.jit(lambda s, t, c: nnx.merge(graphdef, s).step(t, c)).lower(state, jnp.zeros((1,), jnp.int32),
                                                                           cache).as_text()
    assert hlo.count("mamba_jax_linear") >= 2  # in_proj [512, 2048] and out_proj [1024, 512]


def test_linear_raw_ffi_rejects_bad_shapes():
    x = jnp.ones((1, 16), jnp.bfloat16)
    call = lambda w, n: jax.ffi.ffi_call("mamba_jax_linear", jax.ShapeDtypeStruct((1, n), jnp.bfloat16))(x, w)
    with pytest.raises(Exception, match="multiple of 8"):
        jax.block_until_ready(call(jnp.ones((16, 12), jnp.bfloat16), 12))
    with pytest.raises(Exception, match="expected \\[16, N\\]"):
        jax.block_until_ready(call(jnp.ones((15, 16), jnp.bfloat16), 16))
    with pytest.raises(Exception, match="dtype"):
        jax.block_until_ready(call(jnp.ones((16, 16), jnp.float32), 16))


def _bf16_scan_inputs(seed, batch, seqlen, dim, ngroups=0, n=16):
    """(u, delta, A, B, C, D, z, delta_bias) of a Mamba-1 scan in bf16: dt = softplus(delta + bias) between
    1e-3 and 1e-1 (log-uniform), as the model initialises it; ngroups = 0: B, C without a group axis."""
    k = jax.random.split(jax.random.PRNGKey(seed), 8)
    bc = (batch, seqlen) + ((ngroups,) if ngroups else ()) + (n,)
    u = _normal(k[0], (batch, seqlen, dim), jnp.bfloat16)
    delta = _normal(k[1], (batch, seqlen, dim), jnp.bfloat16, 0.5)
    A = -jnp.exp(jax.random.normal(k[2], (dim, n)) * 0.5)
    B = _normal(k[3], bc, jnp.bfloat16)
    C = _normal(k[4], bc, jnp.bfloat16)
    D = jax.random.normal(k[5], (dim,))
    z = _normal(k[6], (batch, seqlen, dim), jnp.bfloat16)
    bias = jnp.log(jnp.expm1(jnp.exp(jax.random.uniform(k[7], (dim,), minval=np.log(1e-3), maxval=np.log(1e-1)))))
    return u, delta, A, B, C, D, z, bias


# ---- real sizes ----------------------------------------------------------------------------------
@needs_cupy
@pytest.mark.parametrize("ngroups", [0, 2], ids=["G-", "G2"])
def test_selective_scan_real_size(ngroups):
    """batch 4, seqlen 8192, dim 5120, dstate 16, bf16 with D, z, delta_bias, softplus, last state."""
    u, delta, A, B, C, D, z, bias = _bf16_scan_inputs(11 + ngroups, 4, 8192, 5120, ngroups)
    y, last = jax.jit(lambda *a: selective_scan(*a, delta_softplus=True, return_last_state=True))(
        u, delta, A, B, C, D, z, bias)
    y_ref, last_ref = scan_oracle(u, delta, A, B, C, D, z, bias)
    assert_close_gpu(y, y_ref, jnp.bfloat16, "out", "y")
    assert_close_gpu(last, last_ref, jnp.bfloat16, "state", "last_state")


@needs_cupy
def test_causal_conv1d_real_size():
    batch, seqlen, dim, width = 4, 8192, 5120, 4
    k = jax.random.split(jax.random.PRNGKey(3), 4)
    x = _normal(k[0], (batch, seqlen, dim), jnp.bfloat16)
    w = jax.random.normal(k[1], (dim, width)) * 0.5
    b = jax.random.normal(k[2], (dim,)) * 0.5
    st = _normal(k[3], (batch, dim, width - 1), jnp.bfloat16)
    y, fin = jax.jit(lambda *a: causal_conv1d(*a[:3], activation="silu", initial_state=a[3],
                                              return_final_state=True))(x, w, b, st)
    hist = cp.concatenate([cp.swapaxes(_c64(st), 1, 2), _c64(x)], axis=1)  # [batch, seqlen + width - 1, dim]
    acc = cp.broadcast_to(_c64(b), (batch, seqlen, dim)).copy()
    wc = _c64(w)
    for i in range(width):
        acc += hist[:, i:i + seqlen, :] * wc[:, i]
    y_ref = acc / (1.0 + cp.exp(-acc))
    assert_close_gpu(y, y_ref, jnp.bfloat16, "out", "y")
    assert_close_gpu(fin, cp.swapaxes(hist[:, seqlen:, :], 1, 2), jnp.bfloat16, "conv_state", "final_state")


_SCAN_CHILD = r"""
import sys
import numpy as np
import jax, jax.numpy as jnp
from mamba_jax.ops import selective_scan
a = np.load(sys.argv[1])
bf = lambda k: jnp.asarray(a[k], jnp.bfloat16)
y, last = jax.jit(lambda *x: selective_scan(*x, delta_softplus=True, return_last_state=True))(
    bf("u"), bf("delta"), jnp.asarray(a["A"]), bf("B"), bf("C"), jnp.asarray(a["D"]), bf("z"), jnp.asarray(a["bias"]))
np.savez(sys.argv[2], y=np.asarray(y.astype(jnp.float32)), last=np.asarray(last))
"""


@needs_cupy
@pytest.mark.parametrize("choice", ["lane", "tp", "tp:8:8", "tp:4:8"])
def test_selective_scan_kernel_choices(choice, tmp_path):
    """Each MAMBA_JAX_SCAN choice (read once per process, so each runs in its own) at B1 L2048 D1536, the
    small grid where the launcher picks between the lane kernel's sequence split and the time-parallel
    kernel's 16-, 8- and 4-channel blocks, against the float64 oracle."""
    u, delta, A, B, C, D, z, bias = _bf16_scan_inputs(23, 1, 2048, 1536)
    f32 = lambda x: np.asarray(jnp.asarray(x, jnp.float32))  # noqa: E731  (bf16 -> f32 is exact)
    np.savez(tmp_path / "in.npz", u=f32(u), delta=f32(delta), A=f32(A), B=f32(B), C=f32(C), D=f32(D), z=f32(z),
             bias=f32(bias))
    env = dict(os.environ, MAMBA_JAX_SCAN=choice, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    out = subprocess.run([sys.executable, "-c", _SCAN_CHILD, str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                         env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    got = np.load(tmp_path / "out.npz")
    y_ref, last_ref = scan_oracle(u, delta, A, B, C, D, z, bias)
    assert_close_gpu(jnp.asarray(got["y"]).astype(jnp.bfloat16), y_ref, jnp.bfloat16, "out", f"{choice} y")
    assert_close_gpu(jnp.asarray(got["last"]), last_ref, jnp.bfloat16, "state", f"{choice} last_state")


@needs_cupy
@pytest.mark.parametrize("step", [1e-4, 10.0], ids=["dt1e-4", "dt10"])
def test_selective_scan_long_sequence_extreme_dt(step):
    """seqlen 65536, float32: dt ~ 1e-4 keeps ~1e4 steps of memory (error could accumulate), dt ~ 10
    makes exp(dt A) underflow each step; neither may produce NaN/inf or drift from the oracle."""
    batch, seqlen, dim, n = 1, 65536, 256, 16
    k = jax.random.split(jax.random.PRNGKey(5), 6)
    u = _normal(k[0], (batch, seqlen, dim), jnp.float32)
    delta = _normal(k[1], (batch, seqlen, dim), jnp.float32, 0.1)
    A = -jnp.exp(jax.random.normal(k[2], (dim, n)) * 0.5)
    B = _normal(k[3], (batch, seqlen, n), jnp.float32)
    C = _normal(k[4], (batch, seqlen, n), jnp.float32)
    bias = jnp.full((dim,), float(np.log(np.expm1(step))), jnp.float32)  # softplus(bias) = step
    y, last = jax.jit(lambda *a: selective_scan(*a, delta_softplus=True, return_last_state=True))(
        u, delta, A, B, C, None, None, bias)
    assert bool(jnp.all(jnp.isfinite(y))) and bool(jnp.all(jnp.isfinite(last)))
    y_ref, last_ref = scan_oracle(u, delta, A, B, C, None, None, bias)
    assert_close_gpu(y, y_ref, jnp.float32, "out", "y")
    assert_close_gpu(last, last_ref, jnp.float32, "state", "last_state")


def test_selective_scan_peak_memory():
    """No [batch, seqlen, dim, dstate] intermediate: peak <= 1.1 x (inputs + outputs)."""
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_ops.py"), "--op", "selective_scan",
                          "--backend", "gpu", "--memory-only"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    mem = json.loads(out.stdout.strip().splitlines()[-1])
    print(mem)
    assert mem["y_finite"]
    assert mem["peak_bytes"] > 0, "the allocator reported no usage"
    assert mem["peak_over_inputs_outputs"] <= 1.1, mem


@needs_cupy
def test_state_update_in_place_chain():
    """64 chained in-place updates at batch 256 in one jitted function (captured as command buffers)."""
    batch, dim, n, steps = 256, 5120, 16, 64
    k = jax.random.split(jax.random.PRNGKey(9), 9)
    state = jax.random.normal(k[0], (batch, dim, n))
    x = _normal(k[1], (batch, dim), jnp.bfloat16)
    dt = _normal(k[2], (batch, dim), jnp.bfloat16, 0.5)
    A = -jnp.exp(jax.random.normal(k[3], (dim, n)) * 0.5)
    B = _normal(k[4], (batch, n), jnp.bfloat16)
    C = _normal(k[5], (batch, n), jnp.bfloat16)
    D = jax.random.normal(k[6], (dim,))
    z = _normal(k[7], (batch, dim), jnp.bfloat16)
    bias = jax.random.normal(k[8], (dim,)) * 0.5 - 4.0

    # The oracle, stepped in float64 with CuPy before the state is donated.
    h = _c64(state)
    xs, zs, Bs, Cs, Ac = _c64(x), _c64(z), _c64(B), _c64(C), _c64(A)
    s = _c64(dt) + _c64(bias)
    s = cp.maximum(s, 0) + cp.log1p(cp.exp(-cp.abs(s)))
    for _ in range(steps):
        h = cp.exp(s[..., None] * Ac) * h + (s * xs)[..., None] * Bs[:, None, :]
    y_ref = (cp.sum(h * Cs[:, None, :], axis=-1) + _c64(D) * xs) * (zs / (1 + cp.exp(-zs)))

    def chain(state, *rest):
        for _ in range(steps):
            y, state = selective_state_update(state, *rest, dt_softplus=True)
        return y, state

    pointer = state.unsafe_buffer_pointer()
    y, new_state = jax.jit(chain, donate_argnums=0)(state, x, dt, A, B, C, D, z, bias)
    jax.block_until_ready(new_state)
    assert state.is_deleted()
    assert new_state.unsafe_buffer_pointer() == pointer, "the state moved: the updates were not in place"
    assert_close_gpu(new_state, h, jnp.bfloat16, "state", "state after 64 steps")
    assert_close_gpu(y, y_ref, jnp.bfloat16, "out", "y of the last step")


@pytest.mark.parametrize("residual", [jnp.float32, jnp.bfloat16], ids=["h-f32", "h-bf16"])
@pytest.mark.parametrize("rows, features", [(1, 768), (4, 768), (64, 768), (257, 768), (1, 2560), (4, 2560),
                                            (64, 2560), (257, 2560), (3, 4097)])
def test_add_rms_norm_real_size(rows, features, residual):
    """The CUDA kernel (implementation=None on a GPU) at decode sizes: rows = batch, F = d_model of
    mamba-130m and mamba-2.8b; F 4097 takes the scalar path past its register chunks."""
    k = jax.random.split(jax.random.PRNGKey(rows * 7 + features), 3)
    h = _normal(k[0], (rows, features), residual, 2.0)
    y = _normal(k[1], (rows, features), jnp.bfloat16)
    scale = jax.random.normal(k[2], (features,)) * 0.3 + 1.0
    fn = jax.jit(lambda h, y, s: add_rms_norm(h, y, s, eps=1e-5))
    assert "mamba_jax_add_rms_norm" in fn.lower(h, y, scale).as_text()
    h_new, x = fn(h, y, scale)
    s_ref, x_ref = oracle.add_rms_norm(h, y, scale, eps=1e-5, residual_dtype=residual)
    assert h_new.dtype == residual and x.dtype == jnp.bfloat16
    assert_close(h_new, s_ref, residual, "out", "h_new")
    assert_close(x, x_ref, jnp.bfloat16, "out", "x")
