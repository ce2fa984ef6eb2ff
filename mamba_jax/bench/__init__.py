"""Benchmarks of mamba-jax on the current backend, and the provenance and file helpers every row uses.

    mamba-jax bench ops --op ssd_scan [--sweep] [--quick]     # op timings (mamba_jax.bench.opbench)
    mamba-jax bench generate [--cases mamba-130m:1] [--quick]  # decode and prefill (mamba_jax.bench.generation)
    mamba-jax bench report                                     # docs/results.md tables and docs/results/*.png

Submodules: `harness` (how an op case is timed, the row format), `ops` (one entry per op: its cases
at real model sizes), `opbench` and `generation` (the runners), `results` (reads every recorded row
format of benchmarks/results), `plots` (matplotlib figures), `report` (docs/results.md), `cli`.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import jax

_REPO = Path(__file__).resolve().parents[2]


def git_commit() -> str | None:
    """Short commit of the source checkout this package runs from, '+dirty' when tracked files differ."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=_REPO, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=_REPO,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


@functools.lru_cache(maxsize=None)
def provenance() -> dict[str, Any]:
    """What a row was measured on: the device (jax_default_device where set), versions, host CPU, commit
    (MJ_COMMIT overrides it, for a copy of the tree without .git)."""
    cpu_model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu_model = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        import jaxlib
        jaxlib_version = jaxlib.__version__
    except Exception:
        jaxlib_version = None
    dev = jax.config.jax_default_device or jax.devices()[0]
    if isinstance(dev, str):
        dev = jax.devices(dev)[0]
    return {
        "backend": dev.platform,
        "device_kind": getattr(dev, "device_kind", str(dev)),
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib_version,
        "cpu_model": cpu_model,
        "cpu_cores": os.cpu_count(),
        "host": platform.node(),
        "git_commit": os.environ.get("MJ_COMMIT") or git_commit(),
    }


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _root() -> Path:
    """The source checkout this package runs from, else the working directory."""
    return _REPO if (_REPO / "benchmarks").is_dir() else Path.cwd()


def results_dir() -> Path:
    """benchmarks/results of the source checkout, or ./benchmarks/results outside one."""
    return _root() / "benchmarks" / "results"


def docs_results_dir() -> Path:
    """docs/results (the figures) of the source checkout, or ./docs/results outside one."""
    return _root() / "docs" / "results"


def default_out_path(prefix: str) -> Path:
    """benchmarks/results/<prefix>-<backend>-<date>-<commit>.json"""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    commit = (provenance()["git_commit"] or "nogit").replace("+", "-")
    return results_dir() / f"{prefix}-{provenance()['backend']}-{stamp}-{commit}.json"


def write_rows(rows: list[dict], path: str | os.PathLike) -> Path:
    """Writes the rows as one JSON list (creating the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1) + "\n")
    return path


def peak_bytes_in_use() -> int | None:
    """The device allocator's process-wide peak, where the backend reports one."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:
        return None
    return None if not stats else stats.get("peak_bytes_in_use")


def main(argv=None) -> int:
    """`mamba-jax bench ...` (see mamba_jax.bench.cli)."""
    from .cli import main as cli_main

    return cli_main(argv)


def __getattr__(name):
    # the generation helpers other scripts import from here (model_config, random_prompts, ...)
    if name in ("model_config", "random_prompts", "generation_row", "TINY", "GPT_NEOX_VOCAB"):
        from . import generation

        return getattr(generation, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
