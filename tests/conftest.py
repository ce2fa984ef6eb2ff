"""Shared test setup: the one tolerance table, the implementations under test, random inputs.

Tests are backend-agnostic: they run on jax.default_backend(). On a CPU host "ffi" means the C++
kernels; on a GPU host the same tests exercise the CUDA kernels.
"""

from __future__ import annotations

import dataclasses
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mamba_jax import ops

# ---------------------------------------------------------------------------------------------
# Tolerances: ONE table, per activation dtype and per quantity, (rtol, atol). A value passes when
#   |actual - expected| <= atol * max(1, rms(expected)) + rtol * |expected|
# against the float64 oracle run on the same (already rounded) inputs, so the error budget is the
# kernel's float32 arithmetic plus one final rounding to the activation dtype.
#   out        y of any op, stored in the activation dtype (bf16 has 8 mantissa bits: 2^-9 ~ 2e-3
#              relative rounding, f16 2^-12).
#   state      float32 SSM states (last_state, new_state): fp32 math whatever the activation dtype.
#   conv_state conv states are copies of past inputs: exact.
#   grad       float32 gradients of the ops against float64 central differences of the oracle.
#   check_grads  tolerance handed to jax.test_util.check_grads (its own float32 finite differences).
# ---------------------------------------------------------------------------------------------
TOLERANCES = {
    "float32": {
        "out": (5e-5, 1e-5),
        "state": (5e-5, 1e-5),
        "conv_state": (0.0, 0.0),
        "grad": (1e-4, 1e-5),
        "check_grads": (2e-2, 2e-2),
    },
    "bfloat16": {
        "out": (1e-2, 2e-3),
        "state": (5e-5, 1e-5),
        "conv_state": (0.0, 0.0),
    },
    "float16": {
        "out": (2e-3, 5e-4),
        "state": (5e-5, 1e-5),
        "conv_state": (0.0, 0.0),
    },
}

DTYPES = {"f32": jnp.float32, "bf16": jnp.bfloat16, "f16": jnp.float16}


def tolerance(dtype, quantity: str) -> tuple[float, float]:
    return TOLERANCES[np.dtype(dtype).name][quantity]


def assert_close(actual, expected, dtype, quantity: str, what: str = "", magnitude=None):
    """Compares `actual` (any dtype) to the float64 `expected` with the table's tolerance.

    `magnitude` (broadcastable to `expected`), where given, replaces |expected| in the relative term
    when larger: for a sum of terms computed from inputs rounded to the activation dtype, where one
    ulp of a rounded input (rounded one way by the oracle and the other by a kernel that summed in
    another order, or not rounded at all by XLA's excess precision) moves every term relatively,
    the error scales with the sum of the terms' absolute values, not with the sum."""
    rtol, atol = tolerance(dtype, quantity)
    actual = np.asarray(np.asarray(actual).astype(np.float64))
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    assert np.all(np.isfinite(actual)), f"{what}: non-finite values"
    scale = max(1.0, float(np.sqrt(np.mean(expected**2)))) if expected.size else 1.0
    err = np.abs(actual - expected)
    rel = np.abs(expected) if magnitude is None else np.maximum(np.abs(expected), np.asarray(magnitude, np.float64))
    bound = atol * scale + rtol * rel
    if not np.all(err <= bound):
        i = np.unravel_index(np.argmax(err - bound), err.shape)
        raise AssertionError(
            f"{what} ({np.dtype(dtype).name}, {quantity}: rtol={rtol}, atol={atol}, scale={scale:.3g}): "
            f"{int(np.sum(err > bound))}/{err.size} elements out of tolerance; worst at {tuple(map(int, i))}: "
            f"got {actual[i]:.6g}, expected {expected[i]:.6g}; max abs err {err.max():.3g}"
        )


# ---------------------------------------------------------------------------------------------
# Implementations under test: "xla" everywhere, "ffi" where a kernel is built for this backend.
# ---------------------------------------------------------------------------------------------
def ffi_available() -> bool:
    backend = jax.default_backend()
    return (backend == "cpu" and ops.cpu_available()) or (backend == "gpu" and ops.cuda_available())


IMPLEMENTATIONS = ["xla"] + (["ffi"] if ffi_available() else [])

requires_ffi = pytest.mark.skipif(
    not ffi_available(), reason=f"no mamba_jax FFI kernel built for the '{jax.default_backend()}' backend"
)


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request):
    return request.param


@pytest.fixture
def rng(request):
    """A fresh generator per test, seeded from the test id so that a failure reproduces."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


# ---------------------------------------------------------------------------------------------
# Cases: a base case plus rows that each change one field; ids read like B2-L113-D96-N16-G2-bf16.
# ---------------------------------------------------------------------------------------------
def _dtype_tag(dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dtype]


@dataclasses.dataclass(frozen=True)
class ScanCase:
    """selective_scan / selective_state_update sizes and options (seqlen 0: a single step, no L in the id)."""

    batch: int = 2
    seqlen: int = 63
    dim: int = 96
    dstate: int = 16
    ngroups: int = 1  # 0 means B/C without the group axis ([..., dstate])
    dtype: type = jnp.float32
    D: bool = True
    z: bool = True
    bias: bool = True
    softplus: bool = True
    init: bool = False

    @property
    def id(self) -> str:
        opts = [n for n in ("D", "z", "bias", "softplus", "init") if getattr(self, n)]
        g = f"G{self.ngroups}" if self.ngroups else "G-"
        seq = f"-L{self.seqlen}" if self.seqlen else ""
        return (f"B{self.batch}{seq}-D{self.dim}-N{self.dstate}-{g}-{_dtype_tag(self.dtype)}-"
                + ("+".join(opts) if opts else "plain"))


@dataclasses.dataclass(frozen=True)
class ConvCase:
    batch: int = 2
    seqlen: int = 63
    dim: int = 96
    width: int = 4
    dtype: type = jnp.float32
    bias: bool = True
    silu: bool = True
    init: bool = False

    @property
    def id(self) -> str:
        opts = [n for n in ("bias", "silu", "init") if getattr(self, n)]
        return (f"B{self.batch}-L{self.seqlen}-D{self.dim}-W{self.width}-{_dtype_tag(self.dtype)}-"
                + ("+".join(opts) if opts else "plain"))


def rows(base, *changes: dict, marks=()):
    """pytest params: `base` with each dict of field changes applied (one row per dict)."""
    params = []
    for change in changes:
        case = dataclasses.replace(base, **change)
        params.append(pytest.param(case, id=case.id, marks=marks))
    return params


# ---------------------------------------------------------------------------------------------
# Random inputs, realistic for a trained Mamba: A = -exp(normal) (negative, decays), dt a small
# positive step (softplus of delta + an inverse-softplus bias, as Mamba initialises dt_bias).
# Returned as dicts of jax arrays in the dtypes the ops take.
# ---------------------------------------------------------------------------------------------
def _act(rng, shape, dtype, scale=1.0):
    return jnp.asarray(rng.normal(0.0, scale, shape), dtype)


def _f32(x):
    return jnp.asarray(x, jnp.float32)


def ssm_params(rng, case: ScanCase) -> dict:
    dim, n = case.dim, case.dstate
    p = {"A": _f32(-np.exp(rng.normal(0.0, 1.0, (dim, n))))}
    p["D"] = _f32(rng.normal(0.0, 1.0, dim)) if case.D else None
    if case.bias:
        if case.softplus:  # inverse softplus of a step in [1e-3, 1e-1]
            p["bias"] = _f32(np.log(np.expm1(np.exp(rng.uniform(np.log(1e-3), np.log(1e-1), dim)))))
        else:
            p["bias"] = _f32(rng.uniform(0.0, 0.05, dim))
    else:
        p["bias"] = None
    return p


def _delta(rng, shape, case: ScanCase):
    if case.softplus:
        # Without a bias, centre delta low so that softplus(delta) stays a small step.
        return _act(rng, shape, case.dtype) if case.bias else _act(rng, shape, case.dtype) - 3.0
    return jnp.asarray(rng.uniform(0.005, 0.15, shape), case.dtype)


def _bc(rng, lead: tuple, case: ScanCase):
    shape = lead + ((case.ngroups,) if case.ngroups else ()) + (case.dstate,)
    return _act(rng, shape, case.dtype)


def scan_inputs(rng, case: ScanCase) -> dict:
    """Keyword arguments of selective_scan (u, delta, A, B, C, D, z, delta_bias, initial_state)."""
    b, l, d = case.batch, case.seqlen, case.dim
    p = ssm_params(rng, case)
    return {
        "u": _act(rng, (b, l, d), case.dtype),
        "delta": _delta(rng, (b, l, d), case),
        "A": p["A"],
        "B": _bc(rng, (b, l), case),
        "C": _bc(rng, (b, l), case),
        "D": p["D"],
        "z": _act(rng, (b, l, d), case.dtype) if case.z else None,
        "delta_bias": p["bias"],
        "initial_state": _f32(rng.normal(0.0, 0.5, (b, d, case.dstate))) if case.init else None,
    }


def update_inputs(rng, case: ScanCase) -> dict:
    """Keyword arguments of selective_state_update (state, x, dt, A, B, C, D, z, dt_bias)."""
    b, d = case.batch, case.dim
    p = ssm_params(rng, case)
    return {
        "state": _f32(rng.normal(0.0, 0.5, (b, d, case.dstate))),
        "x": _act(rng, (b, d), case.dtype),
        "dt": _delta(rng, (b, d), case),
        "A": p["A"],
        "B": _bc(rng, (b,), case),
        "C": _bc(rng, (b,), case),
        "D": p["D"],
        "z": _act(rng, (b, d), case.dtype) if case.z else None,
        "dt_bias": p["bias"],
    }


def conv_inputs(rng, case: ConvCase) -> dict:
    """Keyword arguments of causal_conv1d (x, weight, bias, initial_state)."""
    b, l, d, w = case.batch, case.seqlen, case.dim, case.width
    return {
        "x": _act(rng, (b, l, d), case.dtype),
        "weight": _f32(rng.normal(0.0, 1.0 / np.sqrt(w), (d, w))),
        "bias": _f32(rng.normal(0.0, 0.5, d)) if case.bias else None,
        "initial_state": _act(rng, (b, d, w - 1), case.dtype) if case.init else None,
    }


def conv_update_inputs(rng, case: ConvCase) -> dict:
    """Keyword arguments of causal_conv1d_update (x, conv_state, weight, bias)."""
    b, d, w = case.batch, case.dim, case.width
    return {
        "x": _act(rng, (b, d), case.dtype),
        "conv_state": _act(rng, (b, d, w - 1), case.dtype),
        "weight": _f32(rng.normal(0.0, 1.0 / np.sqrt(w), (d, w))),
        "bias": _f32(rng.normal(0.0, 0.5, d)) if case.bias else None,
    }


def vmap_stack(draw, names, nv: int, unbatched=()):
    """nv draws of inputs stacked on a new leading axis, except the `unbatched` names (taken from the
    first draw). Returns (stacked {name: array}, in_axes tuple in `names` order, per-slice input dicts)."""
    draws = [draw() for _ in range(nv)]
    stacked = {k: (draws[0][k] if k in unbatched else jnp.stack([d[k] for d in draws])) for k in names}
    in_axes = tuple(None if k in unbatched else 0 for k in names)
    slices = [{k: (stacked[k][i] if a == 0 else stacked[k]) for k, a in zip(names, in_axes)} for i in range(nv)]
    return stacked, in_axes, slices
