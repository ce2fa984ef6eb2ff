"""fp32 elementwise math and small array helpers shared by the pure-JAX paths of the ops (Metal-safe)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

f32 = jnp.float32


def softplus(x):
    # log1p(exp(x)) with the large-x branch, as the kernels compute it.
    return jnp.where(x > 20.0, x, jnp.log1p(jnp.exp(jnp.minimum(x, 20.0))))


def silu(x):
    return x * jax.nn.sigmoid(x)


def prep_dt(dt, dt_bias, dt_softplus):
    """fp32 dt + dt_bias, softplus'd if asked."""
    dt = dt.astype(f32)
    if dt_bias is not None:
        dt = dt + dt_bias.astype(f32)
    return softplus(dt) if dt_softplus else dt


def skip_and_gate(y, x, D, z):
    """y + D x, times silu(z) when z is given (fp32)."""
    if D is not None:
        y = y + x * D.astype(f32)
    if z is not None:
        y = y * silu(z.astype(f32))
    return y


def pad_to(x, length, axis=1):
    """Zero-pads `axis` up to `length` at the end, by concatenation (exterior only, no pad op)."""
    extra = length - x.shape[axis]
    if extra == 0:
        return x
    shape = list(x.shape)
    shape[axis] = extra
    return jnp.concatenate([x, jnp.zeros(shape, x.dtype)], axis=axis)


def rms_normalize(x32, eps, group_size=None, mean_hook=None):
    """x32 [..., F] float32 divided by sqrt(mean(x32^2) + eps), the mean over each group of `group_size`
    consecutive channels (None: all F). mean_hook, if given, maps the mean squares [..., groups, 1]
    first (RMSNorm's all-reduce across devices). RMSNorm and add_rms_norm's pure-JAX path both call
    this, so their results are the same bit for bit."""
    F = x32.shape[-1]
    group_size = F if group_size is None else group_size
    g = x32.reshape(*x32.shape[:-1], F // group_size, group_size)
    ms = jnp.mean(g * g, axis=-1, keepdims=True)
    if mean_hook is not None:
        ms = mean_hook(ms)
    return (g * jax.lax.rsqrt(ms + eps)).reshape(x32.shape)
