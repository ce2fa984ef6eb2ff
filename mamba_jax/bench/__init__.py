"""Generation benchmark (`mamba-jax bench`), and the provenance and file helpers every benchmark row uses.

    mamba-jax bench                    # mamba-2.8b at batch 1 and 64, mamba-130m at batch 1
    mamba-jax bench --quick            # a tiny model, seconds on a CPU (CI smoke)
    mamba-jax bench --cases mamba-130m:1 --prefill-lens 2048,65536 --impls auto,xla

What is timed (random weights in --dtype, default bfloat16; fp32 SSM state; greedy, no EOS):
  decode   `Generator.generate(prompts, new_tokens + 1)` on --prompt-len-token prompts, after one
           warm-up call of the same shapes (compilation excluded): the decode loop's wall time (one
           jitted lax.while_loop of new_tokens model steps, ended by fetching its tokens) divided by
           its steps -> ms/token (per step of the whole batch). Median over --reps calls.
  prefill  the prefill call (prompt of each --prefill-lens at batch 1, plus the first token's
           sample), median over --reps calls after a warm-up. Lengths over 8192 are timed only for the
           implementations in --long-prefill-impls (default auto).
  memory   the device's peak_bytes_in_use after each case (where the backend reports it; the peak
           is process-wide and cases run in increasing size, so it bounds that case), next to the
           bytes of the weights and of the decode cache.
Implementations: "auto" = the FFI kernels where built for the backend (CUDA or CPU), "xla" = the pure
JAX ops; ratio_vs_xla = xla's ms / this row's ms (> 1: faster than the pure-JAX loop).
Rows go to benchmarks/results/generate-<backend>-<date>-<commit>.json (or --out).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import jax
import jax.numpy as jnp

from . import shapes

_REPO = Path(__file__).resolve().parent.parent


# ---- provenance and files (shared with benchmarks/) ---------------------------------------------

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


def results_dir() -> Path:
    """benchmarks/results of the source checkout, or ./benchmarks/results outside one."""
    root = _REPO if (_REPO / "benchmarks").is_dir() else Path.cwd()
    return root / "benchmarks" / "results"


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


# ---- generation ---------------------------------------------------------------------------------

GPT_NEOX_VOCAB = 50277  # the released Mamba models' vocabulary (padded to a multiple of 8)
LONG_PREFILL = 8192  # prefill lengths above this are timed only for --long-prefill-impls
TINY = shapes.Mamba1Shape("tiny", d_model=64, d_inner=128, dstate=16, d_conv=4, dt_rank=4, n_layers=2)


def model_config(name: str):
    """A MambaConfig of the named size ("tiny" or one of mamba_jax.shapes.MAMBA1)."""
    from .nn import MambaConfig

    if name == "tiny":
        s, vocab = TINY, 256
    elif name in shapes.MAMBA1:
        s, vocab = shapes.MAMBA1[name], GPT_NEOX_VOCAB
    else:
        raise ValueError(f"no generation benchmark for {name!r}; known: tiny, {', '.join(shapes.MAMBA1)}")
    return MambaConfig(vocab_size=vocab, d_model=s.d_model, n_layer=s.n_layers, d_state=s.dstate,
                       d_conv=s.d_conv, expand=s.d_inner // s.d_model, dt_rank=s.dt_rank,
                       pad_vocab_size_multiple=8)


def random_prompts(batch: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, vocab, size=(batch, length)).astype(np.int32).tolist()


def _tree_bytes(tree) -> int:
    return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)))


def _gb(n) -> str:
    return "n/a" if n is None else f"{n / 1e9:.2f} GB"


def _time_decode(gen, prompts, new_tokens: int, reps: int):
    gen.generate(prompts, new_tokens + 1)  # warm-up: compiles prefill + the decode loop of this size
    per_token, prefill = [], []
    for _ in range(reps):
        gen.generate(prompts, new_tokens + 1)
        s = gen.last_stats
        assert s.decode_steps == new_tokens, (s.decode_steps, new_tokens)
        per_token.append(s.decode_s / s.decode_steps * 1e3)
        prefill.append(s.prefill_s * 1e3)
    return per_token, prefill


def _time_prefill(gen, prompt_len: int, vocab: int, reps: int):
    prompts = random_prompts(1, prompt_len, vocab, seed=1)
    gen.generate(prompts, 1)  # warm-up
    times = []
    for _ in range(reps):
        gen.generate(prompts, 1)
        times.append(gen.last_stats.prefill_s * 1e3)
    return times


def generation_row(kind, model, batch, impl, dtype, samples_ms, **extra) -> dict:
    """One generation row; `kind` is "decode" (ms per token) or "prefill" (ms per prompt)."""
    med = statistics.median(samples_ms)
    row = {
        "bench": "generate", "kind": kind, "model": model, "batch": batch, "implementation": impl,
        "dtype": dtype, "state_dtype": "float32", "median_ms": med, "min_ms": min(samples_ms),
        "max_ms": max(samples_ms), "n_samples": len(samples_ms), "ratio_vs_xla": None,
        **provenance(), "date": now_iso(),
    }
    if kind == "decode":
        row["ms_per_token"] = med
        row["tokens_per_s"] = batch * 1e3 / med
    row.update(extra)
    return row


def run_model(name: str, batches: list[int], args) -> list[dict]:
    from flax import nnx

    from .generate import Generator
    from .nn import MambaLM

    cfg = model_config(name)
    t0 = time.perf_counter()
    model = MambaLM(cfg, dtype=getattr(jnp, args.dtype), param_dtype=getattr(jnp, args.dtype), rngs=nnx.Rngs(0))
    weights = _tree_bytes(nnx.state(model, nnx.Param))
    print(f"{name}: {weights / 1e9:.2f} GB of {args.dtype} weights, built in {time.perf_counter() - t0:.1f} s",
          flush=True)
    sizes = dict(d_model=cfg.d_model, n_layer=cfg.n_layer, vocab=cfg.padded_vocab_size, weights_bytes=weights)
    rows = []
    for impl in args.impls:
        model.implementation = None if impl == "auto" else impl
        gen = Generator(model)
        for batch in sorted(batches):
            prompts = random_prompts(batch, args.prompt_len, cfg.vocab_size, seed=batch)
            decode, prefill = _time_decode(gen, prompts, args.new_tokens, args.reps)
            cache = _tree_bytes(model.init_cache(batch))
            r = generation_row("decode", name, batch, impl, args.dtype, decode, prompt_len=args.prompt_len,
                               new_tokens=args.new_tokens, prefill_ms_prompt=statistics.median(prefill),
                               cache_bytes=cache, peak_bytes_in_use=peak_bytes_in_use(), **sizes)
            rows.append(r)
            print(f"  {impl:<5} batch {batch:>3}: {r['ms_per_token']:.3f} ms/token ({r['tokens_per_s']:.0f} tokens/s), "
                  f"peak {_gb(r['peak_bytes_in_use'])} (weights {weights / 1e9:.2f} GB, cache {cache / 1e9:.3f} GB)",
                  flush=True)
        if 1 in batches:
            for plen in args.prefill_lens:
                if plen > LONG_PREFILL and impl not in args.long_prefill_impls:
                    continue
                t = _time_prefill(gen, plen, cfg.vocab_size, args.reps)
                r = generation_row("prefill", name, 1, impl, args.dtype, t, prompt_len=plen,
                                   peak_bytes_in_use=peak_bytes_in_use(), **sizes)
                rows.append(r)
                print(f"  {impl:<5} prefill {plen} tokens: {r['median_ms']:.1f} ms, peak {_gb(r['peak_bytes_in_use'])}",
                      flush=True)
        del gen
    del model
    gc.collect()
    return rows


def add_generation_ratios(rows: list[dict]) -> None:
    def key(r):
        return (r["kind"], r["model"], r["batch"], r.get("prompt_len"), r["dtype"])

    xla = {key(r): r["median_ms"] for r in rows if r["implementation"] == "xla"}
    for r in rows:
        if key(r) in xla:
            r["ratio_vs_xla"] = xla[key(r)] / r["median_ms"]


def _csv(s: str) -> list[str]:
    return [x.strip() for x in str(s).split(",") if x.strip()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="mamba-jax bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="mamba-2.8b:1,mamba-2.8b:64,mamba-130m:1",
                   help="comma-separated MODEL:BATCH (models: tiny, " + ", ".join(shapes.MAMBA1) + ")")
    p.add_argument("--impls", default="auto,xla", help="comma-separated: auto, ffi, xla")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=128, help="decode steps timed per call")
    p.add_argument("--prefill-lens", default="2048", help="comma-separated prompt lengths for prefill at batch 1")
    p.add_argument("--long-prefill-impls", default="auto",
                   help=f"comma-separated: the implementations timed at prefill lengths > {LONG_PREFILL}")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="tiny model, short runs (CPU smoke test)")
    p.add_argument("--out", default=None, help="JSON file (default benchmarks/results/generate-<backend>-<date>-<commit>.json)")
    args = p.parse_args(argv)
    if args.quick:
        args.cases, args.prompt_len, args.new_tokens, args.prefill_lens, args.reps = "tiny:1,tiny:4", 16, 16, "64", 2
    args.impls = _csv(args.impls)
    args.long_prefill_impls = _csv(args.long_prefill_impls)
    args.prefill_lens = [int(s) for s in _csv(args.prefill_lens)]
    order: dict[str, list[int]] = {}
    for case in _csv(args.cases):
        name, _, b = case.partition(":")
        order.setdefault(name, []).append(int(b or 1))
    # smallest model first, so the process-wide peak memory of a case is not an earlier, bigger one's
    names = sorted(order, key=lambda n: model_config(n).d_model * model_config(n).n_layer)
    info = provenance()
    print(f"backend {info['backend']} ({info['device_kind']}), jax {info['jax_version']}", flush=True)
    rows = []
    for name in names:
        rows += run_model(name, order[name], args)
    add_generation_ratios(rows)
    for r in rows:
        if r["implementation"] != "xla" and r["ratio_vs_xla"]:
            what = (f"{r['ms_per_token']:.3f} ms/token" if r["kind"] == "decode"
                    else f"prefill {r['prompt_len']}: {r['median_ms']:.1f} ms")
            print(f"{r['model']} batch {r['batch']} {r['implementation']}: {what}, {r['ratio_vs_xla']:.2f}x the pure-JAX loop")
    path = write_rows(rows, args.out or default_out_path("generate"))
    print(f"wrote {len(rows)} rows to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
