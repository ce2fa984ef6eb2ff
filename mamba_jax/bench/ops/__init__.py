"""One benchmark entry per op: each module declares its cases (real model sizes from mamba_jax.shapes)
through `case(model, shape, dtype)` and `cases(backend, quick)`; `unavailable()` returns why the op
cannot be timed here (or None); ops with a `peak_memory(quick)` also report device memory."""

import importlib

NAMES = ("selective_scan", "selective_state_update", "causal_conv1d", "causal_conv1d_update", "linear",
         "ssd_scan", "ssd_state_update", "mamba1_step", "mamba2_step")


def entry(name: str):
    """The benchmark entry module of op `name`."""
    if name not in NAMES:
        raise ValueError(f"unknown op {name!r}; choose from {', '.join(NAMES)}")
    return importlib.import_module(f"{__name__}.{name}")
