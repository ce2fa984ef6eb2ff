"""Small-batch projection for decode steps: ``linear(x, w) = x @ w`` with float32 accumulation.

At decode batch sizes XLA:GPU rewrites a dot of fewer than ~1e7 multiply-adds (mamba-130m's in_proj,
every model's x_proj and dt_proj) into an elementwise multiply that writes the whole [K, N] product,
plus a reduce over it: three passes over the weights and two kernels where one pass is the work
(measured on an H200: 7.7 us for mamba-130m's 4.7 MB in_proj, where reading the weights once takes
~1.1 us). On CUDA, for up to 8 rows, this op runs mamba_jax's GEMV kernel instead (one pass, one kernel,
thread-block clusters for split K). Everywhere else, and for more rows, it is XLA's dot. Gradients are
the dot's.
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp

from .._ffi import cuda_available
from .._vjp import with_reference_vjp
from .ffi import linear_ffi

_OP = "linear"
MAX_KERNEL_ROWS = 8
_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)


def _dot(x2, w):
    # float32 inputs in full float32 (XLA:GPU's default precision would round them to TF32).
    precision = jax.lax.Precision.HIGHEST if x2.dtype == jnp.float32 else None
    return jnp.dot(x2, w, preferred_element_type=jnp.float32, precision=precision).astype(x2.dtype)


def _dispatch(x2, w, *, implementation):
    if implementation == "xla" or not cuda_available(_OP):
        return _dot(x2, w)
    return jax.lax.platform_dependent(x2, w, cuda=linear_ffi, default=_dot)


def _reference(x2, w, *, implementation):
    del implementation
    return _dot(x2, w)


_core = with_reference_vjp(_dispatch, _reference)


# Where the kernel runs (measured on an H200, in a decode loop's CUDA graph, batch 1): it beats XLA
# where XLA splits the dot into multiply + reduce (fewer than ~1e7 multiply-adds) and the dot is wide
# and deep enough to spread over the chip: mamba-130m's in_proj [768, 3072] and out_proj [1536, 768].
# With it also on the narrow and shallow ones (x_proj [1536, 80], dt_proj [48, 1536]: 2.8 us against 1.8
# for XLA) the mamba-130m step took 0.795 ms, without 0.711 (two runs); with it on all four mamba-2.8b projections the
# step went from 3.07 to 3.67 ms (its 160-tile in_proj launch holds too few loads in flight to stream
# 52 MB at cuBLAS's 3.5 TB/s). So it runs only where it measured faster.
KERNEL_MAX_MACS = 10_000_000
KERNEL_MIN_K = 256
KERNEL_MIN_N = 512


def kernel_applies(x, w) -> bool:
    """Whether `linear(x, w)` would run the CUDA GEMV kernel on a GPU (shape and dtype rules only)."""
    rows = int(np.prod(np.shape(x)[:-1], dtype=np.int64))
    K, N = np.shape(w)
    itemsize = np.dtype(w.dtype).itemsize
    return (rows <= MAX_KERNEL_ROWS and any(x.dtype == d for d in _DTYPES) and w.dtype == x.dtype
            and N % (16 // itemsize) == 0 and K >= KERNEL_MIN_K and N >= KERNEL_MIN_N
            and rows * K * N < KERNEL_MAX_MACS)


def linear(x, w, *, implementation=None):
    """x [..., K] @ w [K, N] -> [..., N] in x's dtype (float32 accumulation).

    Args:
      x: activations, float32 / bfloat16 / float16.
      w: [K, N] weights of x's dtype.
      implementation: None (the CUDA GEMV kernel where it applies: a CUDA device, at most 8 rows,
        N a multiple of 16 bytes' worth of elements; XLA's dot otherwise) or "xla" (always the dot).
    """
    if implementation not in (None, "ffi", "xla"):
        raise ValueError(f"{_OP}: implementation must be None, 'ffi' or 'xla', got {implementation!r}")
    if np.ndim(w) != 2:
        raise ValueError(f"{_OP}: w has shape {np.shape(w)}, expected [K, N]")
    if np.ndim(x) < 1 or np.shape(x)[-1] != np.shape(w)[0]:
        raise ValueError(f"{_OP}: x has shape {np.shape(x)}, expected [..., K] with K = {np.shape(w)[0]} "
                         f"(w has shape {np.shape(w)})")
    if x.dtype != w.dtype:
        raise TypeError(f"{_OP}: w has dtype {w.dtype}, expected {x.dtype} (the dtype of x)")
    lead = np.shape(x)[:-1]
    x2 = jnp.reshape(x, (-1, np.shape(x)[-1]))
    impl = implementation if kernel_applies(x, w) else "xla"
    y = _core((("implementation", impl),), x2, w)
    return jnp.reshape(y, lead + (np.shape(w)[1],))
