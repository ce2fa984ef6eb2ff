"""An independent float64 NumPy oracle for the Mamba-2 ops (ssd_scan, ssd_state_update), written from
the math in the design note, token by token (not from mamba_jax/ops/ssd_*). Every input is converted to
float64 first, so a test that feeds bfloat16 inputs compares against exact math on the same rounded values.

    dt_t = clip(softplus?(dt_t + dt_bias), dt_min, dt_max)                       per head
    h_t  = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T      h [headdim, dstate] per head, B/C of the head's group
    y_t  = h_t C_t + D x_t,  then y_t * silu(z_t) if z is given
    packed sequences: h_{t-1} is replaced by zeros wherever seq_idx[t] != seq_idx[t-1] (t >= 1); the
    final state of sequence s is the state after the last position t with seq_idx[t] == s (zeros if none).

All functions take NumPy (or JAX) arrays and return float64 NumPy arrays.
"""

from __future__ import annotations

import math

import numpy as np

from oracle import _f64, silu, softplus


def _dt(dt, dt_bias, dt_softplus, dt_limit):
    if dt_bias is not None:
        dt = dt + dt_bias
    if dt_softplus:
        dt = softplus(dt)
    return np.clip(dt, dt_limit[0], dt_limit[1])


def _per_head(bc, nheads):
    """B or C [..., ngroups, dstate] -> [..., nheads, dstate]: head i reads group i // (nheads // ngroups)."""
    return np.repeat(bc, nheads // bc.shape[-2], axis=-2)


def _skip_gate(y, x, D, z):
    if D is not None:
        y = y + (D[:, None] if D.ndim == 1 else D) * x
    if z is not None:
        y = y * silu(z)
    return y


def ssd_scan(x, dt, A, B, C, *, D=None, z=None, dt_bias=None, dt_softplus=False, dt_limit=(0.0, math.inf),
             initial_state=None, seq_idx=None, num_sequences=None):
    """x, z [batch, seqlen, nheads, headdim]; dt [batch, seqlen, nheads]; A, dt_bias [nheads];
    B, C [batch, seqlen, ngroups, dstate]; D [nheads] or [nheads, headdim];
    initial_state [batch, nheads, headdim, dstate]; seq_idx [batch, seqlen] integers.

    Returns (y [batch, seqlen, nheads, headdim], final_state): final_state is [batch, nheads, headdim,
    dstate] (the state after the last step) without seq_idx, and [batch, num_sequences, nheads,
    headdim, dstate] (per packed sequence) with it."""
    x, dt, A, B, C, D, z, dt_bias, initial_state = map(_f64, (x, dt, A, B, C, D, z, dt_bias, initial_state))
    batch, seqlen, nheads, headdim = x.shape
    dstate = B.shape[-1]
    step = _dt(dt, dt_bias, dt_softplus, dt_limit)  # [batch, seqlen, nheads]
    Bh, Ch = _per_head(B, nheads), _per_head(C, nheads)  # [batch, seqlen, nheads, dstate]
    y = np.empty((batch, seqlen, nheads, headdim))
    if seq_idx is None:
        final = np.empty((batch, nheads, headdim, dstate))
    else:
        seq_idx = np.asarray(seq_idx)
        final = np.zeros((batch, num_sequences, nheads, headdim, dstate))
    for b in range(batch):
        h = np.zeros((nheads, headdim, dstate)) if initial_state is None else initial_state[b].copy()
        for t in range(seqlen):
            if seq_idx is not None and t > 0 and seq_idx[b, t] != seq_idx[b, t - 1]:
                h = np.zeros_like(h)
            decay = np.exp(step[b, t] * A)  # [nheads]
            h = decay[:, None, None] * h + (step[b, t][:, None] * x[b, t])[:, :, None] * Bh[b, t][:, None, :]
            y[b, t] = np.einsum("hpn,hn->hp", h, Ch[b, t])
            if seq_idx is not None and 0 <= seq_idx[b, t] < num_sequences:
                final[b, seq_idx[b, t]] = h
        if seq_idx is None:
            final[b] = h
    return _skip_gate(y, x, D, z), final


def ssd_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, *, dt_softplus=False,
                     dt_limit=(0.0, math.inf)):
    """state [batch, nheads, headdim, dstate]; x, z [batch, nheads, headdim]; dt [batch, nheads];
    B, C [batch, ngroups, dstate]. One step: returns (y [batch, nheads, headdim], new_state)."""
    state, x, dt, A, B, C, D, z, dt_bias = map(_f64, (state, x, dt, A, B, C, D, z, dt_bias))
    nheads = x.shape[1]
    step = _dt(dt, dt_bias, dt_softplus, dt_limit)  # [batch, nheads]
    Bh, Ch = _per_head(B, nheads), _per_head(C, nheads)
    new_state = (np.exp(step * A)[:, :, None, None] * state
                 + (step[:, :, None] * x)[:, :, :, None] * Bh[:, :, None, :])
    y = np.einsum("bhpn,bhn->bhp", new_state, Ch)
    return _skip_gate(y, x, D, z), new_state
