"""mamba-jax: fast Mamba inference for JAX (XLA FFI kernels for CUDA and CPU, a portable pure-JAX path)."""

from . import ops
from .ops import causal_conv1d, causal_conv1d_update, selective_scan, selective_state_update

__version__ = "0.1.0"

__all__ = [
    "ops",
    "selective_scan",
    "selective_state_update",
    "causal_conv1d",
    "causal_conv1d_update",
]
