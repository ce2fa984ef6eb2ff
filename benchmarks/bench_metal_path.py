"""Times the pure-JAX ("xla" / Metal-path) Mamba-1 selective scan forms against each other.

    python3 benchmarks/bench_metal_path.py          # the default backend, one mamba-130m layer
    python3 benchmarks/bench_metal_path.py --gpu    # on a GPU: one mamba-2.8b layer in bf16 (< 1 min)

Runs from a source checkout without installing (the pure-JAX path needs no compiled module).

Variants (all exact, fp32 math, same inputs; the max |y - y_ref| of each is printed as a check):
  ref-scan     reference.selective_scan_ref: lax.scan over the L tokens, state [b, d, n] (the
               library's gradient source and oracle twin; the "xla" path before the chunked one)
  xla          selective_scan(implementation="xla"): what the library runs on this backend's
               pure-JAX path (CPU: one chunk = a token loop in the channel-minor layout; other
               backends: the chunked scan with the default chunk size)
  chunked-T    selective_scan_chunked with T positions per chunk (T + L/T sequential steps),
               "-u4": its local scan unrolled 4x (GPU only)
  assoc        lax.associative_scan over the sequence (written here as a baseline only: it needs
               interior padding, which jax-metal cannot run, and materialises [b, L, d, n] twice)

Shapes: CPU: batch 1, dim 1536, dstate 16, seqlen 2048, float32 (one mamba-130m layer);
--gpu: batch 1, dim 5120, dstate 16, seqlen 2048, bfloat16 (one mamba-2.8b layer).
Options as a Mamba block uses them: D, z, delta_bias, delta_softplus. Prints a table and writes JSON
rows to benchmarks/results/metal-path-<backend>-<date>-<commit>.json. ratio_vs_best_jax is
ref-scan time / this time (> 1: faster than the lax.scan reference); ratio_vs_assoc likewise.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import numpy as np
import jax
import jax.numpy as jnp
from jax import lax

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
sys.path.insert(1, str(_HERE.parent))  # runs from a source checkout without an install
import common  # noqa: E402

import mamba_jax as mj  # noqa: E402
from mamba_jax.ops.chunked import default_chunk_size, selective_scan_chunked  # noqa: E402
from mamba_jax.ops.reference import selective_scan_ref, softplus  # noqa: E402
from mamba_jax.shapes import MAMBA_130M, MAMBA_2_8B  # noqa: E402

f32 = jnp.float32


def selective_scan_assoc(u, delta, A, B, C, D, z, delta_bias, *, delta_softplus, initial_state=None):
    """The same math with h_t = a_t h_{t-1} + b_t solved by lax.associative_scan over L.

    u, delta, z [b, l, d]; A [d, n]; B, C [b, l, 1, n] (one group); D, delta_bias [d]. fp32 math.
    Benchmark baseline only (not Metal-safe: associative_scan lowers to interior padding)."""
    u32 = u.astype(f32)
    dt = delta.astype(f32) + delta_bias
    dt = softplus(dt) if delta_softplus else dt
    a = jnp.exp(dt[..., None] * A)  # [b, l, d, n]
    bx = (dt * u32)[..., None] * B[:, :, 0, None, :].astype(f32)

    def combine(left, right):
        a_l, b_l = left
        a_r, b_r = right
        return a_l * a_r, a_r * b_l + b_r

    a_cum, h = lax.associative_scan(combine, (a, bx), axis=1)
    if initial_state is not None:
        h = h + a_cum * initial_state[:, None]
    y = jnp.sum(h * C[:, :, 0, None, :].astype(f32), axis=-1) + u32 * D
    y = y * (z.astype(f32) * jax.nn.sigmoid(z.astype(f32)))
    return y.astype(u.dtype), h[:, -1]


def make_inputs(batch, seqlen, dim, dstate, dtype, seed=0):
    rng = np.random.default_rng(seed)
    act = lambda *s: jnp.asarray(rng.standard_normal(s), dtype)
    return dict(
        u=act(batch, seqlen, dim),
        delta=act(batch, seqlen, dim),
        A=jnp.asarray(-np.exp(rng.standard_normal((dim, dstate))), f32),
        B=act(batch, seqlen, 1, dstate),
        C=act(batch, seqlen, 1, dstate),
        D=jnp.asarray(rng.standard_normal(dim), f32),
        z=act(batch, seqlen, dim),
        # inverse softplus of steps in [1e-3, 1e-1], as Mamba initialises dt_bias
        delta_bias=jnp.asarray(np.log(np.expm1(np.exp(rng.uniform(np.log(1e-3), np.log(1e-1), dim)))), f32),
    )


ORDER = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def variants(seqlen: int, gpu: bool) -> dict:
    def lib(*a):
        return mj.selective_scan(*a, delta_softplus=True, return_last_state=True, implementation="xla")

    def chunked(T, unroll=1):
        return lambda *a: selective_scan_chunked(*a, delta_softplus=True, chunk_size=T, unroll=unroll)

    out = {"ref-scan": lambda *a: selective_scan_ref(*a, delta_softplus=True), "xla": lib}
    if gpu:  # "xla" is the chunked form with the default chunk (64 at L=2048) there
        out.update({"chunked-32": chunked(32), "chunked-128": chunked(128), "chunked-64-u4": chunked(64, 4)})
    else:  # "xla" is the token loop there
        out.update({"chunked-32": chunked(32), "chunked-64": chunked(64)})
    out["assoc"] = lambda *a: selective_scan_assoc(*a, delta_softplus=True)
    return out


def run_case(batch, seqlen, dim, dstate, dtype, gpu: bool, reps: int, max_seconds: float):
    inputs = make_inputs(batch, seqlen, dim, dstate, dtype)
    args = tuple(inputs[k] for k in ORDER)
    shape = {"batch": batch, "seqlen": seqlen, "dim": dim, "dstate": dstate}
    isz = jnp.dtype(dtype).itemsize
    moved = (4 * batch * seqlen * dim + 2 * batch * seqlen * dstate) * isz  # u, delta, z, y; B, C
    y_ref = None
    rows = []
    for name, fn in variants(seqlen, gpu).items():
        jfn = jax.jit(fn)
        y, _ = jax.block_until_ready(jfn(*args))  # compile + first run
        if y_ref is None:
            y_ref = np.asarray(y, np.float32)
        err = float(np.max(np.abs(np.asarray(y, np.float32) - y_ref)))
        t = common.measure(jfn, [args], warmup=2, reps=reps, max_seconds=max_seconds)
        row = common.make_row("selective_scan_metal_path", shape, jnp.dtype(dtype).name, name, t,
                              bytes_moved=moved, max_abs_err_vs_ref_scan=err,
                              default_chunk=default_chunk_size(seqlen))
        rows.append(row)
        print(f"  {name:<14} {t.median_ms:10.3f} ms  (max |y - ref| = {err:.3g})", flush=True)
    assoc = {common._case_key(r): r["median_ms"] for r in rows if r["variant"] == "assoc"}
    for r in rows:
        a = assoc.get(common._case_key(r))
        r["ratio_vs_assoc"] = a / r["median_ms"] if a else None
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu", action="store_true", help="GPU shape (mamba-2.8b layer, bf16)")
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    backend = jax.default_backend()
    if a.gpu and backend != "gpu":
        sys.exit(f"--gpu asked for, but the default JAX backend is {backend!r}")
    seqlen = 2048
    if a.gpu:
        cases = [(1, seqlen, MAMBA_2_8B.dim, MAMBA_2_8B.dstate, jnp.bfloat16)]
        reps, max_s = a.reps or 20, 3.0
    else:
        cases = [(1, seqlen, MAMBA_130M.dim, MAMBA_130M.dstate, jnp.float32)]
        reps, max_s = a.reps or 5, 20.0
    print(f"backend {backend} ({common.machine_info()['device']}), jax {jax.__version__}")
    rows = []
    for b, l, d, n, dt in cases:
        print(f"B{b} L{l} D{d} N{n} {jnp.dtype(dt).name}:", flush=True)
        rows += run_case(b, l, d, n, dt, a.gpu, reps, max_s)
    common.add_ratios(rows, ("ref-scan",))
    print(common.format_table(rows))
    print("ratio = ref-scan median / this median;  assoc median / this median: "
          + ", ".join(f"{r['variant']} {r['ratio_vs_assoc']:.2f}" for r in rows if r["ratio_vs_assoc"]))
    out = a.out or common.default_out_path(f"metal-path-{backend}")
    print("wrote", common.write_rows(rows, out))


if __name__ == "__main__":
    main()
