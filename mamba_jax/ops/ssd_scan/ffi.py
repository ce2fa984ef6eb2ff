"""FFI binding of `ssd_scan` (ffi/ssd_scan/: the CPU and CUDA kernels)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from .. import _ffi

# The CUDA handler runs its chunk-parallel kernel (v3) when the workspace result is non-empty and its
# sequential kernel (v2) when it is empty. MAMBA_JAX_SSD_SCAN=v3 selects v3; it is read on every call
# (at trace time), and the choice is part of the traced program (the workspace's shape), so programs
# traced under either setting never share a compiled executable. The CPU handler ignores the workspace.
_V3_CHUNK = 256  # positions per v3 chunk (ffi/ssd_scan/ssd_scan.cuh: kSub * kQ)


def _workspace_floats(batch, seqlen, nheads, headdim, dstate):
    if os.environ.get("MAMBA_JAX_SSD_SCAN", "v2") != "v3":
        return 0
    # Mirrors ssd_scan_v3_workspace_floats: a [headdim, dstate] float32 state and one decay per
    # (batch, v3 chunk, head), rounded up to 4 floats (each vmap slice's part 16-byte aligned).
    n = batch * (-(-seqlen // _V3_CHUNK)) * nheads * (headdim * dstate + 1)
    return -(-n // 4) * 4


def ssd_scan_ffi(x, dt, A, B, C, D, z, dt_bias, initial_state, seq_idx, *, dt_softplus, dt_limit, chunk_size,
                 num_sequences):
    """Arguments as checked by `ssd_scan` (D already [nheads, headdim] float32; absent optionals None).

    Returns (y [b, l, h, p] in x.dtype, final_state float32): [b, h, p, n] without seq_idx,
    [b, num_sequences, h, p, n] with it (num_sequences 0 when no final state was asked for).
    """
    batch, seqlen, nheads, headdim = x.shape
    dstate = B.shape[-1]
    if seq_idx is None:
        final_shape = (batch, nheads, headdim, dstate)
    else:
        final_shape = (batch, num_sequences, nheads, headdim, dstate)
    e = _ffi.empty
    y, final, _ = _ffi.call(
        "ssd_scan",
        results={"y": jax.ShapeDtypeStruct(x.shape, x.dtype),
                 "final_state": jax.ShapeDtypeStruct(final_shape, jnp.float32),
                 "workspace": jax.ShapeDtypeStruct(
                     (_workspace_floats(batch, seqlen, nheads, headdim, dstate),), jnp.float32)},
        operands={"x": x, "dt": dt, "A": A, "B": B, "C": C,
                  "D": e() if D is None else D, "z": e(x.dtype) if z is None else z,
                  "dt_bias": e() if dt_bias is None else dt_bias,
                  "initial_state": e() if initial_state is None else initial_state,
                  "seq_idx": e(jnp.int32) if seq_idx is None else seq_idx},
        attrs={"dt_softplus": bool(dt_softplus), "dt_min": np.float32(dt_limit[0]),
               "dt_max": np.float32(dt_limit[1]), "chunk_size": int(chunk_size)},
    )
    return y, final
