"""Generation benchmark from a source checkout: the same as `mamba-jax bench generate` (without its figures).

    python3 benchmarks/bench_generate.py [--quick] [--cases mamba-130m:1] [--out FILE]
"""

import sys

from mamba_jax.bench.generation import main

if __name__ == "__main__":
    sys.exit(main())
