"""Continuous batching (mamba_jax.serving.ContinuousBatcher, a slot-indexed state pool) against static
batches of the same requests (mamba_jax.generate on consecutive groups of n_slots requests, each group
decoding until its longest budget).

    python3 benchmarks/bench_serving.py [--model mamba-130m] [--requests 128] [--slots 32] [--steps-per-sync 8] [--out FILE]

Random weights in --dtype (default bfloat16), greedy, no EOS. Requests have random prompt lengths in
[--min-prompt, --max-prompt] and budgets in [--min-new, --max-new] (seeded). Both runs are done twice
and the second is timed (the first compiles); throughput counts each request's own tokens only.
Reports the fraction of requests whose tokens agree between the two (on a GPU, bfloat16 matmuls of
different batch shapes may round differently and flip a near-tie of a random model; the CPU tests
check exact equality). Writes one JSON row (a list of one dict).
"""

from __future__ import annotations

import argparse
import sys
import time

import jax.numpy as jnp
import numpy as np
from flax import nnx

import mamba_jax
from mamba_jax import shapes
from mamba_jax.nn import MambaLM
from mamba_jax.serving import ContinuousBatcher

from bench_long_prefill import write_row  # benchmarks/ is on the path when a script here runs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mamba-130m")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--requests", type=int, default=128)
    p.add_argument("--slots", type=int, default=32)
    p.add_argument("--min-prompt", type=int, default=16)
    p.add_argument("--max-prompt", type=int, default=512)
    p.add_argument("--min-new", type=int, default=8)
    p.add_argument("--max-new", type=int, default=256)
    p.add_argument("--steps-per-sync", type=int, default=8, help="ContinuousBatcher's decode steps per host round trip")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    dtype = getattr(jnp, args.dtype)
    cfg = shapes.get(args.model).config()
    model = MambaLM(cfg, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, cfg.vocab_size, int(n)).tolist()
               for n in rng.integers(args.min_prompt, args.max_prompt + 1, args.requests)]
    budgets = [int(n) for n in rng.integers(args.min_new, args.max_new + 1, args.requests)]
    useful = sum(budgets)

    server = ContinuousBatcher(model, args.slots, steps_per_sync=args.steps_per_sync)  # one server: its compiled steps serve both runs

    def continuous():
        steps = server.steps
        ids = [server.submit(q, n) for q, n in zip(prompts, budgets)]
        out = server.run()
        return [out[i] for i in ids], server.steps - steps

    def static():
        gen = mamba_jax.Generator(model)
        out = []
        for i in range(0, args.requests, args.slots):
            group = slice(i, i + args.slots)
            res = gen.generate(prompts[group], max(budgets[group]))
            out += [r[:n] for r, n in zip(res, budgets[group])]
        return out

    rows = {}
    for name, fn in (("continuous", continuous), ("static", static)):
        fn()  # compile
        t0 = time.perf_counter()
        res = fn()
        rows[name] = (time.perf_counter() - t0, res)
        print(f"{name}: {rows[name][0]:.2f} s, {useful / rows[name][0]:,.0f} useful tokens/s", flush=True)
    (c_s, (c_out, steps)), (s_s, s_out) = rows["continuous"], rows["static"]
    same = sum(a == b for a, b in zip(c_out, s_out)) / args.requests
    print(f"continuous / static throughput: {s_s / c_s:.2f}x; requests with the same tokens: {same:.1%}; "
          f"decode steps {steps}")
    row = {"bench": "serving", "model": args.model, "dtype": args.dtype, "requests": args.requests,
           "slots": args.slots, "steps_per_sync": args.steps_per_sync, "prompt_range": [args.min_prompt, args.max_prompt],
           "new_range": [args.min_new, args.max_new], "useful_tokens": useful,
           "continuous_s": c_s, "continuous_tokens_per_s": useful / c_s, "continuous_decode_steps": steps,
           "static_s": s_s, "static_tokens_per_s": useful / s_s, "speedup": s_s / c_s, "same_tokens_fraction": same}
    write_row(row, args.out, "serving")
    return 0


if __name__ == "__main__":
    sys.exit(main())
