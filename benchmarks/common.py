"""Timing and result-writing helpers shared by the op benchmarks (CPU and GPU alike).

A measurement is: jit once, warm up (compile + caches + thread pools), then time many calls, each
ended by `block_until_ready`, and keep the median and the 10th/90th percentiles. Inputs can rotate
over a few equal-shaped sets so a small op does not always find its operands hot in cache, and a
state-carrying op (decode) can feed its new state back in, with donation, as a decode loop does.

Rows are plain dicts, written as a JSON list under benchmarks/results/. Each row carries the machine
and software it was measured on, so files from different machines can be merged and plotted.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import jax

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# ---- timing -------------------------------------------------------------------------------------

@dataclasses.dataclass
class Timing:
    """Wall-clock times of single calls, in milliseconds."""

    samples_ms: list[float]

    @property
    def median_ms(self) -> float:
        return float(np.median(self.samples_ms))

    @property
    def p10_ms(self) -> float:
        return float(np.percentile(self.samples_ms, 10))

    @property
    def p90_ms(self) -> float:
        return float(np.percentile(self.samples_ms, 90))


def _block(x):
    return jax.block_until_ready(x)


def measure(fn: Callable, arg_sets: Sequence[tuple], *, warmup: int = 3, reps: int = 30,
            min_seconds: float = 0.0, max_seconds: float = 20.0,
            carry: tuple[int, int] | None = None) -> Timing:
    """Times `fn` (already jitted) called on `arg_sets[i % len(arg_sets)]`.

    carry=(arg_index, out_index): output `out_index` of each call replaces argument `arg_index` of
    the next one (of every set, so the state threads through the whole run). Use it with
    `jax.jit(..., donate_argnums=arg_index)` to time an in-place state update as decode runs it.
    Runs at least `reps` timed calls, more while under `min_seconds`, and stops at `max_seconds`.
    """
    sets = [list(a) for a in arg_sets]
    state = None if carry is None else sets[0][carry[0]]

    def call(i):
        nonlocal state
        args = sets[i % len(sets)]
        if carry is not None:
            args = list(args)
            args[carry[0]] = state
        out = fn(*args)
        _block(out)
        if carry is not None:
            state = out[carry[1]]
        return out

    for i in range(warmup):
        call(i)
    samples = []
    start = time.perf_counter()
    i = 0
    while True:
        t0 = time.perf_counter()
        call(i)
        samples.append((time.perf_counter() - t0) * 1e3)
        i += 1
        elapsed = time.perf_counter() - start
        if (i >= reps and elapsed >= min_seconds) or elapsed >= max_seconds:
            break
    return Timing(samples)


def nbytes(*arrays) -> int:
    """Total bytes of the given arrays (None entries count zero)."""
    return int(sum(a.size * a.dtype.itemsize for a in arrays if a is not None))


# ---- provenance ---------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def machine_info() -> dict[str, Any]:
    """CPU model and core count of the host, plus the JAX device and versions."""
    cpu_model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    dev = jax.devices()[0]
    return {
        "device": getattr(dev, "device_kind", str(dev)),
        "backend": jax.default_backend(),
        "jax_version": jax.__version__,
        "jaxlib_version": getattr(jax.lib, "__version__", None) or _jaxlib_version(),
        "cpu_model": cpu_model,
        "cpu_cores": os.cpu_count(),
        "hostname": platform.node(),
        "python": platform.python_version(),
        "git_commit": git_commit(),
    }


def _jaxlib_version():
    try:
        import jaxlib

        return jaxlib.__version__
    except Exception:
        return None


def git_commit() -> str | None:
    """Short commit of the working tree, with '+dirty' when tracked files differ from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


# ---- rows ---------------------------------------------------------------------------------------

def make_row(op: str, shape: dict[str, int], dtype: str, variant: str, timing: Timing,
             bytes_moved: int | None = None, flops: int | None = None, mode: str = "call",
             **extra) -> dict[str, Any]:
    """One result row: what ran, how long it took and the provenance of the run.

    `mode` says what one sample is: "call" = one jitted call from Python (dispatch included);
    "loopK" = one step of K run inside a single jitted loop (time / K; no per-step dispatch).

    `bytes_moved` is the minimum traffic the op must do (read every input once, write every output
    once); GB/s is that over the median time. `ratio_vs_best_jax` is filled in by `add_ratios`.
    """
    med = timing.median_ms
    row = {
        "op": op,
        "shape": dict(shape),
        "dtype": dtype,
        "variant": variant,
        "mode": mode,
        "median_ms": med,
        "p10_ms": timing.p10_ms,
        "p90_ms": timing.p90_ms,
        "n_samples": len(timing.samples_ms),
        "bytes_moved": bytes_moved,
        "gb_per_s": (bytes_moved / (med * 1e-3) / 1e9) if bytes_moved else None,
        "gflop_per_s": (flops / (med * 1e-3) / 1e9) if flops else None,
        "ratio_vs_best_jax": None,
        "best_jax_variant": None,
        **machine_info(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    row.update(extra)
    return row


def _case_key(row):
    return (row["op"], json.dumps(row["shape"], sort_keys=True), row["dtype"], row.get("mode"))


def add_ratios(rows: list[dict], jax_variants: Sequence[str]) -> list[dict]:
    """Sets ratio_vs_best_jax = (fastest pure-JAX median of the same op/shape/dtype/mode) / median.

    So > 1 means faster than the best pure-JAX variant measured in the same run.
    """
    best: dict[tuple, tuple[float, str]] = {}
    for r in rows:
        if r["variant"] in jax_variants:
            k = _case_key(r)
            if k not in best or r["median_ms"] < best[k][0]:
                best[k] = (r["median_ms"], r["variant"])
    for r in rows:
        k = _case_key(r)
        if k in best:
            r["ratio_vs_best_jax"] = best[k][0] / r["median_ms"]
            r["best_jax_variant"] = best[k][1]
    return rows


def default_out_path(prefix: str) -> Path:
    """benchmarks/results/<prefix>-<date>-<commit>.json"""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    commit = machine_info()["git_commit"] or "nogit"  # the commit the rows record (taken once)
    return RESULTS_DIR / f"{prefix}-{stamp}-{commit.replace('+', '-')}.json"


def write_rows(rows: list[dict], path: str | os.PathLike) -> Path:
    """Writes the rows as a JSON list (creating the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1) + "\n")
    return path


_LETTER = {"batch": "B", "seqlen": "L", "dim": "D", "dstate": "N", "ngroups": "G", "width": "W",
           "nheads": "H", "headdim": "P"}


def format_table(rows: list[dict]) -> str:
    """A fixed-width table: op, shape, dtype, variant, median ms (p10-p90), GB/s, ratio."""
    head = f"{'op':<24} {'shape':<34} {'dtype':<9} {'variant':<12} {'mode':<7} {'median ms':>10} {'p10-p90 ms':>17} {'GB/s':>7} {'ratio':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        shape = " ".join(f"{_LETTER.get(k, k)}{v}" for k, v in r["shape"].items())
        gbs = f"{r['gb_per_s']:.2f}" if r["gb_per_s"] else "-"
        ratio = f"{r['ratio_vs_best_jax']:.2f}" if r["ratio_vs_best_jax"] else "-"
        spread = f"{r['p10_ms']:.3f}-{r['p90_ms']:.3f}"
        lines.append(f"{r['op']:<24} {shape:<34} {r['dtype']:<9} {r['variant']:<12} {r['mode']:<7} "
                     f"{r['median_ms']:>10.3f} {spread:>17} {gbs:>7} {ratio:>7}")
    return "\n".join(lines)
