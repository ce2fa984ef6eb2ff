"""Turns the JSON lines of the mamba_ssm anchor benchmark (../shared/anchors/bench_mamba_ssm.py: ops, ops2,
gen, prefill) into rows of the op and generation benchmarks' format, optionally merged with our rows
of the same run, so one file holds both sides.

    python3 .anchors/bench_mamba_ssm.py ops > anchors.jsonl         # on the GPU host
    python benchmarks/mamba_ssm_rows.py anchors.jsonl --merge ops-gpu-*.json generate-gpu-*.json \\
        --out benchmarks/results/side-by-side-h200-<date>.json

Their rows: source "mamba_ssm", implementation "mamba_ssm", mode "cuda-graph" (per call, inside one
captured CUDA graph), the same op / case / shape / dtype (bf16) / bytes_moved / flops as our entry of
that op computes. With --merge, each of our rows with a matching mamba_ssm row gets
ratio_vs_mamba_ssm = their median / ours (> 1: we are faster).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from .. import shapes
from . import harness, now_iso
from .ops import entry

INT = r"(\d+)"
# what -> (op, shape keys in the order of the pattern's numbers, fixed shape fields)
PATTERNS = [
    (rf"scan b{INT} d{INT} l{INT}$", "selective_scan", ("batch", "dim", "seqlen"), {"dstate": 16}),
    (rf"conv1d b{INT} d{INT} l{INT} w{INT}$", "causal_conv1d", ("batch", "dim", "seqlen", "width"), {}),
    (rf"ssu b{INT} d{INT} n{INT}$", "selective_state_update", ("batch", "dim", "dstate"), {}),
    (rf"conv_update b{INT} d{INT} w{INT}$", "causal_conv1d_update", ("batch", "dim", "width"), {}),
    (rf"ssd b{INT} l{INT} h{INT} p{INT} n{INT}$", "ssd_scan", ("batch", "seqlen", "nheads", "headdim", "dstate"),
     {"ngroups": 1}),
    (rf"ssd_update b{INT} h{INT} p{INT} n{INT}$", "ssd_state_update", ("batch", "nheads", "headdim", "dstate"),
     {"ngroups": 1}),
]
# the order of each op's shape fields in our cases (so the case names match)
ORDER = {"selective_scan": ("batch", "seqlen", "dim", "dstate"),
         "causal_conv1d": ("batch", "seqlen", "dim", "width"),
         "selective_state_update": ("batch", "dim", "dstate"),
         "causal_conv1d_update": ("batch", "dim", "width"),
         "ssd_scan": ("batch", "seqlen", "nheads", "headdim", "ngroups", "dstate"),
         "ssd_state_update": ("batch", "nheads", "headdim", "ngroups", "dstate")}


def _model_of(shape: dict) -> str | None:
    for s in shapes.ALL.values():
        if getattr(s, "nheads", None) == shape.get("nheads") and "nheads" in shape:
            return s.name
        if "dim" in shape and isinstance(s, shapes.Mamba1Shape) and s.dim == shape["dim"]:
            return s.name
    return None


def convert(lines, date: str | None = None) -> list[dict]:
    head, rows = {}, []
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        rec = json.loads(line)
        if "what" not in rec:
            head = rec
            continue
        common = {"source": "mamba_ssm", "implementation": "mamba_ssm", "median_ms": rec["ms"], "p10_ms": None,
                  "p90_ms": None, "n_samples": None, "ratio_vs_xla": None, "backend": "gpu",
                  "device_kind": head.get("gpu"), "torch_version": head.get("torch"), "jax_version": None,
                  "git_commit": None, "date": date or now_iso(), "what": rec["what"]}
        row = _op_row(rec) or _generation_row(rec)
        if row is None:
            print(f"unrecognised line, skipped: {line[:120]}", file=sys.stderr)
            continue
        rows.append({**row, **common, **({"ms_per_token": rec["ms"]} if row.get("kind") == "decode" else {})})
    return rows


def _op_row(rec) -> dict | None:
    for pattern, op, keys, fixed in PATTERNS:
        m = re.match(pattern, rec["what"])
        if not m:
            continue
        got = {**dict(zip(keys, map(int, m.groups()))), **fixed}
        shape = {k: got[k] for k in ORDER[op]}
        case = entry(op).case(_model_of(shape), shape, "bfloat16")
        sec = rec["ms"] * 1e-3
        return {"op": op, "case": case.name, "model": case.model, "shape": shape, "dtype": "bfloat16",
                "mode": "cuda-graph", "bytes_moved": case.bytes_moved,
                "gb_per_s": case.bytes_moved / sec / 1e9 if case.bytes_moved else None, "flops": case.flops,
                "tflop_per_s": case.flops / sec / 1e12 if case.flops else None, **case.extra}
    return None


def _generation_row(rec) -> dict | None:
    m = re.match(rf"(decode|prefill) (\S+) b{INT}(?: l{INT})?$", rec["what"])
    if not m:
        return None
    kind, model, batch, plen = m.group(1), m.group(2), int(m.group(3)), m.group(4)
    row = {"bench": "generate", "kind": kind, "model": model, "batch": batch, "dtype": "bfloat16",
           "state_dtype": "float32", "prompt_len": int(plen) if plen else 128}
    if "peak_gb" in rec:
        row["peak_bytes_in_use"] = int(rec["peak_gb"] * 1e9)
    return row


def _key(r):
    if r.get("bench") == "generate":
        return ("generate", r["kind"], r["model"], r["batch"], r.get("prompt_len") if r["kind"] == "prefill" else None,
                r["dtype"])
    return ("op", r.get("op"), r.get("case"), r.get("dtype"))


def add_ratios(ours: list[dict], theirs: list[dict]) -> None:
    ref = {_key(r): r["median_ms"] for r in theirs}
    for r in ours:
        if _key(r) in ref and r.get("median_ms"):
            r["ratio_vs_mamba_ssm"] = ref[_key(r)] / r["median_ms"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("jsonl", nargs="?", default="-", help="bench_mamba_ssm.py output (default: stdin)")
    ap.add_argument("--merge", nargs="*", default=[], help="our result files (JSON lists) to put beside them")
    ap.add_argument("--date", default=None, help="when mamba_ssm was measured (default: now)")
    ap.add_argument("--out", default=None, help="JSON file (default: print to stdout)")
    args = ap.parse_args(argv)
    text = sys.stdin.read() if args.jsonl == "-" else Path(args.jsonl).read_text()
    theirs = convert(text.splitlines(), args.date)
    ours = [r for f in args.merge for r in json.loads(Path(f).read_text())]
    add_ratios(ours, theirs)
    rows = ours + theirs
    if args.out:
        print(f"wrote {len(rows)} rows ({len(theirs)} mamba_ssm) to {harness.write_rows(rows, args.out)}")
    else:
        print(harness.dumps(rows))
    for r in ours:
        if "ratio_vs_mamba_ssm" in r:
            what = r.get("case") or f"{r['model']} b{r['batch']}"
            print(f"{r.get('op', r.get('kind'))} {what} {r['implementation']}: {r['median_ms']:.4f} ms, "
                  f"{r['ratio_vs_mamba_ssm']:.2f}x mamba_ssm", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
