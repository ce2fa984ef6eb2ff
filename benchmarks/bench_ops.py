"""The op benchmark from a source checkout: the same runner as `mamba-jax bench ops` (without its figures).

    python benchmarks/bench_ops.py                                   # every op, the default backend
    python benchmarks/bench_ops.py --op selective_scan --backend gpu [--quick] [--sweep]
    python benchmarks/bench_ops.py --op ssd_scan,ssd_state_update --impls ffi,xla
    python benchmarks/bench_ops.py --op selective_scan --memory-only   # peak memory as one JSON line

The entries and the timing harness live in the package (mamba_jax/bench/ops/<op>.py, mamba_jax/bench/harness.py).
"""

import sys

from mamba_jax.bench.opbench import main

if __name__ == "__main__":
    sys.exit(main())
