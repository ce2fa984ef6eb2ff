"""Times the CUDA kernels of the Mamba-1 ops on a GPU against pure-JAX paths measured in the same run.

    python3 benchmarks/bench_cuda.py [--out FILE] [--quick]
    python3 benchmarks/bench_cuda.py --memory-only      # prints the peak-memory measurement as JSON

How a time is taken (see NOTES-cuda.md): a kernel of 20-200 us is shorter than one Python dispatch,
so each variant runs as K calls chained inside one jitted function (call i+1 takes call i's state as
its initial state, so they run one after the other, inputs rotating over 4 sets so no call finds its
operands in the 50 MB L2), and the time per call is the slope (median T(K2) - median T(K1)) /
(K2 - K1), which cancels the dispatch. A chain returns every call's y, so no variant can skip work
(returning only the last y let XLA drop most of the pure-JAX work: 3.5x flattered baselines); the
extra outputs add a few microseconds of Python per call to the slope, the same for every variant.
The decode chains put an optimization barrier between steps (as the rest of a model would) so XLA
cannot fuse 64 pure-JAX steps into one kernel, and return the ys stacked (one output). The decode ops are timed as the issue defines them: 64
chained calls in one jitted function (state donated), time / 64 ("loop64").

Rows: selective_scan at the issue's four shapes (bf16, dstate 16, D, z, delta_bias, softplus, last
state) vs the associative-scan path; causal_conv1d at batch 4, seqlen 2048, dim 5120, width 4, silu
vs the pure-JAX reference and vs the copy ceiling (a CuPy device-to-device copy); selective_state_update and causal_conv1d_update at batch 1 and 256;
the peak device memory of a jitted selective_scan at batch 1, seqlen 65536, dim 5120. JSON rows go
to --out (default benchmarks/results/h200-<date>-<commit>.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import mamba_jax as mj  # noqa: E402
from bench_ops import selective_scan_assoc  # noqa: E402  (the associative-scan baseline)
from mamba_jax.shapes import MAMBA_130M, MAMBA_2_8B  # noqa: E402

JAX_VARIANTS = ("jax-assoc", "jax-ref")
NSETS = 4
LOOP = 64


# ---- inputs -------------------------------------------------------------------------------------

def _keys(n, seed=0):
    return list(jax.random.split(jax.random.PRNGKey(seed), n))


def scan_set(key, batch, seqlen, dim, dstate, dtype):
    """(u, delta, A, B, C, D, z, delta_bias): realistic values (no zeros), dt ~ softplus(N(0,.5) - 4)."""
    k = jax.random.split(key, 8)
    act = lambda kk, shape, s=1.0, m=0.0: (jax.random.normal(kk, shape) * s + m).astype(dtype)
    return (act(k[0], (batch, seqlen, dim)), act(k[1], (batch, seqlen, dim), 0.5),
            -jnp.exp(jax.random.normal(k[2], (dim, dstate)) * 0.5),
            act(k[3], (batch, seqlen, dstate)), act(k[4], (batch, seqlen, dstate)),
            jax.random.normal(k[5], (dim,)), act(k[6], (batch, seqlen, dim)),
            jax.random.normal(k[7], (dim,)) * 0.5 - 4.0)


# ---- timing -------------------------------------------------------------------------------------

def slope_timing(make, k1, k2, args, reps):
    """Per-call time of `make(k)` (a jitted function running k chained calls) from two chain lengths."""
    t1 = common.measure(make(k1), [args], warmup=2, reps=reps)
    t2 = common.measure(make(k2), [args], warmup=2, reps=reps)
    base = t1.median_ms
    return common.Timing([(s - base) / (k2 - k1) for s in t2.samples_ms]), t1, t2


def loop_timing(make, args, reps, donate=0, carry_out=0):
    """Time of one call inside a jitted chain of LOOP calls (state donated and fed back), / LOOP."""
    fn = make(LOOP)
    fresh = list(args)
    fresh[donate] = jnp.array(fresh[donate], copy=True)
    t = common.measure(fn, [tuple(fresh)], warmup=3, reps=reps, carry=(donate, carry_out))
    return common.Timing([s / LOOP for s in t.samples_ms])


# ---- selective_scan -----------------------------------------------------------------------------

def _scan_chain(k, variant):
    def f(sets, h0):
        h, ys = h0, []
        for i in range(k):
            u, dl, A, B, C, D, z, db = sets[i % len(sets)]
            if variant == "ffi":
                y, h = mj.selective_scan(u, dl, A, B, C, D, z, db, delta_softplus=True, initial_state=h,
                                         return_last_state=True, implementation="ffi")
            else:
                y, h = selective_scan_assoc(u, dl, A, B, C, D, z, db, delta_softplus=True, initial_state=h)
            ys.append(y)
        return h, ys
    return jax.jit(f)


def bench_scan(shapes, reps, dtype=jnp.bfloat16):
    rows = []
    for batch, seqlen, dim in shapes:
        dstate = 16
        shape = dict(batch=batch, seqlen=seqlen, dim=dim, dstate=dstate)
        sets = [scan_set(k, batch, seqlen, dim, dstate, dtype) for k in _keys(NSETS)]
        h0 = jnp.zeros((batch, dim, dstate), jnp.float32) + 0.1
        u, dl, A, B, C, D, z, db = sets[0]
        moved = common.nbytes(u, dl, z, u, B, C, A, D, db, h0, h0)  # u, delta, z in, y out; B, C; params; state
        for variant, (k1, k2, r) in (("ffi", (2, 12, reps)), ("jax-assoc", (1, 3, max(3, reps // 6)))):
            t, t1, t2 = slope_timing(lambda k: _scan_chain(k, variant), k1, k2, (sets, h0), r)
            rows.append(common.make_row("selective_scan", shape, "bfloat16", variant, t, moved, mode="chain",
                                        chain=[k1, k2], chain_medians_ms=[t1.median_ms, t2.median_ms]))
            print(f"  selective_scan {shape} {variant}: {t.median_ms:.4f} ms", flush=True)
        del sets
    return rows


# ---- causal_conv1d + copy ceiling ---------------------------------------------------------------

def _conv_chain(k, impl):
    def f(sets, st):
        ys = []
        for i in range(k):
            x, w, b = sets[i % len(sets)]
            y, st = mj.causal_conv1d(x, w, b, activation="silu", initial_state=st, return_final_state=True,
                                     implementation=impl)
            ys.append(y)
        return st, ys
    return jax.jit(f)


def cupy_copy_bandwidth(nbytes=2 << 30, reps=20):
    """Device-to-device copy through CuPy (bytes read + written per second), or None without CuPy."""
    try:
        import cupy as cp
    except ImportError:
        return None
    a = cp.ones(nbytes // 4, cp.float32)
    b = cp.empty_like(a)
    start, end = cp.cuda.Event(), cp.cuda.Event()
    for _ in range(3):
        b[...] = a
    times = []
    for _ in range(reps):
        start.record()
        b[...] = a
        end.record()
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end))
    times.sort()
    med = times[len(times) // 2]
    del a, b
    cp.get_default_memory_pool().free_all_blocks()
    return {"bytes": 2 * nbytes, "median_ms": med, "gb_per_s": 2 * nbytes / (med * 1e-3) / 1e9}


def bench_conv(reps, dtype=jnp.bfloat16):
    batch, seqlen, dim, width = 4, 2048, MAMBA_2_8B.dim, 4
    shape = dict(batch=batch, seqlen=seqlen, dim=dim, width=width)
    sets = []
    for k in _keys(NSETS, 1):
        k = jax.random.split(k, 3)
        sets.append((jax.random.normal(k[0], (batch, seqlen, dim)).astype(dtype),
                     jax.random.normal(k[1], (dim, width)) * 0.5, jax.random.normal(k[2], (dim,))))
    st = jnp.zeros((batch, dim, width - 1), dtype) + jnp.asarray(0.1, dtype)
    x = sets[0][0]
    moved = common.nbytes(x, x)
    rows = []
    for variant, make, (k1, k2) in (("ffi", lambda k: _conv_chain(k, "ffi"), (2, 12)),
                                    ("jax-ref", lambda k: _conv_chain(k, "xla"), (2, 12))):
        t, t1, t2 = slope_timing(make, k1, k2, (sets, st), reps)
        rows.append(common.make_row("causal_conv1d", shape, "bfloat16", variant, t, moved, mode="chain", chain=[k1, k2],
                                    chain_medians_ms=[t1.median_ms, t2.median_ms]))
        print(f"  causal_conv1d {shape} {variant}: {t.median_ms:.4f} ms", flush=True)
    copy = cupy_copy_bandwidth()
    if copy:
        rows.append(common.make_row("copy", dict(bytes=copy["bytes"]), "float32", "cupy-d2d",
                                    common.Timing([copy["median_ms"]]), copy["bytes"], mode="events"))
        print(f"  cupy device-to-device copy: {copy['gb_per_s']:.0f} GB/s", flush=True)
    return rows


# ---- decode ops ---------------------------------------------------------------------------------

def _ssu_chain(k, impl):
    def f(state, x, dt, A, B, C, D, z, db):
        ys = []
        for _ in range(k):
            y, state = mj.selective_state_update(state, x, dt, A, B, C, D, z, db, dt_softplus=True,
                                                 implementation=impl)
            y, state = jax.lax.optimization_barrier((y, state))
            ys.append(y)
        return state, jnp.stack(ys)
    return jax.jit(f, donate_argnums=0)


def _cupd_chain(k, impl):
    def f(st, x, w, b):
        ys = []
        for _ in range(k):
            y, st = mj.causal_conv1d_update(x, st, w, b, activation="silu", implementation=impl)
            y, st = jax.lax.optimization_barrier((y, st))
            ys.append(y)
        return st, jnp.stack(ys)
    return jax.jit(f, donate_argnums=0)


def bench_decode(reps, batches=(1, 256), dtype=jnp.bfloat16):
    dim, dstate, width = MAMBA_2_8B.dim, 16, 4
    rows = []
    for batch in batches:
        k = jax.random.split(jax.random.PRNGKey(7), 9)
        act = lambda kk, shape, s=1.0: (jax.random.normal(kk, shape) * s).astype(dtype)
        args = (jax.random.normal(k[0], (batch, dim, dstate)), act(k[1], (batch, dim)),
                act(k[2], (batch, dim), 0.5), -jnp.exp(jax.random.normal(k[3], (dim, dstate)) * 0.5),
                act(k[4], (batch, dstate)), act(k[5], (batch, dstate)), jax.random.normal(k[6], (dim,)),
                act(k[7], (batch, dim)), jax.random.normal(k[8], (dim,)) * 0.5 - 4.0)
        state_rw = 2 * args[0].size * 4
        shape = dict(batch=batch, dim=dim, dstate=dstate)
        for variant, impl in (("ffi", "ffi"), ("jax-ref", "xla")):
            t = loop_timing(lambda kk: _ssu_chain(kk, impl), args, reps)
            rows.append(common.make_row("selective_state_update", shape, "bfloat16", variant, t, state_rw,
                                        mode=f"loop{LOOP}", bytes_note="state read + write only"))
            print(f"  selective_state_update {shape} {variant}: {t.median_ms * 1e3:.2f} us/call, "
                  f"{state_rw / (t.median_ms * 1e-3) / 1e12:.2f} TB/s on the state", flush=True)
        cargs = (act(k[0], (batch, dim, width - 1)), act(k[1], (batch, dim)),
                 jax.random.normal(k[2], (dim, width)) * 0.5, jax.random.normal(k[3], (dim,)))
        moved = common.nbytes(cargs[0], cargs[0], cargs[1], cargs[1])
        cshape = dict(batch=batch, dim=dim, width=width)
        for variant, impl in (("ffi", "ffi"), ("jax-ref", "xla")):
            t = loop_timing(lambda kk: _cupd_chain(kk, impl), cargs, reps)
            rows.append(common.make_row("causal_conv1d_update", cshape, "bfloat16", variant, t, moved,
                                        mode=f"loop{LOOP}"))
            print(f"  causal_conv1d_update {cshape} {variant}: {t.median_ms * 1e3:.2f} us/call", flush=True)
    return rows


# ---- peak memory --------------------------------------------------------------------------------

def scan_peak_memory(batch=1, seqlen=65536, dim=MAMBA_2_8B.dim, dstate=16, dtype=jnp.bfloat16):
    """Peak device memory of a jitted selective_scan (bf16, D, z, delta_bias, softplus, last state),
    measured in this process from the allocator's statistics; run it in a fresh process."""
    dev = jax.devices()[0]
    base = (dev.memory_stats() or {}).get("bytes_in_use", 0)
    act = (batch, seqlen, dim)
    make = jax.jit(lambda: (jnp.full(act, 0.5, dtype), jnp.full(act, -1.0, dtype),
                            jnp.full((dim, dstate), -1.0, jnp.float32), jnp.full((batch, seqlen, dstate), 0.3, dtype),
                            jnp.full((batch, seqlen, dstate), 0.2, dtype), jnp.ones((dim,), jnp.float32),
                            jnp.full(act, 0.7, dtype), jnp.full((dim,), -2.0, jnp.float32)))
    args = jax.block_until_ready(make())
    fn = jax.jit(lambda *a: mj.selective_scan(*a, delta_softplus=True, return_last_state=True))
    compiled = fn.lower(*args).compile()
    ma = compiled.memory_analysis()
    y, last = jax.block_until_ready(compiled(*args))
    stats = dev.memory_stats() or {}
    inputs = sum(a.nbytes for a in args)
    outputs = y.nbytes + last.nbytes
    peak = stats.get("peak_bytes_in_use", 0) - base
    return {
        "shape": dict(batch=batch, seqlen=seqlen, dim=dim, dstate=dstate), "dtype": jnp.dtype(dtype).name,
        "inputs_bytes": int(inputs), "outputs_bytes": int(outputs), "peak_bytes": int(peak),
        "peak_over_inputs_outputs": peak / (inputs + outputs),
        "xla_temp_bytes": int(getattr(ma, "temp_size_in_bytes", -1)) if ma is not None else None,
        "assoc_scan_intermediate_bytes": batch * seqlen * dim * dstate * 4,
        "y_finite": bool(jnp.isfinite(y.astype(jnp.float32)).all()),
        "device": dev.device_kind,
    }


def peak_memory_in_subprocess():
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    out = subprocess.run([sys.executable, __file__, "--memory-only"], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"memory measurement failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- main ---------------------------------------------------------------------------------------

TARGETS = [  # (op, shape subset, variant, limit, unit) from issue 3
    ("selective_scan", dict(batch=1, seqlen=2048, dim=5120), "ms", 0.10),
    ("selective_scan", dict(batch=4, seqlen=2048, dim=5120), "ms", 0.37),
    ("selective_scan", dict(batch=1, seqlen=8192, dim=5120), "ms", 0.45),
    ("selective_scan", dict(batch=1, seqlen=2048, dim=1536), "ms", 0.04),
    ("selective_state_update", dict(batch=1), "ms", 0.003),
    ("selective_state_update", dict(batch=256), "TB/s", 3.8),
]


def print_targets(rows, copy_gbs):
    print("\nIssue 3 targets (ffi rows):")
    for op, sub, unit, limit in TARGETS:
        for r in rows:
            if r["op"] == op and r["variant"] == "ffi" and all(r["shape"].get(k) == v for k, v in sub.items()):
                if unit == "ms":
                    ok = r["median_ms"] <= limit
                    print(f"  {op} {sub}: {r['median_ms']:.4f} ms (target <= {limit}) {'MET' if ok else 'MISSED'}")
                else:
                    tbs = r["gb_per_s"] / 1e3
                    print(f"  {op} {sub}: {tbs:.2f} TB/s (target >= {limit}) {'MET' if tbs >= limit else 'MISSED'}")
    for r in rows:
        if r["op"] == "causal_conv1d" and r["variant"] == "ffi" and copy_gbs:
            frac = r["gb_per_s"] / copy_gbs
            print(f"  causal_conv1d {r['shape']}: {r['gb_per_s']:.0f} GB/s = {frac:.0%} of copy "
                  f"({copy_gbs:.0f} GB/s) (target >= 70%) {'MET' if frac >= 0.7 else 'MISSED'}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--memory-only", action="store_true")
    args = ap.parse_args()
    if args.memory_only:
        print(json.dumps(scan_peak_memory()))
        return
    mem = peak_memory_in_subprocess()  # first, before this process takes GPU memory
    print(f"peak memory, jitted selective_scan {mem['shape']}: {mem['peak_bytes'] / 1e9:.3f} GB = "
          f"{mem['peak_over_inputs_outputs']:.4f} x inputs+outputs ({(mem['inputs_bytes'] + mem['outputs_bytes']) / 1e9:.3f} GB); "
          f"XLA temp {mem['xla_temp_bytes']} B", flush=True)
    if jax.default_backend() != "gpu" or not mj.ops.cuda_available():
        sys.exit("bench_cuda.py needs a GPU and the mamba_jax CUDA kernels")
    reps = 10 if args.quick else 30
    rows = []
    rows += bench_scan([(1, 2048, 5120), (4, 2048, 5120), (1, 8192, 5120), (1, 2048, MAMBA_130M.dim)], reps)
    rows += bench_conv(reps)
    rows += bench_decode(reps)
    common.add_ratios(rows, JAX_VARIANTS)
    mrow = {**common.machine_info(), **mem, "op": "selective_scan_peak_memory", "variant": "ffi",
            "mode": "memory_stats"}
    rows.append(mrow)
    commit = os.environ.get("MJ_COMMIT")
    for r in rows:
        if commit:
            r["git_commit"] = commit
    print()
    print(common.format_table([r for r in rows if "median_ms" in r]))
    copy = [r for r in rows if r["op"] == "copy"]
    print_targets(rows, copy[0]["gb_per_s"] if copy else None)
    out = common.write_rows(rows, args.out or common.default_out_path("h200"))
    print(f"\nwrote {len(rows)} rows to {out}")


if __name__ == "__main__":
    main()
