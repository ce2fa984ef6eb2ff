"""Generation benchmark: decode time per token and prefill time of `mamba_jax.generate` at real sizes,
against a plain pure-JAX decode loop (implementation="xla") measured in the same run.

    python3 benchmarks/bench_generate.py                  # mamba-2.8b at batch 1 and 64, mamba-130m at batch 1
    python3 benchmarks/bench_generate.py --quick          # a tiny model, seconds on a CPU (CI smoke)
    python3 benchmarks/bench_generate.py --cases mamba-130m:1 --prefill-lens 2048,65536 --impls auto,xla

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
Rows go to benchmarks/results/generate-<date>-<commit>.json (or --out).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import jax
import jax.numpy as jnp
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from mamba_jax import shapes  # noqa: E402
from mamba_jax.generate import Generator  # noqa: E402
from mamba_jax.nn import MambaConfig, MambaLM  # noqa: E402

GPT_NEOX_VOCAB = 50277  # the released Mamba models' vocabulary (padded to a multiple of 8)
LONG_PREFILL = 8192  # prefill lengths above this are timed only for --long-prefill-impls
TINY = shapes.Mamba1Shape("tiny", d_model=64, d_inner=128, dstate=16, d_conv=4, dt_rank=4, n_layers=2)


def _config(name: str) -> MambaConfig:
    if name == "tiny":
        s, vocab = TINY, 256
    else:
        s, vocab = shapes.get(name), GPT_NEOX_VOCAB
    return MambaConfig(vocab_size=vocab, d_model=s.d_model, n_layer=s.n_layers, d_state=s.dstate,
                       d_conv=s.d_conv, expand=s.d_inner // s.d_model, dt_rank=s.dt_rank,
                       pad_vocab_size_multiple=8)


def _tree_bytes(tree) -> int:
    return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)))


def _peak_bytes():
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:
        return None
    return None if not stats else stats.get("peak_bytes_in_use")


def _gb(n) -> str:
    return "n/a" if n is None else f"{n / 1e9:.2f} GB"


def _prompts(batch: int, length: int, vocab: int, seed: int):
    rng = np.random.default_rng(seed)
    return rng.integers(0, vocab, size=(batch, length)).astype(np.int32).tolist()


def _time_decode(gen: Generator, prompts, new_tokens: int, reps: int):
    gen.generate(prompts, new_tokens + 1)  # warm-up: compiles prefill + the decode loop of this size
    per_token, prefill = [], []
    for _ in range(reps):
        gen.generate(prompts, new_tokens + 1)
        s = gen.last_stats
        assert s.decode_steps == new_tokens, (s.decode_steps, new_tokens)
        per_token.append(s.decode_s / s.decode_steps * 1e3)
        prefill.append(s.prefill_s * 1e3)
    return per_token, prefill


def _time_prefill(gen: Generator, prompt_len: int, vocab: int, reps: int):
    prompts = _prompts(1, prompt_len, vocab, seed=1)
    gen.generate(prompts, 1)  # warm-up
    times = []
    for _ in range(reps):
        gen.generate(prompts, 1)
        times.append(gen.last_stats.prefill_s * 1e3)
    return times


def _row(kind, name, cfg, batch, impl, dtype, samples_ms, **extra):
    med = statistics.median(samples_ms)
    row = {
        "bench": "generate",
        "kind": kind,  # "decode" (ms per token) or "prefill" (ms per prompt)
        "model": name,
        "batch": batch,
        "implementation": impl,
        "dtype": dtype,
        "state_dtype": "float32",
        "median_ms": med,
        "min_ms": min(samples_ms),
        "max_ms": max(samples_ms),
        "n_samples": len(samples_ms),
        "d_model": cfg.d_model,
        "n_layer": cfg.n_layer,
        "vocab": cfg.padded_vocab_size,
        "ratio_vs_xla": None,
        **common.machine_info(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if kind == "decode":
        row["ms_per_token"] = med
        row["tokens_per_s"] = batch * 1e3 / med
    row.update(extra)
    return row


def run_model(name: str, batches: list[int], args) -> list[dict]:
    cfg = _config(name)
    dtype = getattr(jnp, args.dtype)
    t0 = time.perf_counter()
    model = MambaLM(cfg, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0))
    weights = _tree_bytes(nnx.state(model, nnx.Param))
    print(f"{name}: {weights / 1e9:.2f} GB of {args.dtype} weights, built in {time.perf_counter() - t0:.1f} s",
          flush=True)
    rows = []
    for impl in args.impls:
        model.implementation = None if impl == "auto" else impl
        gen = Generator(model)
        for batch in sorted(batches):
            prompts = _prompts(batch, args.prompt_len, cfg.vocab_size, seed=batch)
            decode, prefill = _time_decode(gen, prompts, args.new_tokens, args.reps)
            cache = _tree_bytes(model.init_cache(batch))
            rows.append(_row("decode", name, cfg, batch, impl, args.dtype, decode,
                             prompt_len=args.prompt_len, new_tokens=args.new_tokens,
                             prefill_ms_prompt=statistics.median(prefill), weights_bytes=weights,
                             cache_bytes=cache, peak_bytes_in_use=_peak_bytes()))
            print(f"  {impl:<5} batch {batch:>3}: {rows[-1]['ms_per_token']:.3f} ms/token "
                  f"({rows[-1]['tokens_per_s']:.0f} tokens/s), peak {_gb(rows[-1]['peak_bytes_in_use'])} "
                  f"(weights {weights / 1e9:.2f} GB, cache {cache / 1e9:.3f} GB)", flush=True)
        if 1 in batches:
            for plen in args.prefill_lens:
                if plen > LONG_PREFILL and impl not in args.long_prefill_impls:
                    continue
                t = _time_prefill(gen, plen, cfg.vocab_size, args.reps)
                rows.append(_row("prefill", name, cfg, 1, impl, args.dtype, t, prompt_len=plen,
                                 weights_bytes=weights, peak_bytes_in_use=_peak_bytes()))
                print(f"  {impl:<5} prefill {plen} tokens: {rows[-1]['median_ms']:.1f} ms, "
                      f"peak {_gb(rows[-1]['peak_bytes_in_use'])}", flush=True)
        del gen
    del model
    gc.collect()
    return rows


def add_ratios(rows: list[dict]) -> None:
    def key(r):
        return (r["kind"], r["model"], r["batch"], r.get("prompt_len"), r["dtype"])

    xla = {key(r): r["median_ms"] for r in rows if r["implementation"] == "xla"}
    for r in rows:
        if key(r) in xla:
            r["ratio_vs_xla"] = xla[key(r)] / r["median_ms"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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
    p.add_argument("--out", default=None, help="JSON file (default benchmarks/results/generate-<date>-<commit>.json)")
    args = p.parse_args(argv)
    if args.quick:
        args.cases, args.prompt_len, args.new_tokens, args.prefill_lens, args.reps = "tiny:1,tiny:4", 16, 16, "64", 2
    args.impls = [s.strip() for s in args.impls.split(",") if s.strip()]
    args.long_prefill_impls = [s.strip() for s in args.long_prefill_impls.split(",") if s.strip()]
    args.prefill_lens = [int(s) for s in str(args.prefill_lens).split(",") if s.strip()]
    order: dict[str, list[int]] = {}
    for case in args.cases.split(","):
        name, _, b = case.strip().partition(":")
        order.setdefault(name, []).append(int(b or 1))
    # smallest model first, so the process-wide peak memory of a case is not an earlier, bigger one's
    names = sorted(order, key=lambda n: _config(n).d_model * _config(n).n_layer)
    print(f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), jax {jax.__version__}", flush=True)
    rows = []
    for name in names:
        rows += run_model(name, order[name], args)
    add_ratios(rows)
    for r in rows:
        if r["implementation"] != "xla" and r["ratio_vs_xla"]:
            what = f"{r['ms_per_token']:.3f} ms/token" if r["kind"] == "decode" else f"prefill {r['prompt_len']}: {r['median_ms']:.1f} ms"
            print(f"{r['model']} batch {r['batch']} {r['implementation']}: {what}, {r['ratio_vs_xla']:.2f}x the pure-JAX loop")
    path = common.write_rows(rows, args.out or common.default_out_path("generate"))
    print(f"wrote {len(rows)} rows to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
