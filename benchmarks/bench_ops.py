"""Times each op's implementations ("ffi" kernels, the pure-JAX "xla" path, the baselines an entry adds)
on one backend, in one run, and writes JSON rows.

    python benchmarks/bench_ops.py                                   # every op, the default backend
    python benchmarks/bench_ops.py --op selective_scan --backend gpu [--quick]
    python benchmarks/bench_ops.py --op ssd_scan,ssd_state_update --impls ffi,xla
    python benchmarks/bench_ops.py --op selective_scan --memory-only   # peak memory as one JSON line

The entries are benchmarks/ops/<op>.py (cases at real model sizes; what is timed and how is in
benchmarks/harness.py). On "gpu" each op with a peak-memory measure also runs it in a fresh process
(--no-memory skips it). Rows go to benchmarks/results/ops-<backend>-<date>-<commit>.json (or --out).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import jax  # noqa: E402

import harness  # noqa: E402
from ops import NAMES  # noqa: E402


def entry(name):
    return importlib.import_module(f"ops.{name}")


def memory_row(name: str, backend: str, quick: bool) -> dict | None:
    """Runs the op's peak_memory in a fresh process (the allocator's peak is process-wide)."""
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    cmd = [sys.executable, __file__, "--op", name, "--backend", backend, "--memory-only"] + (["--quick"] if quick else [])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        print(f"  skip {name} peak memory: {(out.stderr.strip().splitlines() or ['?'])[-1][:200]}")
        return None
    mem = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  {name} peak memory {mem['shape']}: {mem['peak_bytes'] / 1e9:.3f} GB = "
          f"{mem['peak_over_inputs_outputs']:.3f} x inputs + outputs")
    return {"source": "mamba-jax", **mem, "case": harness.case_name(mem["shape"]), "implementation": "auto",
            "mode": "peak_memory", **harness.provenance(), "date": harness.now_iso()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--op", default=",".join(NAMES), help="comma-separated ops (default: all): " + ", ".join(NAMES))
    ap.add_argument("--backend", choices=["cpu", "gpu"], default=None, help="default: JAX's default backend")
    ap.add_argument("--impls", default=None, help="comma-separated implementations (default: each op's all)")
    ap.add_argument("--quick", action="store_true", help="small cases, few repetitions (a smoke run, noisy)")
    ap.add_argument("--memory-only", action="store_true", help="print the op's peak-memory JSON line and exit")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory measures on gpu")
    ap.add_argument("--out", default=None, help="JSON file (default benchmarks/results/ops-<backend>-<date>-<commit>.json)")
    args = ap.parse_args(argv)

    names = [n.strip() for n in args.op.split(",") if n.strip()]
    bad = [n for n in names if n not in NAMES]
    if bad:
        ap.error(f"unknown ops {bad}; choose from {', '.join(NAMES)}")
    backend = args.backend or jax.default_backend()
    try:
        jax.config.update("jax_default_device", jax.devices(backend)[0])
    except RuntimeError as e:
        ap.error(f"no {backend} device here: {e}")
    if args.memory_only:
        (name,) = names
        print(json.dumps(entry(name).peak_memory(args.quick)))
        return 0

    info = harness.provenance()
    print(f"# backend {backend} ({info['device_kind']}), jax {info['jax_version']}, commit {info['git_commit']}",
          flush=True)
    rows = []
    for name in names:
        mod = entry(name)
        reason = mod.unavailable()
        if reason:
            print(f"skip {name}: {reason}")
            continue
        if backend == "gpu" and hasattr(mod, "peak_memory") and not args.no_memory:
            row = memory_row(name, backend, args.quick)
            rows += [row] if row else []
        for case in mod.cases(backend, args.quick):
            impls = args.impls.split(",") if args.impls else list(case.impls)
            rows += harness.run_case(case, impls, quick=args.quick, log=lambda s: print(s, flush=True))
    timed = [r for r in rows if r["mode"] != "peak_memory"]
    print()
    print(harness.format_table(timed))
    print("# vs xla = median of the pure-JAX path of the same case / this median (> 1: faster)")
    path = harness.write_rows(rows, args.out or harness.default_out_path("ops"))
    print(f"# wrote {len(rows)} rows to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
