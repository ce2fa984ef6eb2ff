"""Op benchmark: `mamba-jax bench ops` (and `python benchmarks/bench_ops.py`, the same runner).

    mamba-jax bench ops                                        # every op, the default backend
    mamba-jax bench ops --op ssd_scan --sweep                  # + time vs seqlen and vs batch
    mamba-jax bench ops --op selective_scan,ssd_scan --impls ffi,xla --backend gpu
    mamba-jax bench ops --op selective_scan --memory-only      # peak memory as one JSON line

Times each op's implementations ("ffi" kernels, the pure-JAX "xla" path, the baselines an entry
adds) on one backend, in one run (entries: mamba_jax/bench/ops/<op>.py, cases at real model sizes;
how a call is timed: mamba_jax/bench/harness.py). --sweep adds cases along seqlen (at the base
case's batch) and along batch (at its seqlen) for the figures. On "gpu" each op with a peak-memory
measure also runs it in a fresh process (--no-memory skips it). Rows go to
benchmarks/results/ops-<backend>-<date>-<commit>.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import jax

from . import harness
from .ops import NAMES, entry

# sweep sizes: (seqlens, batches) of full-sequence ops; batches of decode ops and linear
SWEEP = {
    "gpu": ((512, 1024, 2048, 4096, 8192, 16384), (1, 2, 4, 8, 16), (1, 4, 16, 64, 256)),
    "cpu": ((256, 512, 1024, 2048), (1, 2, 4), (1, 4, 16, 64)),
    "quick": ((64, 128, 256), (1, 2), (1, 4)),
}


def sweep_cases(mod, backend: str, quick: bool) -> list[harness.Case]:
    """The op's base case (its first) varied along seqlen and along batch."""
    base = mod.cases(backend, quick)[0]
    seqlens, batches, decode_batches = SWEEP["quick" if quick else ("gpu" if backend == "gpu" else "cpu")]
    dtype = base.dtype
    shapes = []
    if "seqlen" in base.shape:
        shapes += [dict(base.shape, seqlen=s) for s in seqlens]
        shapes += [dict(base.shape, batch=b) for b in batches]
    else:
        shapes += [dict(base.shape, batch=b) for b in decode_batches]
    out, seen = [], {harness.case_name(c.shape) for c in mod.cases(backend, quick)}
    for shape in shapes:
        name = harness.case_name(shape)
        if name not in seen:
            seen.add(name)
            case = mod.case(base.model, shape, dtype)
            if backend != "gpu" and "ffi" not in base.impls:  # e.g. linear on CPU: XLA's dot only
                case.impls.pop("ffi", None)
            out.append(case)
    return out


def memory_row(name: str, backend: str, quick: bool) -> dict | None:
    """Runs the op's peak_memory in a fresh process (the allocator's peak is process-wide)."""
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    cmd = [sys.executable, "-m", "mamba_jax.bench.opbench", "--op", name, "--backend", backend, "--memory-only"]
    out = subprocess.run(cmd + (["--quick"] if quick else []), env=env, capture_output=True, text=True)
    if out.returncode != 0:
        print(f"  skip {name} peak memory: {(out.stderr.strip().splitlines() or ['?'])[-1][:200]}")
        return None
    mem = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  {name} peak memory {mem['shape']}: {mem['peak_bytes'] / 1e9:.3f} GB = "
          f"{mem['peak_over_inputs_outputs']:.3f} x inputs + outputs")
    return {"source": "mamba-jax", **mem, "case": harness.case_name(mem["shape"]), "implementation": "auto",
            "mode": "peak_memory", **harness.provenance(), "date": harness.now_iso()}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--op", default=",".join(NAMES), help="comma-separated ops (default: all): " + ", ".join(NAMES))
    ap.add_argument("--backend", choices=["cpu", "gpu"], default=None, help="default: JAX's default backend")
    ap.add_argument("--impls", default=None, help="comma-separated implementations (default: each op's all)")
    ap.add_argument("--quick", action="store_true", help="small cases, few repetitions (a smoke run, noisy)")
    ap.add_argument("--sweep", action="store_true", help="also time each op along seqlen and along batch")
    ap.add_argument("--memory-only", action="store_true", help="print the op's peak-memory JSON line and exit")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory measures on gpu")
    ap.add_argument("--chain-outputs", choices=["all", "last"], default="all",
                    help="a chain returns every call's output (default) or only the last one's (mode chain-last: "
                         "custom-call rows only, XLA may drop unread pure-JAX work)")
    ap.add_argument("--out", default=None, help="JSON file (default benchmarks/results/ops-<backend>-<date>-<commit>.json)")


def parse_ops(spec: str) -> list[str]:
    names = [n.strip() for n in spec.split(",") if n.strip()]
    bad = [n for n in names if n not in NAMES]
    if bad:
        raise ValueError(f"unknown ops {bad}; choose from {', '.join(NAMES)}")
    return names


def select_backend(backend: str | None) -> str:
    backend = backend or jax.default_backend()
    try:
        jax.config.update("jax_default_device", jax.devices(backend)[0])
    except RuntimeError as e:
        raise ValueError(f"no {backend} device here: {e}") from None
    return backend


def run(args, progress: bool | None = None) -> list[dict]:
    """Times the ops of parsed `args` (add_arguments) on the selected backend; returns the rows."""
    from tqdm.auto import tqdm

    names = parse_ops(args.op)
    backend = select_backend(args.backend)
    harness.CHAIN_OUTPUTS = getattr(args, "chain_outputs", "all")
    info = harness.provenance()
    print(f"# backend {backend} ({info['device_kind']}), jax {info['jax_version']}, commit {info['git_commit']}",
          flush=True)
    plan, rows = [], []
    for name in names:
        mod = entry(name)
        reason = mod.unavailable()
        if reason:
            print(f"skip {name}: {reason}")
            continue
        if backend == "gpu" and hasattr(mod, "peak_memory") and not args.no_memory:
            row = memory_row(name, backend, args.quick)
            rows += [row] if row else []
        plan += mod.cases(backend, args.quick) + (sweep_cases(mod, backend, args.quick) if args.sweep else [])
    with tqdm(plan, desc="ops", unit="case", disable=None if progress is None else not progress) as bar:
        for case in bar:
            bar.set_postfix_str(f"{case.op} {case.name}")
            impls = args.impls.split(",") if args.impls else list(case.impls)
            rows += harness.run_case(case, impls, quick=args.quick, log=bar.write)
    return rows


def report(rows: list[dict], out=None):
    """Prints the rows' table and writes them to `out` (default: a new file in benchmarks/results)."""
    print()
    print(harness.format_table([r for r in rows if r["mode"] != "peak_memory"]))
    print("# vs xla = median of the pure-JAX path of the same case / this median (> 1: faster)")
    path = harness.write_rows(rows, out or harness.default_out_path("ops"))
    print(f"# wrote {len(rows)} rows to {path}")
    return path


def main(argv=None) -> int:
    """The op benchmark alone (no figures), as `python benchmarks/bench_ops.py`."""
    ap = argparse.ArgumentParser(prog="bench_ops.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    args = ap.parse_args(argv)
    try:
        if args.memory_only:
            (name,) = parse_ops(args.op)
            select_backend(args.backend)
            print(json.dumps(entry(name).peak_memory(args.quick)))
            return 0
        rows = run(args)
    except ValueError as e:
        ap.error(str(e))
    report(rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
