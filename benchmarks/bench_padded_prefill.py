"""Prefill of a LEFT-padded batch (ragged prompts, as serving sees them): MambaLM.prefill with a mask.

    python3 benchmarks/bench_padded_prefill.py [--model mamba-2.8b] [--batch 4] [--len 8192] [--reps 7]

Random weights in --dtype (default bfloat16). Row i of the batch is padded on the left by i * len / (2 *
batch) positions (row 0 is whole). The jitted prefill (last_only logits) is compiled and run once, then
timed --reps times to the end of the device work (benchmarks' harness.measure); prints the median and the
minimum in ms, and writes one generation row (with the commit and date) to --out when given.
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mamba_jax.bench import harness
from mamba_jax.bench.generation import generation_row, model_config, random_prompts
from mamba_jax.nn import MambaLM


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mamba-2.8b")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--len", type=int, default=8192)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    dtype = getattr(jnp, a.dtype)
    model = MambaLM(model_config(a.model), dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    ids = jnp.asarray(random_prompts(a.batch, a.len, 1000, seed=0), jnp.int32)
    pads = np.arange(a.batch) * (a.len // (2 * a.batch))
    mask = jnp.asarray(np.arange(a.len)[None, :] >= pads[:, None])

    @jax.jit
    def prefill(state, ids, mask):
        logits, _ = nnx.merge(graphdef, state).prefill(ids, mask, last_only=True)
        return logits

    timing = harness.measure(prefill, (state, ids, mask), warmup=1, reps=a.reps, max_seconds=float("inf"))
    row = generation_row("prefill", a.model, a.batch, "auto", a.dtype, timing.samples_ms, bench="padded_prefill",
                         prompt_len=a.len, real_tokens=int(np.sum(np.asarray(mask))),
                         backend=jax.default_backend(), device_kind=jax.devices()[0].device_kind)
    print(f"{a.model} batch {a.batch} len {a.len} {a.dtype}, {row['real_tokens']} real tokens: padded prefill "
          f"median {row['median_ms']:.1f} ms (min {row['min_ms']:.1f})")
    if a.out:
        with open(a.out, "w") as f:
            json.dump([row], f, indent=1)


if __name__ == "__main__":
    main()
