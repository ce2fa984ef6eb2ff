"""ops.linear (decode projections): x @ w with float32 accumulation, against a float64 NumPy oracle,
on whatever backend runs the tests (on a GPU with the CUDA kernels built this is mamba_jax's GEMV
kernel for <= 8 rows; elsewhere, and for more rows, XLA's dot). Shapes are odd and real (mamba-130m
and mamba-2.8b decode projections), every dtype, jit, vmap and grad, and the argument checks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from conftest import assert_close, tolerance
from mamba_jax import ops

DTYPES = [jnp.float32, jnp.bfloat16, jnp.float16]
SHAPES = [  # (rows, K, N)
    (1, 768, 3072),   # mamba-130m in_proj
    (1, 1536, 80),    # mamba-130m x_proj
    (3, 48, 1536),    # mamba-130m dt_proj, 3 rows
    (8, 5120, 192),   # mamba-2.8b x_proj, 8 rows
    (2, 5120, 2560),  # mamba-2.8b out_proj
    (5, 37, 24),      # odd K, N a multiple of 8 only
    (1, 33, 20),      # N not a multiple of 8 (bf16/f16 take the dot)
    (9, 64, 64),      # more rows than the kernel takes
]


def _inputs(rows, K, N, dtype, seed=0):
    r = np.random.default_rng(seed + rows * 7 + K + N)
    x = jnp.asarray(r.standard_normal((rows, K)), dtype)
    w = jnp.asarray(r.standard_normal((K, N)) / np.sqrt(K), dtype)
    return x, w


def _oracle(x, w):
    return np.asarray(x, np.float64) @ np.asarray(w, np.float64)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_linear_matches_oracle(shape, dtype):
    x, w = _inputs(*shape, dtype)
    for impl in (None, "xla"):
        y = jax.jit(lambda x, w: ops.linear(x, w, implementation=impl))(x, w)
        assert y.dtype == x.dtype and y.shape == (shape[0], shape[2])
        assert_close(y, _oracle(x, w), dtype, "out", f"linear {shape} impl={impl}")


def test_linear_leading_dims_and_vmap():
    x, w = _inputs(6, 40, 16, jnp.bfloat16)
    x3 = x.reshape(2, 3, 40)
    y = ops.linear(x3, w)
    assert y.shape == (2, 3, 16)
    assert_close(y, _oracle(x, w).reshape(2, 3, 16), jnp.bfloat16, "out", "leading dims")
    yv = jax.jit(jax.vmap(ops.linear, in_axes=(0, None)))(x3, w)
    assert_close(yv, _oracle(x, w).reshape(2, 3, 16), jnp.bfloat16, "out", "vmap over x")
    ws = jnp.stack([w, 2 * w])
    yw = jax.vmap(ops.linear, in_axes=(None, 0))(x[:1], ws)
    ref = np.stack([_oracle(x[:1], w), 2 * _oracle(x[:1], w)])
    assert_close(yw, ref, jnp.bfloat16, "out", "vmap over w")


def test_linear_grad():
    x, w = _inputs(2, 24, 16, jnp.float32)
    rtol, atol = tolerance(jnp.float32, "check_grads")
    check_grads(lambda x, w: ops.linear(x, w), (x, w), order=1, modes=("rev",), rtol=rtol, atol=atol)
    g = np.random.default_rng(1).standard_normal((2, 16))
    dx, dw = jax.grad(lambda x, w: jnp.sum(ops.linear(x, w) * g), argnums=(0, 1))(x, w)
    assert_close(dx, g @ np.asarray(w, np.float64).T, jnp.float32, "grad", "dx")
    assert_close(dw, np.asarray(x, np.float64).T @ g, jnp.float32, "grad", "dw")


def test_linear_kernel_rule():
    from mamba_jax.ops.linear import kernel_applies
    x, w = _inputs(1, 768, 3072, jnp.bfloat16)  # mamba-130m in_proj
    assert kernel_applies(x, w)
    assert kernel_applies(x.astype(jnp.float32), w.astype(jnp.float32))
    assert not kernel_applies(jnp.concatenate([x] * 9), w)  # 9 rows
    assert not kernel_applies(x, w[:, :1020])  # N = 1020: not a whole number of 16-byte bf16 vectors
    assert kernel_applies(x.astype(jnp.float32), w[:, :1020].astype(jnp.float32))  # 1020 % 4 == 0
    assert not kernel_applies(x, w[:, :80])  # narrow (x_proj): XLA's reduce fusion is as fast
    assert not kernel_applies(x[:, :48], w[:48])  # shallow (dt_proj)
    x2, w2 = _inputs(1, 2560, 10240, jnp.bfloat16)  # mamba-2.8b in_proj: cuBLAS is faster
    assert not kernel_applies(x2, w2)


@pytest.mark.parametrize("case", ["w_rank", "k_mismatch", "dtype", "impl"])
def test_linear_bad_input(case):
    x, w = _inputs(1, 16, 8, jnp.float32)
    with pytest.raises((ValueError, TypeError)) as e:
        if case == "w_rank":
            ops.linear(x, w[None])
        elif case == "k_mismatch":
            ops.linear(x[:, :15], w)
        elif case == "dtype":
            ops.linear(x, w.astype(jnp.bfloat16))
        else:
            ops.linear(x, w, implementation="cuda")
    msg = str(e.value)
    assert "linear" in msg
    assert {"w_rank": "w has shape", "k_mismatch": "x has shape", "dtype": "w has dtype",
            "impl": "implementation"}[case] in msg
