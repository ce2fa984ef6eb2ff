"""An independent float64 NumPy oracle for the four Mamba-1 ops, written from the math in the design
note (not from mamba_jax/ops/reference.py). Every input is first converted to float64, so a test that
feeds bfloat16 inputs compares the kernel against exact math on those same rounded values.

    dt_t = delta_t + delta_bias, then softplus(dt_t) = log(1 + exp(dt_t)) if asked
    h_t  = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t        per channel d and state n
    y_t  = sum_n h_t * C_t + D * u_t,   then y_t * silu(z_t) if z is given
    conv: y_t = act(bias + sum_k weight[:, k] * x_{t - (width - 1) + k}), past inputs from the state
    add_rms_norm: s = h + y, then s / sqrt(mean over features of s^2 + eps) * scale (decode's residual + norm)

All functions take NumPy (or JAX) arrays and return float64 NumPy arrays.
"""

from __future__ import annotations

import numpy as np


def _f64(x):
    return None if x is None else np.asarray(x, dtype=np.float64)


def softplus(x):
    # logaddexp(0, x) = log(1 + exp(x)) without overflow for large x.
    return np.logaddexp(0.0, x)


def silu(x):
    # x * sigmoid(x), with sigmoid(x) = (1 + tanh(x / 2)) / 2 so that no exp overflows.
    return x * 0.5 * (1.0 + np.tanh(0.5 * x))


def _expand_groups(bc, dim, has_group_axis):
    """B or C [..., dstate] or [..., ngroups, dstate] -> [..., dim, dstate] (the values each channel reads)."""
    if not has_group_axis:
        return np.repeat(bc[..., None, :], dim, axis=-2)
    ngroups = bc.shape[-2]
    per_group = dim // ngroups
    return np.repeat(bc, per_group, axis=-2)  # group g covers channels g*per_group ... (g+1)*per_group-1


def _dt(delta, delta_bias, softplus_on):
    dt = delta if delta_bias is None else delta + delta_bias
    return softplus(dt) if softplus_on else dt


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, *, delta_softplus=False,
                   initial_state=None):
    """u, delta, z [batch, seqlen, dim]; A [dim, dstate]; B, C [batch, seqlen, dstate] or
    [batch, seqlen, ngroups, dstate]; D, delta_bias [dim]; initial_state [batch, dim, dstate].
    Returns (y [batch, seqlen, dim], last_state [batch, dim, dstate]), float64."""
    u, delta, A, B, C, D, z, delta_bias, initial_state = map(
        _f64, (u, delta, A, B, C, D, z, delta_bias, initial_state))
    batch, seqlen, dim = u.shape
    dstate = A.shape[1]
    Bd = _expand_groups(B, dim, B.ndim == 4)  # [batch, seqlen, dim, dstate]
    Cd = _expand_groups(C, dim, C.ndim == 4)
    dt = _dt(delta, delta_bias, delta_softplus)
    h = np.zeros((batch, dim, dstate)) if initial_state is None else initial_state.copy()
    y = np.empty((batch, seqlen, dim))
    for t in range(seqlen):
        decay = np.exp(dt[:, t, :, None] * A[None])
        h = decay * h + (dt[:, t] * u[:, t])[:, :, None] * Bd[:, t]
        y[:, t] = np.sum(h * Cd[:, t], axis=-1)
    if D is not None:
        y = y + D * u
    if z is not None:
        y = y * silu(z)
    return y, h


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, *, dt_softplus=False):
    """state [batch, dim, dstate]; x, dt, z [batch, dim]; B, C [batch, dstate] or
    [batch, ngroups, dstate]. One step: returns (y [batch, dim], new_state [batch, dim, dstate])."""
    state, x, dt, A, B, C, D, z, dt_bias = map(_f64, (state, x, dt, A, B, C, D, z, dt_bias))
    dim = x.shape[1]
    Bd = _expand_groups(B, dim, B.ndim == 3)  # [batch, dim, dstate]
    Cd = _expand_groups(C, dim, C.ndim == 3)
    step = _dt(dt, dt_bias, dt_softplus)
    new_state = np.exp(step[..., None] * A[None]) * state + (step * x)[..., None] * Bd
    y = np.sum(new_state * Cd, axis=-1)
    if D is not None:
        y = y + D * x
    if z is not None:
        y = y * silu(z)
    return y, new_state


def causal_conv1d(x, weight, bias=None, *, activation=None, initial_state=None):
    """x [batch, seqlen, dim]; weight [dim, width]; bias [dim]; initial_state [batch, dim, width - 1]
    (oldest first). Returns (y [batch, seqlen, dim], final_state [batch, dim, width - 1]): the final
    state is the last width - 1 inputs, reaching back into initial_state when seqlen < width - 1."""
    x, weight, bias, initial_state = map(_f64, (x, weight, bias, initial_state))
    batch, seqlen, dim = x.shape
    width = weight.shape[1]
    past = np.zeros((batch, dim, width - 1)) if initial_state is None else initial_state
    # history[:, :, j] is the input at time j - (width - 1).
    history = np.concatenate([past, np.swapaxes(x, 1, 2)], axis=2)  # [batch, dim, width - 1 + seqlen]
    y = np.empty((batch, seqlen, dim))
    for t in range(seqlen):
        acc = np.zeros((batch, dim)) if bias is None else np.broadcast_to(bias, (batch, dim)).copy()
        for k in range(width):
            # weight[:, width - 1] multiplies the current input x_t, weight[:, 0] the oldest one.
            acc += weight[:, k] * history[:, :, t + k]
        y[:, t] = acc
    if activation in ("silu", "swish"):
        y = silu(y)
    final_state = history[:, :, history.shape[2] - (width - 1):]
    return y, final_state


def segments(seq_row):
    """[(sequence id, start, end)] of the runs of one row of seq_idx."""
    seq_row = np.asarray(seq_row)
    out, start = [], 0
    for t in range(1, len(seq_row) + 1):
        if t == len(seq_row) or seq_row[t] != seq_row[start]:
            out.append((int(seq_row[start]), start, t))
            start = t
    return out


def causal_conv1d_packed(x, weight, bias=None, *, activation=None, initial_state=None, seq_idx, num_sequences):
    """Packed sequences as separate calls of `causal_conv1d`: each run of equal seq_idx in a row is
    convolved alone (from initial_state for the run at t = 0, from zeros otherwise). Returns
    (y [batch, seqlen, dim], final_states [batch, num_sequences, dim, width - 1])."""
    x, initial_state = _f64(x), _f64(initial_state)
    batch, seqlen, dim = x.shape
    width = np.shape(weight)[1]
    y = np.empty((batch, seqlen, dim))
    finals = np.zeros((batch, num_sequences, dim, width - 1))
    for b in range(batch):
        for s, t0, t1 in segments(seq_idx[b]):
            init = initial_state[b:b + 1] if (initial_state is not None and t0 == 0) else None
            yb, fb = causal_conv1d(x[b:b + 1, t0:t1], weight, bias, activation=activation, initial_state=init)
            y[b, t0:t1] = yb[0]
            if 0 <= s < num_sequences:
                finals[b, s] = fb[0]
    return y, finals


def causal_conv1d_update(x, conv_state, weight, bias=None, *, activation=None):
    """x [batch, dim]; conv_state [batch, dim, width - 1] (oldest first); weight [dim, width].
    Returns (y [batch, dim], new_conv_state [batch, dim, width - 1])."""
    x, conv_state, weight, bias = map(_f64, (x, conv_state, weight, bias))
    window = np.concatenate([conv_state, x[:, :, None]], axis=2)  # [batch, dim, width]
    y = np.sum(window * weight[None], axis=2)
    if bias is not None:
        y = y + bias
    if activation in ("silu", "swish"):
        y = silu(y)
    return y, window[:, :, 1:]


def add_rms_norm(h, y, scale, *, eps, residual_dtype):
    """h, y [..., F]; scale [F]. The residual sum s = h + y, then s as the residual stream stores it
    (rounded to `residual_dtype`) divided by its root mean square over F (plus eps) and times scale.
    Returns (s, normed), float64; s unrounded, so that a test measures the kernel's rounding of it."""
    h, y, scale = map(_f64, (h, y, scale))
    s = h + y
    stored = np.asarray(s.astype(residual_dtype), dtype=np.float64)
    rms = np.sqrt(np.mean(stored * stored, axis=-1, keepdims=True) + eps)
    return s, stored / rms * scale


def numerical_grad(loss, args: dict, eps: float = 1e-6) -> dict:
    """Central differences of the scalar `loss(**args)` in float64 with respect to every array in
    `args` (None entries are passed through and get no gradient)."""
    x64 = {k: _f64(v) for k, v in args.items()}
    grads = {}
    for name, value in x64.items():
        if value is None:
            continue
        g = np.empty_like(value)
        for i in np.ndindex(value.shape):
            old = value[i]
            value[i] = old + eps
            plus = loss(**x64)
            value[i] = old - eps
            minus = loss(**x64)
            value[i] = old
            g[i] = (plus - minus) / (2 * eps)
        grads[name] = g
    return grads
