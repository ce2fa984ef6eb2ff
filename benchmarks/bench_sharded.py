"""Generation over several GPUs (mamba_jax.sharding): decode ms/token and prefill time on 1 and 2 devices,
and a model too large for one device, built sharded. Random bfloat16 weights; JSON rows.

    python3 benchmarks/bench_sharded.py --part small [--out FILE]   # mamba-2.8b and mamba2-2.7b sizes
    python3 benchmarks/bench_sharded.py --part huge  [--out FILE]   # d_model 12288, 96 Mamba-2 layers, 2 GPUs
    python3 benchmarks/bench_sharded.py --part small --quick        # tiny models, any backend (a smoke test)

Meshes (data x model): "1" is the plain model on one device; "1x2" tensor parallelism (channels over
two devices, one all-reduce per layer, two for Mamba-1 and for Mamba-2 with ngroups 1); "2x1" data
parallelism (batch over two devices, no per-layer communication; batch >= 2 only).

Each row: kind "decode" (ms_per_token: one decode step of the whole batch, the median over reps of a
`generate` loop) or "prefill" (ms for one prompt batch), model, mesh, batch, prompt_len, the compiled
decode step's collectives, the payload bytes per token of the model-axis all-reduces
(`sharding.comm_bytes_per_token`), peak device memory, and with --profile the measured time of the
all-reduce kernels in a decode loop (their median per call, i.e. per layer and token, from a
jax.profiler trace).

NVLink multicast stays off (NCCL_NVLS_ENABLE=0 and friends are forced below, before jax starts), as
the GPU host requires.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import statistics
import sys
import tempfile
import time

for _k, _v in (("NCCL_NVLS_ENABLE", "0"), ("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1"), ("NVSHMEM_DISABLE_NVLS", "1")):
    os.environ[_k] = _v

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from mamba_jax import shapes, sharding  # noqa: E402
from mamba_jax.generate import Generator  # noqa: E402
from mamba_jax.nn import Mamba2Config  # noqa: E402

VOCAB = 50277
HUGE = Mamba2Config(vocab_size=VOCAB, d_model=12288, n_layer=96, d_state=128, expand=2, headdim=64, ngroups=8,
                    pad_vocab_size_multiple=16)
QUICK = {"tiny": shapes.Mamba1Shape("tiny", d_model=64, d_inner=128, dstate=16, d_conv=4, dt_rank=4, n_layers=2),
         "tiny2": shapes.Mamba2Shape("tiny2", d_model=64, nheads=4, headdim=32, dstate=16, ngroups=1, n_layers=2)}


def _provenance() -> dict:
    try:
        from mamba_jax.bench import now_iso, provenance

        return {**provenance(), "date": now_iso()}
    except Exception:  # the bench package is optional here
        return {"backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
                "jax_version": jax.__version__, "date": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _peak_bytes(devices) -> int | None:
    try:
        return max(int(d.memory_stats().get("peak_bytes_in_use", 0)) for d in devices)
    except Exception:
        return None


def _tree_bytes(tree) -> int:
    return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)))


def _prompts(batch, length, seed):
    return np.random.default_rng(seed).integers(0, VOCAB, (batch, length)).astype(np.int32).tolist()


def _loop_collectives() -> dict | None:
    """Collectives of one iteration of the decode loop `generate` compiled last (read from its
    executable cache: the loop body appears once in the HLO text)."""
    cache = getattr(sys.modules["mamba_jax.generate"], "_COMPILED", {})
    decode = [exe for key, exe in cache.items() if key[0] == "decode"]
    return dict(sharding.count_collectives(decode[-1].as_text())) if decode else None


def _collective_kernels_ms(trace_dir: str) -> dict | None:
    """Durations of the all-reduce kernels in a jax.profiler trace (perfetto JSON): count, median and
    p90 in ms. None when the trace has none or cannot be read."""
    files = glob.glob(os.path.join(trace_dir, "**", "*trace.json.gz"), recursive=True)
    if not files:
        return None
    try:
        with gzip.open(files[0], "rt") as f:
            events = json.load(f).get("traceEvents", [])
    except Exception:
        return None
    durs = [e["dur"] / 1e3 for e in events
            if e.get("ph") == "X" and "dur" in e
            and any(k in e.get("name", "").lower() for k in ("allreduce", "all_reduce", "all-reduce"))
            and "nccl" in (e.get("name", "") + json.dumps(e.get("args", {}))).lower()]
    if not durs:
        return None
    durs.sort()
    return {"n": len(durs), "median_ms": statistics.median(durs), "p90_ms": durs[int(0.9 * (len(durs) - 1))]}


def _row(kind, name, mesh_name, n_dev, batch, samples, **extra) -> dict:
    med = statistics.median(samples)
    row = {"source": "mamba-jax", "bench": "generate-sharded", "kind": kind, "model": name, "mesh": mesh_name,
           "n_devices": n_dev, "batch": batch, "implementation": "auto", "dtype": "bfloat16",
           "state_dtype": "float32", "median_ms": med, "min_ms": min(samples), "max_ms": max(samples),
           "n_samples": len(samples), **_provenance()}
    if kind == "decode":
        row["ms_per_token"] = med
        row["tokens_per_s"] = batch * 1e3 / med
    row.update(extra)
    return row


def run_case(name, cfg, mesh_shape, batches, args, log) -> list[dict]:
    """All timings of one model on one mesh (None: the plain model on one device)."""
    t0 = time.perf_counter()
    devices = jax.devices()[: (1 if mesh_shape is None else mesh_shape[0] * mesh_shape[1])]
    mesh = sharding.make_mesh(*(mesh_shape or (1, 1)), devices=devices)
    built = sharding.init_model(cfg, mesh, dtype=jnp.bfloat16, seed=0)
    model = built.model if mesh_shape is None else built  # 1x1: the layout is the plain model
    jax.block_until_ready(jax.tree.leaves(built.model))
    mesh_name = "1" if mesh_shape is None else f"{mesh_shape[0]}x{mesh_shape[1]}"
    tp = 1 if mesh_shape is None else mesh_shape[1]
    from flax import nnx

    weights = _tree_bytes(nnx.state(built.model, nnx.Param))
    log(f"{name} on {mesh_name}: {weights / 1e9:.2f} GB of weights, built in {time.perf_counter() - t0:.1f} s, "
        f"peak {(_peak_bytes(devices) or 0) / 1e9:.1f} GB per device")
    comm = sharding.comm_bytes_per_token(cfg, tp)
    sizes = dict(d_model=cfg.d_model, n_layer=cfg.n_layer, weights_bytes=weights,
                 comm_bytes_per_token=comm["per_token"], comm_bytes_per_layer=comm["per_layer"])
    gen = Generator(model)
    rows = []
    for batch in batches:
        if mesh_shape is not None and batch % mesh_shape[0]:
            continue
        prompts = _prompts(batch, args.prompt_len, seed=batch)
        gen.generate(prompts, args.new_tokens + 1)  # compiles prefill and the decode loop
        compile_s = gen.last_stats.compile_s
        per_tok, prefill = [], []
        for _ in range(args.reps):
            gen.generate(prompts, args.new_tokens + 1)
            s = gen.last_stats
            per_tok.append(s.decode_s / s.decode_steps * 1e3)
            prefill.append(s.prefill_s * 1e3)
        extra = dict(prompt_len=args.prompt_len, new_tokens=args.new_tokens,
                     prefill_ms_prompt=statistics.median(prefill),
                     compile_s=compile_s, collectives_per_step=_loop_collectives(), **sizes)
        if args.profile and tp > 1:
            with tempfile.TemporaryDirectory() as d:
                jax.profiler.start_trace(d, create_perfetto_trace=True)
                gen.generate(prompts, min(args.new_tokens, 16) + 1)
                jax.profiler.stop_trace()
                extra["allreduce_kernels"] = _collective_kernels_ms(d)
        extra["peak_bytes_in_use"] = _peak_bytes(devices)
        r = _row("decode", name, mesh_name, len(devices), batch, per_tok, **extra)
        rows.append(r)
        log(f"  batch {batch:>3}: {r['ms_per_token']:.3f} ms/token ({r['tokens_per_s']:.0f} tokens/s), prefill of "
            f"{args.prompt_len} tokens {r['prefill_ms_prompt']:.1f} ms; collectives/step {r['collectives_per_step']}"
            + (f"; all-reduce kernels {extra['allreduce_kernels']}" if "allreduce_kernels" in extra else ""))
    for plen in args.prefill_lens:
        batch = 1 if mesh_shape is None else mesh_shape[0]
        prompts = _prompts(batch, plen, seed=7)
        gen.generate(prompts, 1)
        t = []
        for _ in range(args.reps):
            gen.generate(prompts, 1)
            t.append(gen.last_stats.prefill_s * 1e3)
        r = _row("prefill", name, mesh_name, len(devices), batch, t, prompt_len=plen,
                 peak_bytes_in_use=_peak_bytes(devices), **sizes)
        rows.append(r)
        log(f"  prefill batch {batch} x {plen} tokens: {r['median_ms']:.1f} ms")
    del gen, model, built
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("small", "huge"), default="small")
    p.add_argument("--quick", action="store_true", help="tiny models and few steps (a smoke test on any backend)")
    p.add_argument("--batches", default=None, help="decode batches (default 1,64; --part huge: 1,16, as the "
                   "cache of 64 rows, 39 GB per device, would not fit beside the weights)")
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--prefill-lens", default="2048", help="prompt lengths timed for prefill (batch 1 per data shard)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--profile", action="store_true", help="time the all-reduce kernels of a decode loop (2 devices)")
    p.add_argument("--models", default=None, help="--part small: comma-separated sizes (default mamba-2.8b,"
                   "mamba2-2.7b)")
    p.add_argument("--meshes", default="1,1x2,2x1", help="--part small: which of 1 (one device), 1x2, 2x1")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.new_tokens, args.reps, args.prompt_len = 4, 1, 8
        args.prefill_lens = "32"
    args.prefill_lens = [int(x) for x in args.prefill_lens.split(",") if x]
    batches = [int(x) for x in (args.batches or ("1,16" if args.part == "huge" else "1,64")).split(",")]
    n = len(jax.devices())
    log = lambda s: print(s, flush=True)  # noqa: E731
    log(f"{n} x {jax.devices()[0].device_kind}, jax {jax.__version__}")
    two = n >= 2
    if args.part == "small":
        names = args.models.split(",") if args.models else (["tiny", "tiny2"] if args.quick
                                                             else ["mamba-2.8b", "mamba2-2.7b"])
        meshes = args.meshes.split(",")
        cases = []
        for name in names:
            cfg = (QUICK[name] if name in QUICK else shapes.get(name)).config(vocab_size=VOCAB)
            if "1" in meshes:
                cases += [(name, cfg, None, batches)]
            if two and "1x2" in meshes:
                cases += [(name, cfg, (1, 2), batches)]
            if two and "2x1" in meshes:
                cases += [(name, cfg, (2, 1), [b for b in batches if b >= 2])]
    else:
        if not two:
            print("--part huge needs two devices", file=sys.stderr)
            return 2
        cfg = HUGE
        if args.quick:
            cfg = Mamba2Config(vocab_size=VOCAB, d_model=256, n_layer=4, d_state=32, headdim=32, ngroups=8)
        cases = [("mamba2-d12288-l96" if not args.quick else "mamba2-quick-huge", cfg, (1, 2), batches)]
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"sharded-{args.part}-{jax.default_backend()}-{time.strftime('%Y%m%d-%H%M%S')}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    rows, t0 = [], time.perf_counter()
    for name, cfg, mesh_shape, bs in cases:
        rows += run_case(name, cfg, mesh_shape, bs, args, log)
        jax.clear_caches()
        with open(out, "w") as f:  # after every case, so that a run cut short keeps what it measured
            json.dump(rows, f, indent=1)
    log(f"{len(rows)} rows -> {out} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
