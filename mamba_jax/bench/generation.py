"""Generation benchmark: `mamba-jax bench generate` (also `mamba-jax bench` with no subcommand).

    mamba-jax bench generate                    # mamba-2.8b at batch 1 and 64, mamba-130m at batch 1
    mamba-jax bench generate --quick            # tiny models, seconds on a CPU (CI smoke)
    mamba-jax bench generate --cases mamba-130m:1,mamba2-2.7b:1 --prefill-lens 2048,65536 --impls auto,xla

What is timed (random weights in --dtype, default bfloat16; fp32 SSM state; greedy, no EOS):
  decode   `Generator.generate(prompts, new_tokens + 1)` on --prompt-len-token prompts, after one
           warm-up call of the same shapes (compilation excluded): the decode loop's wall time (one
           jitted lax.while_loop of new_tokens model steps, ended by fetching its tokens) divided by
           its steps -> ms/token (per step of the whole batch). Median over --reps calls.
  prefill  the prefill call (prompt of each --prefill-lens at batch 1, plus the first token's
           sample), median over --reps calls after a warm-up. Lengths over 8192 are timed only for
           the implementations in --long-prefill-impls (default auto).
  memory   the device's peak_bytes_in_use after each case (where the backend reports it; the peak
           is process-wide and cases run in increasing size, so it bounds that case), next to the
           bytes of the weights and of the decode cache.
Implementations: "auto" = the FFI kernels where built for the backend (CUDA or CPU), "xla" = the pure
JAX ops; ratio_vs_xla = xla's ms / this row's ms (> 1: faster than the pure-JAX loop).
Models: tiny, tiny2 (a small Mamba-1 / Mamba-2 for smoke runs) and the sizes of mamba_jax.shapes.
Rows go to benchmarks/results/generate-<backend>-<date>-<commit>.json (or --out); figures (ms/token
vs batch per model, peak memory vs prompt length) to --plot-dir.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

import numpy as np
import jax
import jax.numpy as jnp

from .. import shapes
from . import default_out_path, harness, now_iso, peak_bytes_in_use, provenance, write_rows

GPT_NEOX_VOCAB = 50277  # the released Mamba models' vocabulary
LONG_PREFILL = 8192  # prefill lengths above this are timed only for --long-prefill-impls
TINY = shapes.Mamba1Shape("tiny", d_model=64, d_inner=128, dstate=16, d_conv=4, dt_rank=4, n_layers=2)
TINY2 = shapes.Mamba2Shape("tiny2", d_model=64, nheads=4, headdim=32, dstate=16, ngroups=1, n_layers=2)
SMALL = {"tiny": TINY, "tiny2": TINY2}


def model_config(name: str):
    """The MambaConfig / Mamba2Config of the named size ("tiny", "tiny2" or one of mamba_jax.shapes)."""
    if name in SMALL:
        return SMALL[name].config(vocab_size=256)
    if name in shapes.ALL:
        return shapes.ALL[name].config(vocab_size=GPT_NEOX_VOCAB)
    raise ValueError(f"no generation benchmark for {name!r}; known: tiny, tiny2, {', '.join(shapes.ALL)}")


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
        "source": "mamba-jax", "bench": "generate", "kind": kind, "model": model, "batch": batch,
        "implementation": impl, "dtype": dtype, "state_dtype": "float32", "median_ms": med,
        "min_ms": min(samples_ms), "max_ms": max(samples_ms), "n_samples": len(samples_ms),
        "ratio_vs_xla": None, **provenance(), "date": now_iso(),
    }
    if kind == "decode":
        row["ms_per_token"] = med
        row["tokens_per_s"] = batch * 1e3 / med
    row.update(extra)
    return row


def _steps(batches: list[int], args) -> int:
    per_impl = len(batches) + (len(args.prefill_lens) if 1 in batches else 0)
    return per_impl * len(args.impls)


def run_model(name: str, batches: list[int], args, bar=None) -> list[dict]:
    from flax import nnx

    from ..generate import Generator
    from ..nn import MambaLM

    log = bar.write if bar is not None else print
    cfg = model_config(name)
    t0 = time.perf_counter()
    model = MambaLM(cfg, dtype=getattr(jnp, args.dtype), param_dtype=getattr(jnp, args.dtype), rngs=nnx.Rngs(0))
    weights = _tree_bytes(nnx.state(model, nnx.Param))
    log(f"{name}: {weights / 1e9:.3f} GB of {args.dtype} weights, built in {time.perf_counter() - t0:.1f} s")
    sizes = dict(d_model=cfg.d_model, n_layer=cfg.n_layer, vocab=cfg.padded_vocab_size, weights_bytes=weights)
    rows = []
    for impl in args.impls:
        model.implementation = None if impl == "auto" else impl
        gen = Generator(model)
        for batch in sorted(batches):
            if bar is not None:
                bar.set_postfix_str(f"{name} {impl} decode b{batch}")
            prompts = random_prompts(batch, args.prompt_len, cfg.vocab_size, seed=batch)
            decode, prefill = _time_decode(gen, prompts, args.new_tokens, args.reps)
            cache = _tree_bytes(model.init_cache(batch))
            r = generation_row("decode", name, batch, impl, args.dtype, decode, prompt_len=args.prompt_len,
                               new_tokens=args.new_tokens, prefill_ms_prompt=statistics.median(prefill),
                               cache_bytes=cache, peak_bytes_in_use=peak_bytes_in_use(), **sizes)
            rows.append(r)
            log(f"  {impl:<5} batch {batch:>3}: {r['ms_per_token']:.3f} ms/token ({r['tokens_per_s']:.0f} tokens/s), "
                f"peak {_gb(r['peak_bytes_in_use'])} (weights {weights / 1e9:.3f} GB, cache {cache / 1e9:.4f} GB)")
            if bar is not None:
                bar.update()
        if 1 in batches:
            for plen in args.prefill_lens:
                if plen > LONG_PREFILL and impl not in args.long_prefill_impls:
                    if bar is not None:
                        bar.update()
                    continue
                if bar is not None:
                    bar.set_postfix_str(f"{name} {impl} prefill {plen}")
                t = _time_prefill(gen, plen, cfg.vocab_size, args.reps)
                r = generation_row("prefill", name, 1, impl, args.dtype, t, prompt_len=plen,
                                   peak_bytes_in_use=peak_bytes_in_use(), **sizes)
                rows.append(r)
                log(f"  {impl:<5} prefill {plen} tokens: {r['median_ms']:.2f} ms, peak {_gb(r['peak_bytes_in_use'])}")
                if bar is not None:
                    bar.update()
        del gen
    del model
    gc.collect()
    return rows


def add_generation_ratios(rows: list[dict]) -> None:
    harness.add_ratios(rows, key=lambda r: (r["kind"], r["model"], r["batch"], r.get("prompt_len"), r["dtype"]))


def format_table(rows: list[dict]) -> str:
    head = (f"{'model':<12} {'kind':<8} {'batch':>5} {'prompt':>7} {'impl':<5} {'median ms':>10} "
            f"{'ms/token':>9} {'tokens/s':>9} {'peak GB':>8} {'vs xla':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        tok = f"{r['ms_per_token']:.3f}" if r.get("ms_per_token") else "-"
        tps = f"{r['tokens_per_s']:.0f}" if r.get("tokens_per_s") else "-"
        peak = f"{r['peak_bytes_in_use'] / 1e9:.2f}" if r.get("peak_bytes_in_use") else "-"
        ratio = f"{r['ratio_vs_xla']:.2f}" if r.get("ratio_vs_xla") else "-"
        lines.append(f"{r['model']:<12} {r['kind']:<8} {r['batch']:>5} {r.get('prompt_len') or '-':>7} "
                     f"{r['implementation']:<5} {r['median_ms']:>10.3f} {tok:>9} {tps:>9} {peak:>8} {ratio:>7}")
    return "\n".join(lines)


def _csv(s: str) -> list[str]:
    return [x.strip() for x in str(s).split(",") if x.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cases", default="mamba-2.8b:1,mamba-2.8b:64,mamba-130m:1",
                   help="comma-separated MODEL:BATCH (models: tiny, tiny2, " + ", ".join(shapes.ALL) + ")")
    p.add_argument("--impls", default="auto,xla", help="comma-separated: auto, ffi, xla")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=128, help="decode steps timed per call")
    p.add_argument("--prefill-lens", default="2048", help="comma-separated prompt lengths for prefill at batch 1")
    p.add_argument("--long-prefill-impls", default="auto",
                   help=f"comma-separated: the implementations timed at prefill lengths > {LONG_PREFILL}")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="tiny models, short runs (CPU smoke test)")
    p.add_argument("--out", default=None, help="JSON file (default benchmarks/results/generate-<backend>-<date>-<commit>.json)")


def run(args, progress: bool | None = None) -> list[dict]:
    """Runs the cases of parsed `args` (add_arguments) and returns the rows (ratios filled in)."""
    from tqdm.auto import tqdm

    if args.quick:
        args.cases, args.prompt_len, args.new_tokens, args.prefill_lens, args.reps = (
            "tiny:1,tiny:4,tiny2:1", 16, 16, "64", 2)
    args.impls = _csv(args.impls) if isinstance(args.impls, str) else args.impls
    args.long_prefill_impls = (_csv(args.long_prefill_impls) if isinstance(args.long_prefill_impls, str)
                               else args.long_prefill_impls)
    args.prefill_lens = [int(s) for s in _csv(args.prefill_lens)] if isinstance(args.prefill_lens, str) \
        else args.prefill_lens
    order: dict[str, list[int]] = {}
    for case in _csv(args.cases):
        name, _, b = case.partition(":")
        model_config(name)  # an unknown name fails before anything runs
        order.setdefault(name, []).append(int(b or 1))
    # smallest model first, so the process-wide peak memory of a case is not an earlier, bigger one's
    names = sorted(order, key=lambda n: model_config(n).d_model * model_config(n).n_layer)
    info = provenance()
    print(f"# backend {info['backend']} ({info['device_kind']}), jax {info['jax_version']}, "
          f"commit {info['git_commit']}", flush=True)
    rows = []
    with tqdm(total=sum(_steps(order[n], args) for n in names), desc="generate", unit="case",
              disable=None if progress is None else not progress) as bar:
        for name in names:
            rows += run_model(name, order[name], args, bar)
    add_generation_ratios(rows)
    return rows


def report(rows: list[dict], out=None):
    """Prints the rows' table and writes them to `out` (default: a new file in benchmarks/results)."""
    print()
    print(format_table(rows))
    print("# vs xla = the pure-JAX loop's median / this median (> 1: faster)")
    path = write_rows(rows, out or default_out_path("generate"))
    print(f"# wrote {len(rows)} rows to {path}")
    return path


def main(argv=None) -> int:
    """The generation benchmark alone (no figures), as `python -m mamba_jax.bench.generation`."""
    p = argparse.ArgumentParser(prog="mamba-jax bench generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    args = p.parse_args(argv)
    report(run(args), args.out)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
