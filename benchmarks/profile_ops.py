"""Does a custom call cost more than its kernel inside a jitted program? The op benchmark's timed programs
under the profiler.

    python3 benchmarks/profile_ops.py --op selective_state_update,causal_conv1d_update --batches 1,64
    python3 benchmarks/profile_ops.py --op causal_conv1d --impls ffi,xla --out /tmp/p.json
    python3 benchmarks/profile_ops.py --op selective_state_update --quick     # CPU smoke test

For each case of the op benchmark's entries (mamba_jax/bench/ops/<op>.py, this backend's shapes) and each
implementation, the program `benchmarks/bench_ops.py` times (K chained calls in one jitted function: K
decode steps with the state donated for the decode ops, a chain for the others; mamba_jax/bench/harness.py)
is run untraced (per call: the median wall time / K, which still holds the dispatch / K), then once under
`jax.profiler.trace`. From the GPU plane: the activities per call, the sum of their durations per call
(the kernel time), the per-call time left over (wall - kernels: command-buffer nodes, barriers, gaps), the
kernels by time and the graph / command-buffer mentions. A kernel time close to the wall time means
the kernel is the time; far below it, the call costs more than its kernel.
Without a GPU plane (CPU backend) it prints the trace's planes and the untraced times and exits 0.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_decode import _aggregate, _describe, _gpu_events, _graph_mentions, _host_events  # noqa: E402  (trace readers)

from mamba_jax.bench import harness  # noqa: E402
from mamba_jax.bench.ops import entry  # noqa: E402


def _program(case, call, sets, k: int):
    """(jitted fn, args, carry) of the harness's timed program with k calls; carry as in harness.measure."""
    if case.kind == "loop":
        return harness._loop(call, k), [harness.fresh_carry(case, sets), sets[0]], (0, 0)
    return harness._chain(call, k), [sets, case.carry0(sets[0])], None


def _run(fn, args, carry):
    out = jax.block_until_ready(fn(*args))
    if carry:
        args[carry[0]] = out[carry[1]]


def _host_summary(planes, k: int, row: dict, top: int = 12) -> None:
    """The host events of the traced execution by total time (inclusive: they nest), per call: where the
    per-call time beyond the kernels goes on the host (buffer allocation, command-buffer recording or
    updates, thunk execution). Adds row["host_top"] = [[name, count per call, us per call], ...]."""
    # one entry per kind of event: XLA's instruction suffixes (ffi_call.57, fusion.3) dropped
    agg = _aggregate([(re.sub(r"\.\d+$", "", n), s, d, ln) for n, s, d, ln in _host_events(planes)])
    ranked = sorted(agg.items(), key=lambda kv: -kv[1][1])[:top]
    row["host_top"] = [[name[:120], round(c / k, 2), round(t / k / 1e3, 3)] for name, (c, t) in ranked]
    print(f"  host events (inclusive, per call of {k}):")
    for name, c, us in row["host_top"]:
        print(f"    {us:9.2f} us/call  x{c:6.2f}  {name[:100]}")


def profile_case(case, impl: str, k: int, reps: int) -> dict:
    sets = [case.make_sets(key) for key in jax.random.split(jax.random.PRNGKey(0), case.nsets)]
    fn, args, carry = _program(case, case.impls[impl], sets, k)
    for _ in range(3):
        _run(fn, args, carry)
    walls = []
    for _ in range(reps):
        t0 = time.perf_counter()
        _run(fn, args, carry)
        walls.append((time.perf_counter() - t0) * 1e3)
    wall_us = statistics.median(walls) / k * 1e3
    row = {"op": case.op, "case": case.name, "dtype": case.dtype, "implementation": impl, "calls": k,
           "chain_outputs": harness.CHAIN_OUTPUTS,
           "wall_us_per_call": round(wall_us, 3), "xla_flags": os.environ.get("XLA_FLAGS", ""),
           **harness.provenance(), "date": harness.now_iso()}
    print(f"\n== {case.op} {case.name} {case.dtype} [{impl}]: {k} calls, {wall_us:.2f} us per call untraced", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        from jax.profiler import ProfileData

        with jax.profiler.trace(tmp):
            _run(fn, args, carry)
        paths = sorted(Path(tmp).glob("**/*.xplane.pb"))
        if not paths:
            print("no trace written")
            return row
        planes = list(ProfileData.from_file(str(paths[-1])).planes)
    _host_summary(planes, k, row)
    events = _gpu_events(planes)
    if events is None:
        _describe(planes)
        print(f"no GPU plane (backend {jax.default_backend()}): untraced time and host events only")
        return row
    _graph_mentions(planes)
    modules = collections.Counter(m for *_, m in events if m)
    mine = modules.most_common(1)[0][0] if modules else ""
    picked = [e for e in events if e[3] == mine] if mine else events
    agg = _aggregate(picked)
    kernel_us = sum(t for _, t in agg.values()) / k / 1e3
    span_us = (max(s + d for _, s, d, _ in picked) - min(s for _, s, _, _ in picked)) / k / 1e3 if picked else 0.0
    row.update(activities_per_call=round(sum(c for c, _ in agg.values()) / k, 2), kernel_us_per_call=round(kernel_us, 3),
               span_us_per_call=round(span_us, 3), module=mine)
    print(f"  module {mine!r}: {row['activities_per_call']} activities per call; kernels {kernel_us:.2f} us, "
          f"first-to-last span {span_us:.2f} us, untraced wall {wall_us:.2f} us per call "
          f"(wall - kernels: {wall_us - kernel_us:.2f} us)")
    for name, (c, t) in sorted(agg.items(), key=lambda kv: -kv[1][1])[:8]:
        print(f"    {t / k / 1e3:8.2f} us/call  x{c / k:5.2f}  mean {t / max(c, 1) / 1e3:7.2f} us  {name[:100]}")
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--op", default="selective_state_update,causal_conv1d_update", help="comma-separated ops")
    p.add_argument("--impls", default="ffi,xla", help="comma-separated implementations")
    p.add_argument("--batches", default=None, help="only the cases with these batch sizes (comma-separated)")
    p.add_argument("--calls", type=int, default=harness.LOOP, help="calls in the profiled program")
    p.add_argument("--reps", type=int, default=20, help="untraced timings (median)")
    p.add_argument("--quick", action="store_true", help="the entries' small cases, few calls")
    p.add_argument("--chain-outputs", choices=["all", "last"], default="all",
                   help="a chain or loop returns every call's output or only the last one's (as bench_ops.py)")
    p.add_argument("--out", default=None, help="write the rows here (JSON)")
    args = p.parse_args(argv)
    harness.CHAIN_OUTPUTS = args.chain_outputs
    backend = jax.default_backend()
    print(f"backend {backend} ({jax.devices()[0].device_kind}), jax {jax.__version__}", flush=True)
    batches = {int(b) for b in args.batches.split(",")} if args.batches else None
    k = 4 if args.quick else args.calls
    rows = []
    for name in args.op.split(","):
        for case in entry(name).cases(backend, args.quick):
            if batches and case.shape.get("batch") not in batches:
                continue
            for impl in args.impls.split(","):
                if impl not in case.impls:
                    continue
                try:
                    rows.append(profile_case(case, impl, k, 3 if args.quick else args.reps))
                except Exception as e:  # a kernel missing on this backend, or the profiler API moved
                    print(f"  skip {case.op} {case.name} {impl}: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=1))
        print(f"wrote {len(rows)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
