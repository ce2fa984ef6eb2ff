"""Reads recorded benchmark rows (benchmarks/results/*.json and *.jsonl) into one normalised form.

Every format this project has written is read: today's op rows (harness.make_row) and generation
rows (generation.generation_row); the older op rows (`variant`, `device`, `ratio_vs_best_jax`); the
SSD timing lists and mamba_ssm anchor lines ({"who", "what": "ssd b1 l2048 h80 p64 n128", "ms"}).
Rows of other shapes (ablations, logs) are skipped. Each normalised row has:

  kind            "op" | "decode" | "prefill" | "memory"
  source          "mamba-jax" | "mamba_ssm"
  implementation  "ffi", "xla" (the library's pure-JAX path), "auto" (generation: kernels where built),
                  baselines ("assoc", "lax.scan", "copy"), "mamba_ssm"
  op, case, model, shape, batch, seqlen, prompt_len, dtype, mode, median_ms, bytes_moved, flops,
  ms_per_token, peak_bytes_in_use, weights_bytes, cache_bytes, device_kind, backend, git_commit, date,
  file (the file name), run (the file name without its suffix: rows of one run share it)

A row without a commit or date of its own gets those of the git commit that added its file
(`recorded_in`), so every figure can say where its numbers came from.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from pathlib import Path
from typing import Iterable

from . import results_dir

# the older rows' variant names -> today's implementation names
_VARIANTS = {"ffi": "ffi", "jax-chunked": "xla", "jax-ref": "xla", "jax-assoc": "assoc", "jax-scan": "lax.scan",
             "cupy-d2d": "copy"}
_KEEP = ("op", "case", "model", "shape", "dtype", "mode", "median_ms", "p10_ms", "p90_ms", "bytes_moved", "flops",
         "gb_per_s", "ms_per_token", "tokens_per_s", "peak_bytes_in_use", "weights_bytes", "cache_bytes",
         "prompt_len", "new_tokens", "state_bytes", "chunk_size", "ratio_vs_xla", "note")


@functools.lru_cache(maxsize=None)
def _git_added(path: str) -> tuple[str | None, str | None]:
    """(short commit, ISO date) of the commit that added `path`, or (None, None)."""
    try:
        out = subprocess.run(["git", "log", "--diff-filter=A", "--format=%h %cI", "-1", "--", Path(path).name],
                             cwd=Path(path).parent, capture_output=True, text=True, timeout=10).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None, None
    return (out[0], out[1]) if len(out) == 2 else (None, None)


def _device_from_name(name: str) -> str | None:
    return "NVIDIA H200" if "h200" in name.lower() else None


def _case_name(shape: dict) -> str:
    from .harness import case_name

    return case_name(shape)


def _normalise(rec: dict, path: Path, head: dict) -> dict | None:
    """One recorded row -> the normalised row (None: not a timing row this module knows)."""
    if "what" in rec and "ms" in rec:  # SSD timing lists and mamba_ssm anchor lines
        from .anchors import _generation_row, _op_row

        base = _op_row(rec) or _generation_row(rec)
        if base is None:
            return None
        who = rec.get("who", head.get("who", "mamba_ssm"))
        theirs = who == "mamba_ssm"
        row = {**base, "source": "mamba_ssm" if theirs else "mamba-jax",
               "implementation": "mamba_ssm" if theirs else rec.get("impl", "ffi"), "median_ms": rec["ms"],
               "mode": "cuda-graph" if theirs else None, "device_kind": head.get("gpu") or _device_from_name(path.name),
               "backend": "gpu"}
        if base.get("bench") == "generate":
            row["kind"] = base["kind"]
            if row["kind"] == "decode":
                row["ms_per_token"] = rec["ms"]
        else:
            row["kind"] = "op"
        return row
    if "median_ms" not in rec and "peak_bytes" not in rec:
        return None
    if rec.get("bench") == "generate-sharded":  # several devices: benchmarks/bench_sharded.py, docs/sharding.md
        return None
    row = {k: rec[k] for k in _KEEP if k in rec}
    row["source"] = rec.get("source", "mamba-jax")
    row["implementation"] = rec.get("implementation") or _VARIANTS.get(rec.get("variant"), rec.get("variant"))
    row["device_kind"] = rec.get("device_kind") or rec.get("device")
    row["backend"] = rec.get("backend")
    row["git_commit"] = rec.get("git_commit")
    row["date"] = rec.get("date")
    if rec.get("bench") == "generate":
        row["kind"] = rec["kind"]
        row["batch"] = rec.get("batch")
    elif rec.get("mode") == "peak_memory" or ("peak_bytes" in rec and "median_ms" not in rec):
        row.update(kind="memory", op=rec.get("op"), peak_bytes=rec.get("peak_bytes"),
                   inputs_bytes=rec.get("inputs_bytes"), outputs_bytes=rec.get("outputs_bytes"))
    else:
        row["kind"] = "op"
        if rec.get("op") == "copy" and row["implementation"] == "copy":  # the older CuPy copy row: a ceiling
            row["op"] = "copy"
    if row["kind"] in ("op", "memory") and isinstance(row.get("shape"), dict):
        row.setdefault("case", _case_name(row["shape"]))
    return row


def _records(path: Path) -> Iterable[dict]:
    text = path.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = []
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    data.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    if isinstance(data, dict):
        data = data.get("rows", [data])
    return [r for r in data if isinstance(r, dict)]


def load_file(path) -> list[dict]:
    """The normalised rows of one result file."""
    path = Path(path)
    rows, head = [], {}
    commit, added = _git_added(str(path.resolve()))
    for rec in _records(path):
        if "what" not in rec and ("gpu" in rec or "torch" in rec) and "median_ms" not in rec:
            head = rec  # an anchor run's header line: the GPU and torch version
            continue
        row = _normalise(rec, path, head)
        if row is None or row.get("median_ms") is None and row["kind"] != "memory":
            continue
        shape = row.get("shape") or {}
        row.setdefault("batch", shape.get("batch"))
        row["seqlen"] = shape.get("seqlen")
        row["dtype"] = row.get("dtype") or "bfloat16"
        row["recorded_in"] = commit
        row["git_commit"] = row.get("git_commit") or None
        row["date"] = row.get("date") or added
        row["file"], row["run"] = path.name, path.name.rsplit(".", 1)[0]
        rows.append(row)
    return rows


def load_rows(paths=None) -> list[dict]:
    """Normalised rows of the given files or folders (default: benchmarks/results of the checkout)."""
    paths = [results_dir()] if paths is None else ([paths] if isinstance(paths, (str, Path)) else list(paths))
    files = []
    for p in map(Path, paths):
        files += sorted(p.glob("*.json")) + sorted(p.glob("*.jsonl")) if p.is_dir() else [p]
    rows = []
    for f in files:
        rows += load_file(f)
    return rows


def label(rows: list[dict]) -> str:
    """'NVIDIA H200 | bfloat16 | commit fab830e | 2026-11-29' for a set of rows (their distinct values)."""
    def distinct(key, fmt=str):
        vals = sorted({fmt(r[key]) for r in rows if r.get(key)})
        return ", ".join(vals) if vals else "?"

    commits = sorted({(r.get("git_commit") or (f"file added in {r['recorded_in']}" if r.get("recorded_in") else "?"))
                      for r in rows})
    return (f"{distinct('device_kind')} | {distinct('dtype')} | commit {', '.join(commits)} | "
            f"{distinct('date', lambda d: str(d)[:10])}")


def run_date(rows: list[dict]) -> str:
    return max((str(r.get("date") or "") for r in rows), default="")


def latest_run(rows: list[dict], **match) -> list[dict]:
    """The rows of the most recent run (file) among the rows that match every key=value given."""
    sel = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    if not sel:
        return []
    best = max({r["run"] for r in sel}, key=lambda run: run_date([r for r in sel if r["run"] == run]))
    return [r for r in sel if r["run"] == best]


def devices(rows: list[dict]) -> list[str]:
    return sorted({r["device_kind"] for r in rows if r.get("device_kind")})


def case_sort_key(case: str):
    return [int(n) if n.isdigit() else n for n in re.split(r"(\d+)", case or "")]


# Data-sheet peaks used for the floors: HBM bytes/s and dense bf16 tensor-core flop/s.
DEVICE_PEAKS = {"NVIDIA H200": {"bytes_per_s": 4.8e12, "flops_per_s": 989e12}}


def floor_ms(row: dict) -> float | None:
    """The time the row's bytes and flops need at its device's peaks (max of the two), or None."""
    peak = DEVICE_PEAKS.get(row.get("device_kind") or "")
    if not peak:
        return None
    if row["kind"] == "decode" and row.get("weights_bytes"):
        moved = row["weights_bytes"] + 2 * (row.get("cache_bytes") or 0)  # weights read, cache read + written
        return moved / peak["bytes_per_s"] * 1e3
    t = [(row.get("bytes_moved") or 0) / peak["bytes_per_s"], (row.get("flops") or 0) / peak["flops_per_s"]]
    return max(t) * 1e3 if max(t) > 0 else None


def comparison(rows: list[dict], op: str, device: str | None = None) -> tuple[list[dict], list[dict]]:
    """(ours, mamba_ssm's) rows of `op` to compare: the latest run of the op (on `device`), plus the
    pure-JAX path's rows of the same cases from the latest run that timed it when that run did not,
    and mamba_ssm's rows of the same cases from its latest run on the same device."""
    match = dict(kind="op", op=op, **({"device_kind": device} if device else {}))
    ours = latest_run(rows, source="mamba-jax", **match)
    if not ours:
        return [], []
    dev = ours[0].get("device_kind")
    cases = {r["case"] for r in ours}
    if not any(r["implementation"] == "xla" for r in ours):
        ours = ours + latest_run([r for r in rows if r.get("case") in cases], kind="op", op=op,
                                 implementation="xla", device_kind=dev)
    theirs = [r for r in latest_run(rows, kind="op", op=op, source="mamba_ssm", device_kind=dev) if r["case"] in cases]
    return ours, theirs
