"""How the op benchmarks time a call and what a row holds; the same on every backend.

A case is one op at one shape and dtype. Each implementation of it ("ffi", "xla", or a baseline
written in the op's entry) is timed one of two ways, both inside one jitted program so that the
Python dispatch (tens of microseconds, longer than many kernels) does not count:

  chain   K calls chained in one jitted function (call i+1 takes call i's state as its initial state,
          inputs rotating over NSETS equal-shaped sets so no call finds its operands hot in cache),
          an optimization barrier on each call's (state, output) so that XLA cannot merge calls; every
          call's output is returned (as a list: no copy into one array), so XLA cannot skip computing
          any. CHAIN_OUTPUTS = "last" returns only the last call's (mode "chain-last"): the others then
          stay in XLA's temporary buffer, but XLA drops the parts of a pure-JAX implementation whose
          outputs nobody reads (measured on the H200: negative slopes for the pure-JAX conv1d), so only
          custom-call rows mean anything there. The per-call time is the slope
          (T(K2) - median T(K1)) / (K2 - K1) over the samples of T(K2): the dispatch cancels.
  loopK   K decode steps chained in one jitted function with the state donated and fed back from one
          sample to the next (the in-place update a decode loop runs), an optimization barrier
          between steps so XLA cannot fuse the K pure-JAX steps into one; every step's output is
          returned as a list (CHAIN_OUTPUTS = "last": only the last step's, mode "loopK-last", with the
          same caveat as chain-last). The per-step time is the slope between K/4 and K steps, as for
          chains: the dispatch of the jitted call (tens of microseconds) cancels.
Returning K outputs costs each execution K output buffers: measured on the H200 (2026-11-30), 2.5-4.6 us
per decode step (state update B256 51.8 us per step with every output returned, 47.2 with the last
one), which a replayed CUDA graph does not pay; the side-by-side benchmark therefore times our
custom calls with "last".

Each sample is one call ended by `block_until_ready`, after warm-up calls (compilation, caches,
thread pools); a row keeps the median, 10th and 90th percentiles of the samples. Each
implementation is also run once on set 0 and compared with "xla" (max_abs_diff_vs_xla), so a fast
but wrong row shows up in the data.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Callable, Sequence

import numpy as np
import jax
import jax.numpy as jnp

from mamba_jax.bench import default_out_path, now_iso, provenance, write_rows  # noqa: F401  (re-exported)

NSETS = 4
# Decode ops: per-call time = slope between programs of LOOP // 4 and LOOP donated steps. A program's fixed
# cost (dispatch, donation, sync: ~0.2 ms on the H200) varies by ~0.05-0.1 ms between runs; with 64 steps
# the 48-step difference (~0.1 ms at 2 us a step) was within that noise (slopes below the kernel's own
# time, 2026-11-30), with 256 it is ~4x larger.
LOOP = 256
# "all": a chain or loop returns every call's output; "last": only the last call's (custom-call rows only,
# see above). bench_ops.py --chain-outputs.
CHAIN_OUTPUTS = "all"
# Chain lengths (K1, K2) of the full-sequence ops' slope.
CHAIN_K = (4, 24)

# Letters of the case names, as the test ids spell shapes (B2-L113-H3-P16-N16).
_LETTER = {"batch": "B", "seqlen": "L", "dim": "D", "nheads": "H", "headdim": "P", "ngroups": "G",
           "dstate": "N", "width": "W", "K": "K", "N": "N"}


def case_name(shape: dict[str, int]) -> str:
    """'B1-L2048-D5120-N16' from {'batch': 1, 'seqlen': 2048, 'dim': 5120, 'dstate': 16}."""
    return "-".join(f"{_LETTER.get(k, k)}{v}" for k, v in shape.items())


@dataclasses.dataclass
class Timing:
    samples_ms: list[float]

    @property
    def median_ms(self) -> float:
        return float(np.median(self.samples_ms))

    def pct(self, q) -> float:
        return float(np.percentile(self.samples_ms, q))


@dataclasses.dataclass
class Case:
    """One op at one shape.

    make_sets(key) -> one input set (a tuple of arrays); NSETS of them rotate through a chain.
    impls: {implementation name: call(carry, *inputs) -> (new_carry, out)}; `carry` is the state
      chained from call to call (initial_state / state / conv_state), None-free.
    carry0(set0) -> the first carry. `kind`: "chain" (full-sequence ops) or "loop" (decode steps).
    nsets: input sets of a chain; an op whose output does not depend on the carry needs one per call
      of the longest chain (else XLA may merge the repeated identical calls).
    """

    op: str
    model: str
    shape: dict[str, int]
    dtype: str
    make_sets: Callable[[Any], tuple]
    carry0: Callable[[tuple], Any]
    impls: dict[str, Callable]
    kind: str = "chain"
    floors: tuple[str, ...] = ()  # impls that are a traffic floor, not the op (not compared with xla)
    nsets: int = NSETS
    bytes_moved: int | None = None
    flops: int | None = None
    note: str | None = None
    extra: dict = dataclasses.field(default_factory=dict)  # more fields for its rows

    @property
    def name(self) -> str:
        return case_name(self.shape)


def size_bytes(dtype, *shapes) -> int:
    """Bytes of arrays of the given shapes in `dtype` (what a case moves, from its shapes alone)."""
    return int(sum(np.prod(s, dtype=np.int64) for s in shapes)) * jnp.dtype(dtype).itemsize


def state_first(op, impl, **kw):
    """call(state, *inputs) -> (new_state, y) of an op `op(state, *inputs, ...) -> (y, new_state)`."""
    def call(state, *inputs):
        y, state = op(state, *inputs, implementation=impl, **kw)
        return state, y
    return call


def fresh_carry(case: Case, sets):
    """A copy of the case's first carry (an array or a tuple of them) that a donating loop may consume."""
    return jax.tree.map(lambda a: jnp.array(a, copy=True), case.carry0(sets[0]))


def normal(key, shape, dtype, scale=1.0, mean=0.0):
    return (jax.random.normal(key, shape, jnp.float32) * scale + mean).astype(dtype)


def measure(fn: Callable, args: tuple, *, warmup: int, reps: int, max_seconds: float,
            carry: tuple[int, int] | None = None) -> Timing:
    """Times `fn(*args)` (jitted). carry=(arg, out): output `out` replaces argument `arg` of the next call."""
    args = list(args)
    # Each execution's outputs are freed before the next call (`del out`), so that the next one can get the
    # same buffers back, as a decode loop or a replayed CUDA graph does.
    for _ in range(warmup):
        out = jax.block_until_ready(fn(*args))
        if carry:
            args[carry[0]] = out[carry[1]]
        del out
    samples, start = [], time.perf_counter()
    while len(samples) < reps and (time.perf_counter() - start < max_seconds or len(samples) < 3):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        samples.append((time.perf_counter() - t0) * 1e3)
        if carry:
            args[carry[0]] = out[carry[1]]
        del out
    return Timing(samples)


def _returns_last(outputs: str | None = None) -> bool:
    """Whether a chain or loop returns only its last call's output (`outputs`, else CHAIN_OUTPUTS)."""
    return (outputs or CHAIN_OUTPUTS) == "last"


def _chain(call, k: int, outputs: str | None = None):
    last = _returns_last(outputs)

    def f(sets, carry):
        outs = []
        for i in range(k):
            carry, out = jax.lax.optimization_barrier(call(carry, *sets[i % len(sets)]))
            outs.append(out)
        return carry, (outs[-1] if last else outs)
    return jax.jit(f)


def _loop(call, k: int, outputs: str | None = None):
    last = _returns_last(outputs)

    def f(carry, inputs):
        outs = []
        for _ in range(k):
            carry, out = call(carry, *inputs)
            carry, out = jax.lax.optimization_barrier((carry, out))
            outs.append(out)
        return carry, (outs[-1] if last else outs)
    return jax.jit(f, donate_argnums=0)


def time_impl(case: Case, call, sets, *, quick: bool) -> tuple[Timing, str, dict]:
    """Per-call timing of one implementation -> (timing, mode, extra row fields)."""
    reps, max_s = (7, 3.0) if quick else (30, 20.0)
    if case.kind == "loop":
        k1, k2 = (2, 8) if quick else (LOOP // 4, LOOP)
        # Each timing donates a state of its own (the first is consumed by the call that takes it).
        t1, t2 = (measure(_loop(call, k), (fresh_carry(case, sets), sets[0]), warmup=3, reps=reps,
                          max_seconds=max_s, carry=(0, 0)) for k in (k1, k2))
        form, mode = "loop", f"loop{k2}" + ("-last" if _returns_last() else "")
    else:
        k1, k2 = (1, 3) if quick else CHAIN_K
        c0 = case.carry0(sets[0])
        t1, t2 = (measure(_chain(call, k), (sets, c0), warmup=2, reps=reps, max_seconds=max_s) for k in (k1, k2))
        form, mode = "chain", ("chain-last" if _returns_last() else "chain")
    slope = Timing([(s - t1.median_ms) / (k2 - k1) for s in t2.samples_ms])
    return slope, mode, {form: [k1, k2], f"{form}_medians_ms": [t1.median_ms, t2.median_ms]}


def _max_abs_diff(a, b) -> float:
    return max(float(jnp.max(jnp.abs(x.astype(jnp.float32) - y.astype(jnp.float32))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def run_case(case: Case, impls: Sequence[str], *, quick: bool, log=print) -> list[dict]:
    """Rows of the case for each implementation in `impls` that the case has (skips printed)."""
    sets = [case.make_sets(k) for k in jax.random.split(jax.random.PRNGKey(0), case.nsets)]
    c0 = case.carry0(sets[0])
    ref = None
    if "xla" in case.impls:
        ref = jax.jit(case.impls["xla"])(c0, *sets[0])
    rows = []
    for impl in impls:
        if impl not in case.impls:
            continue
        call = case.impls[impl]
        try:
            out = jax.jit(call)(c0, *sets[0])
            diff = None if ref is None or impl in case.floors else _max_abs_diff(out, ref)
            timing, mode, extra = time_impl(case, call, sets, quick=quick)
        except Exception as e:  # a kernel missing on this backend, or an op mid-change: one line, go on
            log(f"  skip {case.op} {case.name} {impl}: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
            continue
        rows.append(make_row(case, impl, timing, mode, max_abs_diff_vs_xla=diff, **extra))
        r = rows[-1]
        log(f"  {case.op} {case.name} {case.dtype} {impl:<8} {mode:<6} {r['median_ms']:.4f} ms"
            + (f"  {r['gb_per_s']:.1f} GB/s" if r["gb_per_s"] else "")
            + ("" if diff is None else f"  |diff vs xla| {diff:.2g}"))
    add_ratios(rows)
    return rows


def make_row(case: Case, impl: str, timing: Timing, mode: str, **extra) -> dict[str, Any]:
    med = timing.median_ms
    sec = med * 1e-3
    row = {
        "source": "mamba-jax",
        "op": case.op,
        "case": case.name,
        "model": case.model,
        "shape": dict(case.shape),
        "dtype": case.dtype,
        "implementation": impl,
        "mode": mode,
        "median_ms": med,
        "p10_ms": timing.pct(10),
        "p90_ms": timing.pct(90),
        "n_samples": len(timing.samples_ms),
        "bytes_moved": case.bytes_moved,
        "gb_per_s": case.bytes_moved / sec / 1e9 if case.bytes_moved and sec > 0 else None,
        "flops": case.flops,
        "tflop_per_s": case.flops / sec / 1e12 if case.flops and sec > 0 else None,
        "ratio_vs_xla": None,
        "note": case.note,
        **case.extra,
        **provenance(),
        "date": now_iso(),
    }
    row.update(extra)
    return row


def add_ratios(rows: list[dict], key=None) -> None:
    """ratio_vs_xla = median of the "xla" row of the same workload / this median (> 1: faster). key(row)
    names the workload (default: op, case, dtype, mode)."""
    key = key or (lambda r: (r["op"], r["case"], r["dtype"], r["mode"]))
    xla = {key(r): r["median_ms"] for r in rows if r["implementation"] == "xla"}
    for r in rows:
        if key(r) in xla and r["median_ms"] > 0:
            r["ratio_vs_xla"] = xla[key(r)] / r["median_ms"]


def format_table(rows: list[dict]) -> str:
    head = (f"{'op':<23} {'case':<26} {'dtype':<8} {'impl':<9} {'mode':<7} {'median ms':>10} "
            f"{'p10-p90 ms':>17} {'GB/s':>8} {'vs xla':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        gbs = f"{r['gb_per_s']:.1f}" if r.get("gb_per_s") else "-"
        ratio = f"{r['ratio_vs_xla']:.2f}" if r.get("ratio_vs_xla") else "-"
        spread = f"{r['p10_ms']:.4f}-{r['p90_ms']:.4f}" if r.get("p10_ms") is not None else "-"
        lines.append(f"{r['op']:<23} {r['case']:<26} {r['dtype']:<8} {r['implementation']:<9} {r['mode']:<7} "
                     f"{r['median_ms']:>10.4f} {spread:>17} {gbs:>8} {ratio:>7}")
    return "\n".join(lines)


def dumps(rows) -> str:
    return json.dumps(rows, indent=1)
