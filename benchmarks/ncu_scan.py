"""One side's selective scan at given shapes, a few calls each: a target for Nsight Compute, so our kernels
and mamba_ssm's can be profiled on the same shapes in one device call.

    ncu -k regex:'selective_scan|scan_carry' python3 benchmarks/ncu_scan.py --side ours --shapes 1,2048,1536
    ncu -k regex:selective_scan_fwd python3 benchmarks/ncu_scan.py --side theirs --shapes 1,2048,1536

--side theirs needs mamba_ssm built from ../shared/anchors (carried as .anchors; `python3 .anchors/build.py`).
Shapes are batch,seqlen,dim (dstate 16, bf16, z, D, delta bias and softplus, final state: the side-by-side
benchmark's selective_scan rows). Each shape runs --calls times after one warm-up call, so ncu's
`--launch-skip` can pass the warm-up.
"""

from __future__ import annotations

import argparse
import os
import sys

N = 16


def ours(shapes, calls):
    import jax
    import jax.numpy as jnp

    from mamba_jax import ops

    bf = jnp.bfloat16
    for b, l, d in shapes:
        k = jax.random.split(jax.random.key(0), 8)
        u, dl, z = (jax.random.normal(k[i], (b, l, d), bf) for i in range(3))
        A = -jnp.exp(jax.random.normal(k[3], (d, N), jnp.float32))
        B, C = (jax.random.normal(k[i], (b, l, 1, N), bf) for i in (4, 5))
        D = jax.random.normal(k[6], (d,), jnp.float32)
        db = jax.random.normal(k[7], (d,), jnp.float32) * 0.5 - 3
        f = jax.jit(lambda *a: ops.selective_scan(*a, z=z, delta_bias=db, delta_softplus=True,
                                                  return_last_state=True, implementation="ffi"))
        for _ in range(calls + 1):
            jax.block_until_ready(f(u, dl, A, B, C, D))
        print(f"ours b{b} l{l} d{d}: {calls + 1} calls", flush=True)


def theirs(shapes, calls):
    here = os.path.dirname(os.path.abspath(__file__))
    anchors = os.path.join(here, "..", ".anchors")
    sys.path[:0] = ["/tmp/anchors-build/selective_scan_cuda", f"{anchors}/src/mamba"]
    import torch
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    g = torch.Generator(device="cuda").manual_seed(0)
    r = lambda *s, dt=torch.bfloat16: torch.randn(*s, device="cuda", generator=g).to(dt)
    with torch.no_grad():
        for b, l, d in shapes:
            u, dl, z = r(b, d, l), r(b, d, l), r(b, d, l)
            A = -torch.exp(r(d, N, dt=torch.float32))
            B, C = r(b, N, l), r(b, N, l)
            D, db = r(d, dt=torch.float32), r(d, dt=torch.float32) * 0.5 - 3
            for _ in range(calls + 1):
                selective_scan_fn(u, dl, A, B, C, D, z, db, delta_softplus=True, return_last_state=True)
            torch.cuda.synchronize()
            print(f"theirs b{b} l{l} d{d}: {calls + 1} calls", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--side", choices=["ours", "theirs"], required=True)
    p.add_argument("--shapes", nargs="+", default=["1,2048,5120", "1,2048,1536"], help="batch,seqlen,dim")
    p.add_argument("--calls", type=int, default=1, help="calls per shape after the warm-up")
    a = p.parse_args(argv)
    shapes = [tuple(int(v) for v in s.split(",")) for s in a.shapes]
    (ours if a.side == "ours" else theirs)(shapes, a.calls)


if __name__ == "__main__":
    main()
