"""selective_scan (Mamba-1 prefill): "ffi", "xla" (the library's pure-JAX path) and "assoc", a
lax.associative_scan baseline written here (not Metal-safe, materialises [batch, seqlen, dim, dstate]).

Options as a Mamba block uses them: D, z, delta_bias, delta_softplus, the state chained from call to
call as initial_state, the last state returned. B and C have one group."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

import mamba_jax as mj
from mamba_jax.shapes import MAMBA_130M, MAMBA_2_8B

from ..harness import Case, normal, size_bytes

f32 = jnp.float32


def unavailable():
    return None


def selective_scan_assoc(u, delta, A, B, C, D, z, delta_bias, *, initial_state):
    """The scan with h_t = a_t h_{t-1} + b_t solved by lax.associative_scan over seqlen; softplus on."""
    dt = jax.nn.softplus(delta.astype(f32) + delta_bias)
    a = jnp.exp(dt[..., None] * A)                                    # [b, l, d, n]
    bx = (dt * u.astype(f32))[..., None] * B.astype(f32)[:, :, None, :]
    bx = bx.at[:, 0].add(a[:, 0] * initial_state)

    def combine(left, right):
        return left[0] * right[0], right[0] * left[1] + right[1]

    _, h = lax.associative_scan(combine, (a, bx), axis=1)
    y = jnp.einsum("bldn,bln->bld", h, C.astype(f32)) + u.astype(f32) * D
    y = y * jax.nn.silu(z.astype(f32))
    return y.astype(u.dtype), h[:, -1]


def _lib(impl):
    def call(h, u, dl, A, B, C, D, z, db):
        y, h = mj.ops.selective_scan(u, dl, A, B, C, D, z, db, delta_softplus=True, initial_state=h,
                                     return_last_state=True, implementation=impl)
        return h, y
    return call


def _assoc(h, u, dl, A, B, C, D, z, db):
    y, h = selective_scan_assoc(u, dl, A, B, C, D, z, db, initial_state=h)
    return h, y


def case(model, shape, dtype) -> Case:
    b, l, d, n = shape["batch"], shape["seqlen"], shape["dim"], shape["dstate"]

    def make_sets(key):
        k = jax.random.split(key, 8)
        return (normal(k[0], (b, l, d), dtype), normal(k[1], (b, l, d), dtype, 0.5),
                -jnp.exp(jax.random.normal(k[2], (d, n)) * 0.5),
                normal(k[3], (b, l, n), dtype), normal(k[4], (b, l, n), dtype),
                jax.random.normal(k[5], (d,)), normal(k[6], (b, l, d), dtype),
                jax.random.normal(k[7], (d,)) * 0.5 - 4.0)  # dt ~ softplus(N(0, .5) - 4), as trained models

    # u, delta, z in and y out; B, C; A, D, delta_bias; the state in and out
    moved = (size_bytes(dtype, *[(b, l, d)] * 4, *[(b, l, n)] * 2)
             + size_bytes(f32, (d, n), (d,), (d,), (b, d, n), (b, d, n)))
    return Case("selective_scan", model, dict(shape), jnp.dtype(dtype).name, make_sets,
                carry0=lambda s: jnp.full((b, d, n), 0.1, f32),
                impls={"ffi": _lib("ffi"), "xla": _lib("xla"), "assoc": _assoc}, bytes_moved=moved)


def cases(backend, quick):
    if backend == "gpu":
        big = [(1, 2048, MAMBA_2_8B), (4, 2048, MAMBA_2_8B), (1, 8192, MAMBA_2_8B), (1, 2048, MAMBA_130M)]
        sizes, dtype = (big[:1] + big[-1:] if quick else big), jnp.bfloat16
    else:
        sizes, dtype = ([(1, 256, MAMBA_130M)] if quick else [(1, 2048, MAMBA_130M)]), jnp.float32
    return [case(m.name, dict(batch=b, seqlen=l, dim=m.dim, dstate=m.dstate), dtype) for b, l, m in sizes]


def peak_memory(quick):
    """Peak device memory of one jitted selective_scan (D, z, delta_bias, softplus, last state) over the
    bytes of its inputs and outputs; batch 1, seqlen 65536 (4096 with quick), mamba-2.8b's dim, bf16."""
    from mamba_jax.bench import peak_bytes_in_use

    b, l, d, n, dtype = 1, 4096 if quick else 65536, MAMBA_2_8B.dim, MAMBA_2_8B.dstate, jnp.bfloat16
    base = peak_bytes_in_use() or 0
    act = (b, l, d)
    make = jax.jit(lambda: (jnp.full(act, 0.5, dtype), jnp.full(act, -1.0, dtype), jnp.full((d, n), -1.0, f32),
                            jnp.full((b, l, n), 0.3, dtype), jnp.full((b, l, n), 0.2, dtype), jnp.ones((d,), f32),
                            jnp.full(act, 0.7, dtype), jnp.full((d,), -2.0, f32)))
    args = jax.block_until_ready(make())
    fn = jax.jit(lambda *a: mj.ops.selective_scan(*a, delta_softplus=True, return_last_state=True))
    y, last = jax.block_until_ready(fn(*args))
    inputs, outputs = sum(a.nbytes for a in args), y.nbytes + last.nbytes
    peak = (peak_bytes_in_use() or 0) - base
    return {"op": "selective_scan", "shape": dict(batch=b, seqlen=l, dim=d, dstate=n), "dtype": "bfloat16",
            "inputs_bytes": int(inputs), "outputs_bytes": int(outputs), "peak_bytes": int(peak),
            "peak_over_inputs_outputs": peak / (inputs + outputs),
            "y_finite": bool(jnp.isfinite(y.astype(f32)).all())}
