"""One benchmark entry per op: each module declares its cases (real model sizes from mamba_jax.shapes)
through `case(model, shape, dtype)` and `cases(backend, quick)`; `unavailable()` returns why the op
cannot be timed here (or None); ops with a `peak_memory(quick)` also report device memory."""

NAMES = ("selective_scan", "selective_state_update", "causal_conv1d", "causal_conv1d_update", "linear",
         "ssd_scan", "ssd_state_update")
