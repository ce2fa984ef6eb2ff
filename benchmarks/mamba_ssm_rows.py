"""mamba_ssm anchor lines -> benchmark rows, from a source checkout (mamba_jax/bench/anchors.py).

    python benchmarks/mamba_ssm_rows.py anchors.jsonl --merge ops-gpu-*.json generate-gpu-*.json --out side-by-side.json
"""

import sys

from mamba_jax.bench.anchors import main

if __name__ == "__main__":
    sys.exit(main())
