"""Long-prompt prefill in bounded memory: a 1,048,576-token prompt prefilled in chunks (MambaLM.prefill's
chunk_size, a lax.scan over chunks carrying the cache) against an unchunked 65536-token prefill.

    python3 benchmarks/bench_long_prefill.py [--model mamba-2.8b] [--tokens 1048576] [--chunk-size N]
                                             [--baseline-tokens 65536] [--out FILE]

Random weights in --dtype (default bfloat16), batch 1, last_only logits. Each prefill is compiled ahead
of time (compile time reported apart) and then run once, timed to the end of the device work. Peak
memory is the device's peak_bytes_in_use (memory_stats), read after the chunked run and before the
unchunked one is compiled, so the unchunked run cannot raise the chunked figure; weights_bytes is
bytes_in_use once the model is built. XLA's planned temporary buffers (memory_analysis) are reported
for both programs too. Writes one JSON row (a list of one dict) to --out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mamba_jax import shapes
from mamba_jax.nn import MambaLM
from mamba_jax.nn.model import default_chunk_size


def _mem(device):
    stats = device.memory_stats() or {}
    return int(stats.get("bytes_in_use", 0)), int(stats.get("peak_bytes_in_use", 0))


def _temp_bytes(exe):
    try:
        return int(exe.memory_analysis().temp_size_in_bytes)
    except Exception:  # not every backend reports it
        return None


def _git_commit():
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=here, capture_output=True, text=True)
        return out.stdout.strip() or None
    except OSError:
        return None


def _prefill_program(graphdef, state, n_tokens, chunk_size):
    """AOT-compiled prefill of [1, n_tokens] ids -> (last logits, cache); returns (exe, compile seconds)."""

    def run(state, ids):
        model = nnx.merge(graphdef, state)
        return model.prefill(ids, chunk_size=chunk_size, last_only=True)

    ids = jax.ShapeDtypeStruct((1, n_tokens), jnp.int32)
    t0 = time.perf_counter()
    exe = jax.jit(run).lower(state, ids).compile()
    return exe, time.perf_counter() - t0


def _timed(exe, state, ids):
    t0 = time.perf_counter()
    logits, cache = exe(state, ids)
    jax.block_until_ready((logits, cache))
    dt = time.perf_counter() - t0
    ok = bool(np.all(np.isfinite(np.asarray(logits, np.float32))))
    return dt, ok


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mamba-2.8b")
    p.add_argument("--tokens", type=int, default=1 << 20)
    p.add_argument("--chunk-size", type=int, default=None, help="default: MambaLM.prefill's (8192 at batch 1)")
    p.add_argument("--baseline-tokens", type=int, default=65536, help="unchunked run; 0 to skip")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    device = jax.devices()[0]
    dtype = getattr(jnp, args.dtype)
    cfg = shapes.get(args.model).config()
    model = MambaLM(cfg, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    jax.block_until_ready(state)
    del model
    weights_bytes, _ = _mem(device)
    chunk = args.chunk_size or default_chunk_size(1)
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(0, cfg.vocab_size, (1, args.tokens)), jnp.int32)

    exe, compile_s = _prefill_program(graphdef, state, args.tokens, chunk)
    temp_chunked = _temp_bytes(exe)
    seconds, finite = _timed(exe, state, ids)
    _, peak = _mem(device)
    del exe
    row = {
        "bench": "long_prefill", "model": args.model, "dtype": args.dtype, "batch": 1,
        "tokens": args.tokens, "chunk_size": chunk, "seconds": seconds, "tokens_per_s": args.tokens / seconds,
        "compile_s": compile_s, "weights_bytes": weights_bytes, "peak_bytes_in_use": peak,
        "peak_minus_weights_bytes": peak - weights_bytes, "xla_temp_bytes": temp_chunked,
        "logits_finite": finite,
    }
    print(f"{args.model} {args.tokens} tokens in chunks of {chunk}: {seconds:.2f} s, "
          f"{args.tokens / seconds:,.0f} tokens/s, peak {peak / 2**30:.2f} GiB "
          f"(weights {weights_bytes / 2**30:.2f} GiB, +{(peak - weights_bytes) / 2**30:.3f} GiB), "
          f"compile {compile_s:.1f} s", flush=True)

    if args.baseline_tokens:
        n = args.baseline_tokens
        base_ids = ids[:, :n]
        exe, b_compile = _prefill_program(graphdef, state, n, None)
        b_temp = _temp_bytes(exe)
        b_seconds, b_finite = _timed(exe, state, base_ids)
        _, b_peak = _mem(device)
        row.update({
            "baseline_tokens": n, "baseline_seconds": b_seconds, "baseline_tokens_per_s": n / b_seconds,
            "baseline_compile_s": b_compile, "baseline_peak_bytes_in_use": max(b_peak, peak),
            "baseline_xla_temp_bytes": b_temp, "baseline_logits_finite": b_finite,
            "chunked_vs_unchunked_tokens_per_s": (args.tokens / seconds) / (n / b_seconds),
        })
        print(f"unchunked {n} tokens: {b_seconds:.3f} s, {n / b_seconds:,.0f} tokens/s, peak so far "
              f"{max(b_peak, peak) / 2**30:.2f} GiB (XLA temp {b_temp and b_temp / 2**30:.2f} GiB, "
              f"chunked program's {temp_chunked and temp_chunked / 2**30:.3f} GiB); "
              f"chunked/unchunked tokens/s {row['chunked_vs_unchunked_tokens_per_s']:.3f}", flush=True)

    write_row(row, args.out, "long-prefill")
    return 0


def write_row(row: dict, out, stem: str) -> None:
    """Adds the environment to `row` and writes [row] as JSON to `out` (default
    benchmarks/results/<stem>-<backend>-<date>.json)."""
    row.update({"device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
                "jax_version": jax.__version__, "python": platform.python_version(), "git_commit": _git_commit(),
                "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S%z")})
    out = out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                              f"{stem}-{jax.default_backend()}-{datetime.date.today():%Y%m%d}.json")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        json.dump([row], f, indent=1)
    print("wrote", out)


if __name__ == "__main__":
    sys.exit(main())
