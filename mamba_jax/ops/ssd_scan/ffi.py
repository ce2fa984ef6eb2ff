"""FFI binding of `ssd_scan` (ffi/ssd_scan/: the CPU and CUDA kernels)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .. import _ffi


def ssd_scan_ffi(x, dt, A, B, C, D, z, dt_bias, initial_state, seq_idx, *, dt_softplus, dt_limit, chunk_size,
                 num_sequences):
    """Arguments as checked by `ssd_scan` (D already [nheads, headdim] float32; absent optionals None).

    Returns (y [b, l, h, p] in x.dtype, final_state float32): [b, h, p, n] without seq_idx,
    [b, num_sequences, h, p, n] with it (num_sequences 0 when no final state was asked for).
    """
    batch, _, nheads, headdim = x.shape
    dstate = B.shape[-1]
    if seq_idx is None:
        final_shape = (batch, nheads, headdim, dstate)
    else:
        final_shape = (batch, num_sequences, nheads, headdim, dstate)
    e = _ffi.empty
    return _ffi.call(
        "ssd_scan",
        results={"y": jax.ShapeDtypeStruct(x.shape, x.dtype),
                 "final_state": jax.ShapeDtypeStruct(final_shape, jnp.float32)},
        operands={"x": x, "dt": dt, "A": A, "B": B, "C": C,
                  "D": e() if D is None else D, "z": e(x.dtype) if z is None else z,
                  "dt_bias": e() if dt_bias is None else dt_bias,
                  "initial_state": e() if initial_state is None else initial_state,
                  "seq_idx": e(jnp.int32) if seq_idx is None else seq_idx},
        attrs={"dt_softplus": bool(dt_softplus), "dt_min": np.float32(dt_limit[0]),
               "dt_max": np.float32(dt_limit[1]), "chunk_size": int(chunk_size)},
    )
