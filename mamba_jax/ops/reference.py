"""Pure-JAX references of the Mamba-1 ops: fp32 math, arguments already normalised by the public ops.

These are the "xla" implementation and the function whose VJP the FFI ops use for gradients. They
use only operations Apple's jax-metal plugin compiles (``lax.scan`` with a static length,
elementwise math, single-operand reductions, static slices, exterior padding, concatenation).

Shape legend: b batch, l seqlen, d dim, n dstate, g ngroups (B/C are always [b, l, g, n] here), w width.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

f32 = jnp.float32


def softplus(x):
    # log1p(exp(x)) with the large-x branch; jax.nn.softplus lowers to logaddexp, which is fine too,
    # but this form is explicit about what the kernels compute.
    return jnp.where(x > 20.0, x, jnp.log1p(jnp.exp(jnp.minimum(x, 20.0))))


def silu(x):
    return x * jax.nn.sigmoid(x)


def _prep_dt(delta, delta_bias, delta_softplus):
    dt = delta.astype(f32)
    if delta_bias is not None:
        dt = dt + delta_bias.astype(f32)
    return softplus(dt) if delta_softplus else dt


def _finish(y, u, D, z):
    if D is not None:
        y = y + u * D.astype(f32)
    if z is not None:
        y = y * silu(z.astype(f32))
    return y


def _step(h, A_g, dt, u, Bt, Ct):
    """One recurrence step. h [b, g, p, n]; A_g [g, p, n]; dt, u [b, g, p]; Bt, Ct [b, g, n]."""
    dA = jnp.exp(dt[..., None] * A_g)
    h = dA * h + (dt * u)[..., None] * Bt[:, :, None, :]
    y = jnp.sum(h * Ct[:, :, None, :], axis=-1)
    return h, y


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, *, delta_softplus=False,
                       initial_state=None):
    """u, delta, z [b, l, d]; A [d, n] f32; B, C [b, l, g, n]; D, delta_bias [d];
    initial_state [b, d, n] f32. Returns (y [b, l, d] in u.dtype, last_state [b, d, n] f32)."""
    batch, seqlen, dim = u.shape
    g, n = B.shape[2], B.shape[3]
    p = dim // g
    u32 = u.astype(f32)
    dt = _prep_dt(delta, delta_bias, delta_softplus)
    A_g = A.astype(f32).reshape(g, p, n)
    h0 = (jnp.zeros((batch, dim, n), f32) if initial_state is None else initial_state.astype(f32))
    h0 = h0.reshape(batch, g, p, n)

    def body(h, xs):
        dt_t, u_t, B_t, C_t = xs
        return _step(h, A_g, dt_t.reshape(batch, g, p), u_t.reshape(batch, g, p), B_t, C_t)

    xs = (jnp.swapaxes(dt, 0, 1), jnp.swapaxes(u32, 0, 1),
          jnp.swapaxes(B.astype(f32), 0, 1), jnp.swapaxes(C.astype(f32), 0, 1))
    h, ys = lax.scan(body, h0, xs)
    y = jnp.swapaxes(ys, 0, 1).reshape(batch, seqlen, dim)
    y = _finish(y, u32, D, z)
    return y.astype(u.dtype), h.reshape(batch, dim, n)


def selective_state_update_ref(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, *, dt_softplus=False):
    """state [b, d, n] f32; x, dt, z [b, d]; A [d, n]; B, C [b, g, n]. Returns (y [b, d], new_state)."""
    batch, dim, n = state.shape
    g = B.shape[1]
    p = dim // g
    x32 = x.astype(f32)
    dt32 = _prep_dt(dt, dt_bias, dt_softplus)
    h, y = _step(state.astype(f32).reshape(batch, g, p, n), A.astype(f32).reshape(g, p, n),
                 dt32.reshape(batch, g, p), x32.reshape(batch, g, p), B.astype(f32), C.astype(f32))
    y = _finish(y.reshape(batch, dim), x32, D, z)
    return y.astype(x.dtype), h.reshape(batch, dim, n)


def _act(y, silu_act):
    return silu(y) if silu_act else y


def causal_conv1d_ref(x, weight, bias=None, *, silu_act=False, initial_state=None):
    """x [b, l, d]; weight [d, w] f32; bias [d]; initial_state [b, d, w-1] in x.dtype (oldest first).
    Returns (y [b, l, d] in x.dtype, final_state [b, d, w-1] in x.dtype)."""
    batch, seqlen, dim = x.shape
    width = weight.shape[1]
    if initial_state is None:
        prev = jnp.zeros((batch, width - 1, dim), x.dtype)
    else:
        prev = jnp.swapaxes(initial_state.astype(x.dtype), 1, 2)
    xpad = jnp.concatenate([prev, x], axis=1)  # [b, l + w - 1, d]
    xp32 = xpad.astype(f32)
    w = weight.astype(f32)
    y = jnp.zeros((batch, seqlen, dim), f32) if bias is None else jnp.broadcast_to(bias.astype(f32), (batch, seqlen, dim))
    for k in range(width):
        y = y + xp32[:, k:k + seqlen, :] * w[:, k]
    final = jnp.swapaxes(xpad[:, seqlen:, :], 1, 2)
    return _act(y, silu_act).astype(x.dtype), final


def causal_conv1d_update_ref(x, conv_state, weight, bias=None, *, silu_act=False):
    """x [b, d]; conv_state [b, d, w-1] in x.dtype; weight [d, w]. Returns (y [b, d], new_conv_state)."""
    window = jnp.concatenate([conv_state.astype(x.dtype), x[..., None]], axis=-1)  # [b, d, w]
    y = jnp.sum(window.astype(f32) * weight.astype(f32), axis=-1)
    if bias is not None:
        y = y + bias.astype(f32)
    return _act(y, silu_act).astype(x.dtype), window[..., 1:]
