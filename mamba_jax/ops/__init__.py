"""Public Mamba ops: argument checks, implementation choice (FFI kernel or pure JAX), gradients, vmap.

One folder per op (`mamba_jax/ops/<op>/`): the public function, its pure-JAX path(s), its reference
and its FFI binding; the kernels live in `ffi/<op>/`. Shared plumbing: `_checks` (argument checks),
`_ffi` (loading, dispatch by platform, calls), `_vjp` (gradients from the pure-JAX path); `elementwise` holds the fp32 math and array helpers the pure-JAX paths share.
"""

from .add_rms_norm import add_rms_norm
from .causal_conv1d import causal_conv1d
from .causal_conv1d_update import causal_conv1d_update
from .linear import linear
from .mamba1_step import mamba1_step
from .mamba2_step import mamba2_step
from .selective_scan import selective_scan
from .selective_state_update import selective_state_update
from .ssd_scan import ssd_scan
from .ssd_state_update import ssd_state_update
from ._ffi import cpu_available, cuda_available

__all__ = [
    "selective_scan",
    "selective_state_update",
    "causal_conv1d",
    "causal_conv1d_update",
    "linear",
    "mamba1_step",
    "mamba2_step",
    "add_rms_norm",
    "ssd_scan",
    "ssd_state_update",
    "cpu_available",
    "cuda_available",
]
