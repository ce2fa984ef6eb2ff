"""State pools for the decode-step ops (selective_state_update, causal_conv1d_update, ssd_state_update):
their optional `state_indices` ([batch] int32) makes the state a pool [n_slots, ...] of which row b
reads and writes slot state_indices[b], in place under donation. The argument check and the pure-JAX
path (gather the rows, run the step, scatter them back) live here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import _checks as ck


def check_state_indices(op: str, state_indices, batch: int, n_slots: int, state_name: str = "state"):
    """None, or [batch] int32 slots of a pool of n_slots rows. Concrete values (not traced) are checked
    here: each in [0, n_slots), none repeated. Traced values cannot be; the kernels and the pure-JAX
    path then skip a row whose slot is out of range (no state written, y = 0), and a repeated
    slot leaves that slot holding one of its rows' results."""
    if state_indices is None:
        return None
    ck.check_array(op, "state_indices", state_indices, (batch,), "[batch]")
    dtype = np.dtype(getattr(state_indices, "dtype", None) or np.asarray(state_indices).dtype)
    if dtype != np.dtype(np.int32):  # the array's own dtype: jnp.result_type would say int32 for int64
        raise TypeError(f"{op}: state_indices has dtype {dtype}, expected int32")
    if n_slots == 0 and batch > 0:
        raise ValueError(f"{op}: {state_name} is a pool of 0 slots; state_indices needs slots for its {batch} rows")
    if not isinstance(state_indices, jax.core.Tracer):
        v = np.asarray(state_indices)
        bad = np.nonzero((v < 0) | (v >= n_slots))[0]
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"{op}: state_indices[{i}] = {int(v[i])} is outside the pool: {state_name} has "
                             f"{n_slots} slots, valid slots are 0..{n_slots - 1}")
        slots, counts = np.unique(v, return_counts=True)
        if np.any(counts > 1):
            s = int(slots[np.argmax(counts > 1)])
            rows = np.nonzero(v == s)[0].tolist()
            raise ValueError(f"{op}: slot {s} appears in state_indices more than once (rows {rows}); every row "
                             "of the batch needs a slot of its own")
    return jnp.asarray(state_indices)


def pool_rows(op: str, state, x, state_indices) -> tuple[int, int]:
    """(batch, n_slots): without state_indices both are the state's first axis (x is checked against
    it); with them, the batch is x's first axis and the state has n_slots rows."""
    n_slots = int(np.shape(state)[0]) if np.ndim(state) else 0
    if state_indices is None or np.ndim(x) == 0:
        return n_slots, n_slots
    return int(np.shape(x)[0]), n_slots


def pooled(step, pool, state_indices):
    """step(rows) -> (y, new_rows) run on the pool's rows `state_indices`; returns (y, the updated pool).
    Rows whose slot is out of range read slot 0, get y = 0 and write nothing."""
    n = pool.shape[0]
    valid = (state_indices >= 0) & (state_indices < n)
    rows = jnp.take(pool, jnp.clip(state_indices, 0, n - 1), axis=0)
    y, new_rows = step(rows)
    y = jnp.where(valid.reshape((-1,) + (1,) * (y.ndim - 1)), y, jnp.zeros((), y.dtype))
    pool = pool.at[jnp.where(valid, state_indices, n)].set(new_rows.astype(pool.dtype), mode="drop")
    return y, pool
