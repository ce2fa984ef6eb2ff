"""Public Mamba ops: argument checks, implementation choice (FFI kernel or pure JAX), gradients, vmap."""

from .conv1d import causal_conv1d, causal_conv1d_update
from .linear import linear
from .selective_scan import selective_scan, selective_state_update
from ._ffi import cpu_available, cuda_available

__all__ = [
    "selective_scan",
    "selective_state_update",
    "causal_conv1d",
    "causal_conv1d_update",
    "linear",
    "cpu_available",
    "cuda_available",
]
