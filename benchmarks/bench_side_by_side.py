"""mamba-jax and mamba_ssm on the same shapes in one call, on one GPU: the ratio table of issue 13.

    python3 benchmarks/bench_side_by_side.py [--anchors .anchors] [--what ops,ops2,gen] [--out FILE]
    python3 benchmarks/bench_side_by_side.py --ops '' --gen-cases mamba-2.8b:1 --prefill-lens 2048,65536 --what prefill
    python3 benchmarks/bench_side_by_side.py --ours A.json --theirs mamba_ssm.jsonl [--profiles P.json]  # table only

The first form runs, in this order: mamba_ssm's build (../shared/anchors/build.py, carried into the
checkout as .anchors, in the background), our op benchmark (`benchmarks/bench_ops.py --backend gpu --impls
ffi --chain-outputs last`: per-call times of K custom calls inside one jitted program, each program
returning only its last output, as a CUDA graph keeps its outputs in its pool), our generation benchmark (`mamba-jax bench
generate`, decode ms/token of a jitted while loop), then mamba_ssm's benchmarks of the same shapes
(`bench_mamba_ssm.py ops|ops2|gen`: per call inside one captured CUDA graph; its own generate with a
CUDA graph). Launch costs are amortised on both sides. Rows are matched by op and case (or model and
batch), written together as JSON (ours with ratio_vs_mamba_ssm = their ms / ours: > 1 means we are
faster), and printed as a table. With --profile our ops' programs also run under the profiler
(`benchmarks/profile_ops.py`) and the table gets our kernels' own time per call beside the per-call time
(what a call costs beyond its kernel is the program's, not the kernel's). Without the anchors folder
only our side runs.
The second form re-reads recorded files and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from mamba_jax.bench import anchors, harness

HERE = Path(__file__).resolve().parent
OPS = "selective_scan,causal_conv1d,selective_state_update,causal_conv1d_update,ssd_scan,ssd_state_update"
GEN_CASES = "mamba-2.8b:1,mamba-2.8b:16,mamba-2.8b:64,mamba-130m:1,mamba-130m:64,mamba2-2.7b:1,mamba2-2.7b:16"
GEN_MODELS = "mamba-130m,mamba-2.8b,mamba2-2.7b"


def add_kernel_times(ours: list[dict], profile_rows: list[dict]) -> None:
    """Our op rows get kernel_ms: the kernels' own time per call inside the same kind of program, from
    `benchmarks/profile_ops.py` rows (matched by op, case and implementation; GPU runs only)."""
    kernel = {(r["op"], r["case"], r["implementation"]): r["kernel_us_per_call"] / 1e3
              for r in profile_rows if r.get("kernel_us_per_call")}
    for r in ours:
        key = (r.get("op"), r.get("case"), r.get("implementation"))
        if key in kernel:
            r["kernel_ms"] = round(kernel[key], 5)


def table(ours: list[dict], theirs: list[dict]) -> list[str]:
    """Lines of the side-by-side table: every row of ours that has a mamba_ssm row of the same key, with
    our kernel time per call where a profile gave it."""
    anchors.add_ratios(ours, theirs)
    lines = [f"{'workload':<58} {'mamba_ssm':>10} {'mamba-jax':>10} {'ratio':>7} {'our kernel':>11}"]
    matched = [r for r in ours if "ratio_vs_mamba_ssm" in r]
    for r in sorted(matched, key=lambda r: (r.get("bench") == "generate", str(r.get("op")), str(r.get("case")),
                                            str(r.get("model")), r.get("batch") or 0)):
        if r.get("bench") == "generate":
            what = f"{r['kind']} {r['model']} batch {r['batch']} (ms{'/token' if r['kind'] == 'decode' else ''})"
        else:
            what = f"{r['op']} {r['case']} [{r['implementation']}] (ms)"
        theirs_ms = r["ratio_vs_mamba_ssm"] * r["median_ms"]
        kern = f"{r['kernel_ms']:>11.4f}" if "kernel_ms" in r else f"{'-':>11}"
        lines.append(f"{what:<58} {theirs_ms:>10.4f} {r['median_ms']:>10.4f} {r['ratio_vs_mamba_ssm']:>6.2f}x {kern}")
    behind = [r for r in matched if r["ratio_vs_mamba_ssm"] < 1.0]
    lines.append(f"{len(matched)} rows matched, {len(matched) - len(behind)} at 1.0x or better, {len(behind)} behind")
    return lines


def _run(cmd: list[str], log: Path, timeout: int) -> int:
    print("$", " ".join(cmd), flush=True)
    with open(log, "w") as f:
        try:
            return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            print(f"timed out after {timeout} s (log: {log})", flush=True)
            return 124


def run(args) -> tuple[list[dict], list[dict]]:
    work = Path(args.work or tempfile.mkdtemp(prefix="side-by-side-"))
    work.mkdir(parents=True, exist_ok=True)
    have_anchors = args.anchors and (Path(args.anchors) / "bench_mamba_ssm.py").is_file()
    build = None
    if have_anchors:
        build = subprocess.Popen([sys.executable, str(Path(args.anchors) / "build.py")],
                                 stdout=open(work / "anchors-build.log", "w"), stderr=subprocess.STDOUT)
    else:
        print(f"no mamba_ssm anchors at {args.anchors!r}: only our side runs", flush=True)
    ours = []
    if args.ops:
        # Our custom calls, each chain / loop returning only its last output (the others stay in XLA's
        # temporary buffer, as a CUDA graph's outputs stay in its pool): harness.py says why.
        rc = _run([sys.executable, str(HERE / "bench_ops.py"), "--backend", "gpu", "--op", args.ops, "--no-memory",
                   "--impls", "ffi", "--chain-outputs", "last", "--out", str(work / "ours-ops.json")],
                  work / "ours-ops.log", args.timeout)
        if rc == 0:
            ours += json.loads((work / "ours-ops.json").read_text())
        if args.profile:  # the same programs under the profiler: each call's kernel time
            rc = _run([sys.executable, str(HERE / "profile_ops.py"), "--op", args.ops, "--impls", "ffi", "--reps", "5",
                       "--calls", "64", "--chain-outputs", "last", "--out", str(work / "ours-profile.json")],
                      work / "ours-profile.log", args.timeout)
            if rc == 0:
                add_kernel_times(ours, json.loads((work / "ours-profile.json").read_text()))
    if args.gen_cases:
        rc = _run([sys.executable, "-m", "mamba_jax.cli", "bench", "generate", "--cases", args.gen_cases, "--impls",
                   "auto", "--prefill-lens", args.prefill_lens, "--no-plots", "--no-progress", "--out", str(work / "ours-gen.json")],
                  work / "ours-gen.log", args.timeout)
        if rc == 0:
            ours += json.loads((work / "ours-gen.json").read_text())
    lines = []
    if build is not None:
        if build.wait(timeout=args.timeout) != 0:
            print(f"mamba_ssm build failed: {work / 'anchors-build.log'}", flush=True)
        else:
            for what in args.what.split(","):
                cmd = [sys.executable, str(Path(args.anchors) / "bench_mamba_ssm.py"), *what.split()]
                if what == "gen":
                    cmd += args.gen_models.split(",")
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
                lines += out.stdout.splitlines()
                if out.returncode:
                    print(f"mamba_ssm {what}: exit {out.returncode}: {out.stderr[-2000:]}", flush=True)
            (work / "mamba_ssm.jsonl").write_text("\n".join(lines) + "\n")
    return ours, anchors.convert(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--anchors", default=".anchors", help="folder of ../shared/anchors in the checkout")
    p.add_argument("--what", default="ops,ops2,gen", help="mamba_ssm benchmarks to run (bench_mamba_ssm.py modes)")
    p.add_argument("--ops", default=OPS, help="our ops to time ('' for none)")
    p.add_argument("--gen-cases", default=GEN_CASES, help="our decode cases, model:batch ('' for none)")
    p.add_argument("--prefill-lens", default="2048",
                   help="our prefill prompt lengths at batch 1 (mamba_ssm's `prefill` mode, in --what, times "
                        "mamba-2.8b at 2048 and 65536)")
    p.add_argument("--gen-models", default=GEN_MODELS, help="mamba_ssm's generation models (comma-separated)")
    p.add_argument("--timeout", type=int, default=300, help="seconds for each step")
    p.add_argument("--work", default=None, help="folder for the logs and intermediate files")
    p.add_argument("--ours", nargs="*", default=None, help="recorded rows of ours (JSON lists): print the table only")
    p.add_argument("--theirs", nargs="*", default=[], help="recorded mamba_ssm JSON lines (with --ours)")
    p.add_argument("--profile", action="store_true",
                   help="also run benchmarks/profile_ops.py on our ops: each row's kernel time per call")
    p.add_argument("--profiles", nargs="*", default=[], help="recorded profile_ops.py rows (with --ours)")
    p.add_argument("--out", default=None, help="write both sides' rows here (JSON)")
    args = p.parse_args(argv)
    if args.ours is not None:
        ours = [r for f in args.ours for r in json.loads(Path(f).read_text())]
        theirs = [r for f in args.theirs for r in anchors.convert(Path(f).read_text().splitlines())]
        add_kernel_times(ours, [r for f in args.profiles for r in json.loads(Path(f).read_text())])
    else:
        ours, theirs = run(args)
    print("\n".join(table(ours, theirs)))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        print(f"wrote {len(ours) + len(theirs)} rows to {harness.write_rows(ours + theirs, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
