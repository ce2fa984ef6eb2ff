"""Regenerates docs/results.md's tables and docs/results/*.png from the rows in benchmarks/results/
(the same as `mamba-jax bench report`; needs matplotlib).

    python benchmarks/plots.py                          # the NVIDIA H200 runs
    python benchmarks/plots.py --device cpu --doc /tmp/cpu.md --fig-dir /tmp/cpu-figs
"""

import sys

from mamba_jax.bench.report import main

if __name__ == "__main__":
    sys.exit(main())
