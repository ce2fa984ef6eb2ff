"""Wraps an (FFI or reference) forward so that gradients come from the pure-JAX reference's VJP.

The FFI custom calls have no derivative of their own yet; the backward recomputes through a pure-JAX
implementation on the saved inputs (for selective_scan the chunked "xla" path, for the others the
reference), so gradients are exact fp32 math whichever forward ran.
"""

from __future__ import annotations

import functools

import jax


def with_reference_vjp(forward, reference):
    """forward(*arrays, **static) and reference(*arrays, **static) return the same pytree.

    Returns f(static: dict as a hashable tuple of items, *arrays). Arrays may be None (absent).
    """

    @functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
    def f(static, *arrays):
        return forward(*arrays, **dict(static))

    def fwd(static, *arrays):
        return forward(*arrays, **dict(static)), arrays

    def bwd(static, arrays, cotangent):
        _, vjp = jax.vjp(lambda *a: reference(*a, **dict(static)), *arrays)
        return vjp(cotangent)

    f.defvjp(fwd, bwd)
    return f
