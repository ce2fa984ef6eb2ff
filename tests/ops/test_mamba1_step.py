"""mamba1_step (the fused Mamba-1 decode step between in_proj and out_proj) against a float64 oracle
that rounds where the op is defined to round (the conv output, x_proj's output and dt in the activation
dtype): every implementation, odd and real sizes, dtypes, slot pools (traced out-of-range slots
included), jit, vmap, gradients, and the model's fused step against its unfused one."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from jax.test_util import check_grads

import oracle
from conftest import assert_close, tolerance
from mamba_jax import ops

F32, BF16, F16 = jnp.float32, jnp.bfloat16, jnp.float16


def ffi_built(op: str) -> bool:
    return {"cpu": ops.cpu_available, "gpu": ops.cuda_available}.get(jax.default_backend(), lambda _: False)(op)


def step_impls(op: str) -> list:
    """The implementations to test: "xla"; None (per platform: the kernel where built); "ffi" (the CPU or
    CUDA kernel of this backend, where built)."""
    return ["xla", None] + (["ffi"] if ffi_built(op) else [])


IMPLS = step_impls("mamba1_step")


@pytest.fixture(params=IMPLS, ids=lambda v: str(v))
def impl(request):
    return request.param


NAMES = ("xz", "conv_state", "ssm_state", "conv_weight", "conv_bias", "x_proj", "dt_proj", "dt_bias", "A", "D")


@dataclasses.dataclass(frozen=True)
class Case:
    batch: int = 3
    dim: int = 200
    dstate: int = 16
    dt_rank: int = 13
    width: int = 4
    dtype: object = F32
    conv_bias: bool = True
    skip: bool = True

    def __str__(self):
        tag = {F32: "f32", BF16: "bf16", F16: "f16"}[self.dtype]
        return (f"B{self.batch}-E{self.dim}-N{self.dstate}-R{self.dt_rank}-W{self.width}-{tag}"
                + ("" if self.conv_bias else "-nobias") + ("" if self.skip else "-noD"))


CASES = [
    Case(),
    Case(batch=1, dim=64, dstate=4, dt_rank=5, width=2, conv_bias=False, skip=False),
    Case(batch=2, dim=1536, dstate=16, dt_rank=48, dtype=BF16),   # mamba-790m's layer
    Case(batch=5, dim=130, dstate=8, dt_rank=9, width=3, dtype=F16),
    Case(batch=2, dim=200, dtype=BF16, width=8),
    Case(batch=9, dim=5120, dstate=16, dt_rank=160, dtype=BF16),  # mamba-2.8b's layer; a partial row block
    Case(batch=64, dim=5120, dstate=16, dt_rank=160, dtype=BF16),  # 16 row blocks
]


def inputs(rng, c: Case, n_slots=None):
    e, n, r, act = c.dim, c.dstate, c.dt_rank, c.dtype
    rows = c.batch if n_slots is None else n_slots
    a = lambda shape, s=1.0: jnp.asarray(rng.standard_normal(shape) * s, act)
    f = lambda shape, s=1.0: jnp.asarray(rng.standard_normal(shape) * s, F32)
    return dict(
        xz=a((c.batch, 2 * e)), conv_state=a((rows, e, c.width - 1)), ssm_state=f((rows, e, n)),
        conv_weight=f((e, c.width), 0.5), conv_bias=f((e,), 0.5) if c.conv_bias else None,
        x_proj=a((e, r + 2 * n), e ** -0.5), dt_proj=a((r, e), r ** -0.5),
        dt_bias=jnp.asarray(np.log(np.expm1(rng.uniform(1e-3, 1e-1, e))), F32),
        A=-jnp.exp(f((e, n), 0.5)), D=f((e,)) if c.skip else None)


def round_to(x, dtype):
    """x rounded to `dtype`, as float64."""
    return np.asarray(np.asarray(x, np.float64).astype(jnp.dtype(dtype)), np.float64)


def oracle_step(xz, conv_state, ssm_state, conv_weight, conv_bias, x_proj, dt_proj, dt_bias, A, D):
    """float64, with the op's rounding points. Returns (y, new_conv_state, new_ssm_state, y_magnitude,
    state_magnitude): the last two are the sums of the absolute values of the terms that make y and the
    new state (assert_close's `magnitude`: u, x_proj's output and dt are rounded sums, and a one-ulp
    difference in one of them moves every term of y and of the state)."""
    act = xz.dtype
    xz64 = np.asarray(xz, np.float64)
    e = xz64.shape[1] // 2
    r, n = np.shape(dt_proj)[0], np.shape(A)[1]
    u, new_conv = oracle.causal_conv1d_update(xz64[:, :e], conv_state, conv_weight, conv_bias, activation="silu")
    u = round_to(u, act)
    x_dbl = round_to(u @ np.asarray(x_proj, np.float64), act)
    dt = round_to(x_dbl[:, :r] @ np.asarray(dt_proj, np.float64), act)
    B, C = x_dbl[:, r:r + n], x_dbl[:, r + n:]
    y, new_ssm = oracle.selective_state_update(ssm_state, u, dt, A, B, C, D, xz64[:, e:], dt_bias, dt_softplus=True)
    # The same update on absolute values (the decay exp(dt A) is positive): |decay h| + |dt u B| per state.
    state_mag = oracle.selective_state_update(np.abs(np.asarray(ssm_state, np.float64)), np.abs(u), dt, A,
                                              np.abs(B), np.abs(C), dt_bias=dt_bias, dt_softplus=True)[1]
    z = xz64[:, e:]
    y_mag = np.sum(state_mag * np.abs(C)[:, None, :], axis=-1)
    if D is not None:
        y_mag = y_mag + np.abs(np.asarray(D, np.float64)) * np.abs(u)
    y_mag = y_mag * np.abs(oracle.silu(z))
    return y, new_conv, new_ssm, y_mag, state_mag


def check(c, impl, got, want, what=""):
    """A fused step's (y, new_conv_state, new_ssm_state) against its oracle's (y, new_conv_state,
    new_ssm_state, y_magnitude, state_magnitude); c.dtype is the activation dtype. (test_mamba2_step too.)"""
    y, conv, ssm = got
    assert y.dtype == c.dtype and conv.dtype == c.dtype and ssm.dtype == F32
    assert_close(y, want[0], c.dtype, "out", f"{impl} y {what}", magnitude=want[3])
    assert_close(conv, want[1], c.dtype, "conv_state", f"{impl} new_conv_state {what}")
    # The state takes its inputs from rounded outputs of the step's earlier stages: float32 math on inputs
    # that may be one ulp apart.
    assert_close(ssm, want[2], c.dtype, "state" if c.dtype == F32 else "out", f"{impl} new_ssm_state {what}",
                 magnitude=want[4])


def pool_rows(x: dict, slots, n_slots: int) -> dict:
    """The step's arguments with both states replaced by the pool rows that `slots` name (slot 0 for the rows
    whose slot is out of range), for the oracle."""
    at = np.where(slots < n_slots, slots, 0)
    return dict(x, conv_state=jnp.asarray(np.asarray(x["conv_state"])[at]),
                ssm_state=jnp.asarray(np.asarray(x["ssm_state"])[at]))


def check_pool(c, impl, x, slots, n_slots, got, want):
    """A fused step on pools of n_slots rows (row b on slot slots[b]) against the oracle run on pool_rows:
    y of the rows with a slot, y = 0 for those without, the slots the rows update and the untouched ones."""
    y, conv, ssm = got
    ok = slots < n_slots
    assert_close(np.asarray(y)[ok], want[0][ok], c.dtype, "out", f"{impl} pooled y", magnitude=want[3][ok])
    assert not np.any(np.asarray(y, np.float32)[~ok]), "an out-of-range slot must give y = 0"
    conv_w, ssm_w = np.asarray(x["conv_state"], np.float64), np.asarray(x["ssm_state"], np.float64)
    ssm_mag = np.zeros_like(ssm_w)  # slots no row updates: the plain tolerance
    conv_w[slots[ok]] = want[1][ok]
    ssm_w[slots[ok]] = want[2][ok]
    ssm_mag[slots[ok]] = want[4][ok]
    assert_close(conv, conv_w, c.dtype, "conv_state", f"{impl} conv pool")
    assert_close(ssm, ssm_w, c.dtype, "state" if c.dtype == F32 else "out", f"{impl} ssm pool", magnitude=ssm_mag)


def assert_fused_step_equals_unfused(mixer, xs, dtype, monkeypatch):
    """mixer.step over the tokens xs [steps, batch, d] with MAMBA_JAX_FUSED_STEP=1 (the fused op) and =0 (the
    unfused ops), from zero states: outputs and states agree."""
    def run(flag):
        monkeypatch.setenv("MAMBA_JAX_FUSED_STEP", flag)
        conv, ssm = mixer.init_state(xs.shape[1], dtype)
        step = jax.jit(lambda x, c, s: mixer.step(x, c, s))
        ys = []
        for x in xs:
            y, conv, ssm = step(x, conv, ssm)
            ys.append(y)
        return jnp.stack(ys), conv, ssm

    y1, c1, s1 = run("1")
    y0, c0, s0 = run("0")
    assert_close(y1, np.asarray(y0, np.float64), dtype, "out", "fused y")
    # The conv states hold in_proj's outputs, and each program computes in_proj with its own XLA GEMM: on
    # the H200 the two programs' picks differed by one ulp in 4 of 76800 bf16 values (the fused op's own
    # copy is exact: the op tests). So they are compared as outputs, not as copies.
    assert_close(c1, np.asarray(c0, np.float64), dtype, "out", "fused conv state")
    assert_close(s1, np.asarray(s0, np.float64), dtype, "state" if dtype == F32 else "out", "fused ssm state")


@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_oracle(case, impl, rng):
    x = inputs(rng, case)
    want = oracle_step(**x)
    got = jax.jit(functools.partial(ops.mamba1_step, implementation=impl))(**x)
    check(case, impl, got, want)


@pytest.mark.parametrize("case", [Case(), Case(batch=4, dim=96, dtype=BF16)], ids=str)
def test_slot_pool(case, impl, rng):
    """Rows read and write their slots of pools of 7 rows; a traced out-of-range slot touches nothing
    and gives y = 0; the other slots keep their values."""
    x = inputs(rng, case, n_slots=7)
    slots = np.array([5, 0, 7, 2][:case.batch], np.int32)  # 7: not a slot (traced, so not rejected)
    step = jax.jit(functools.partial(ops.mamba1_step, implementation=impl))
    got = step(**x, state_indices=jnp.asarray(slots))
    check_pool(case, impl, x, slots, 7, got, oracle_step(**pool_rows(x, slots, 7)))
    with pytest.raises(ValueError, match="state_indices"):  # concrete values are checked
        ops.mamba1_step(**x, state_indices=jnp.asarray(slots), implementation=impl)


def test_vmap(impl, rng):
    c = Case(batch=2, dim=72, dstate=4, dt_rank=3)
    xs = [inputs(rng, c) for _ in range(3)]
    stacked = {k: (None if xs[0][k] is None else jnp.stack([x[k] for x in xs])) for k in NAMES}
    axes = {k: (None if v is None else 0) for k, v in stacked.items()}
    fn = jax.jit(jax.vmap(lambda kw: ops.mamba1_step(**kw, implementation=impl), in_axes=(axes,)))
    got = fn(stacked)
    for i, x in enumerate(xs):
        check(c, impl, tuple(g[i] for g in got), oracle_step(**x), f"vmap slice {i}")


def test_gradients(impl, rng):
    """Gradients (from the pure-JAX VJP whichever forward ran) against float64 central differences of
    the oracle, and jax's own check on the float32 function."""
    c = Case(batch=2, dim=10, dstate=3, dt_rank=2, width=3)
    x = inputs(rng, c)
    wy = rng.standard_normal((c.batch, c.dim))
    ws = rng.standard_normal((c.batch, c.dim, c.dstate))
    diff = ("xz", "x_proj", "dt_proj", "ssm_state", "A")

    def loss(**kw):
        y, _, s = ops.mamba1_step(**kw, implementation=impl)
        return jnp.sum(y * wy) + jnp.sum(s * ws)

    def loss_ref(**kw):
        y, _, s = oracle_step(**{k: (v if k in diff else x[k]) for k, v in kw.items()})[:3]
        return float(np.sum(y * wy) + np.sum(s * ws))

    grads = jax.jit(jax.grad(lambda d: loss(**{**x, **d})))({k: x[k] for k in diff})
    ref = oracle.numerical_grad(lambda **d: loss_ref(**{**x, **d}), {k: x[k] for k in diff})
    for k in diff:
        assert_close(grads[k], ref[k], F32, "grad", f"{impl} d{k}")
    rtol, atol = tolerance(F32, "check_grads")
    check_grads(jax.jit(lambda a, b: loss(**{**x, "xz": a, "x_proj": b})), (x["xz"], x["x_proj"]), order=1,
                modes=["rev"], atol=atol, rtol=rtol)


@pytest.mark.parametrize("dtype,d_model,d_state,batch", [(F32, 48, 8, 2), (BF16, 48, 8, 2), (BF16, 2560, 16, 5)],
                         ids=["f32", "bf16", "bf16-mamba-2.8b-layer"])
def test_model_fused_step_equals_unfused(dtype, d_model, d_state, batch, monkeypatch):
    """MambaMixer.step with MAMBA_JAX_FUSED_STEP=1 (ops.mamba1_step) == the unfused ops (=0), three steps,
    up to a mamba-2.8b layer; the default ("auto") fuses batch 1 on a GPU only; other values are refused."""
    from flax import nnx
    from mamba_jax.nn import MambaMixer

    mixer = MambaMixer(d_model, d_state=d_state, d_conv=4, expand=2, dtype=dtype, param_dtype=dtype,
                       rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.standard_normal((3, batch, d_model)), dtype)

    from mamba_jax.nn.mixer import use_fused_step

    monkeypatch.delenv("MAMBA_JAX_FUSED_STEP", raising=False)
    on_gpu = jax.default_backend() == "gpu"
    assert use_fused_step(None, 1) == on_gpu and not use_fused_step(None, 4) and not use_fused_step("xla", 1)
    assert use_fused_step(None, 4, every_batch=True) == on_gpu and not use_fused_step("xla", 4, every_batch=True)
    monkeypatch.setenv("MAMBA_JAX_FUSED_STEP", "1")
    assert use_fused_step(None, 4) and not use_fused_step("xla", 1)
    monkeypatch.setenv("MAMBA_JAX_FUSED_STEP", "0")
    assert not use_fused_step(None, 1)
    monkeypatch.setenv("MAMBA_JAX_FUSED_STEP", "yes")
    with pytest.raises(ValueError, match="MAMBA_JAX_FUSED_STEP"):
        use_fused_step(None, 1)
    assert_fused_step_equals_unfused(mixer, xs, dtype, monkeypatch)


def test_bad_inputs(rng):
    x = inputs(rng, Case(batch=2, dim=16, dstate=4, dt_rank=3))
    bad = [
        ({"xz": x["xz"][:, :-1]}, ValueError, "xz has shape"),
        ({"x_proj": x["x_proj"][:, :-1]}, ValueError, "x_proj has shape"),
        ({"dt_proj": x["dt_proj"][:, :-1]}, ValueError, "dt_proj has shape"),
        ({"conv_state": x["conv_state"].astype(BF16)}, TypeError, "conv_state has dtype"),
        ({"ssm_state": x["ssm_state"].astype(BF16)}, TypeError, "ssm_state has dtype"),
        ({"ssm_state": x["ssm_state"][:, :, :-1]}, ValueError, "ssm_state has shape"),
        ({"dt_bias": None}, ValueError, "dt_bias is required"),
        ({"A": x["A"][:-1]}, ValueError, "A has shape"),
        ({"conv_weight": x["conv_weight"][:, :1]}, ValueError, "width"),
        ({"x_proj": x["x_proj"].astype(jnp.int32)}, TypeError, "x_proj has dtype"),
    ]
    for change, err, msg in bad:
        with pytest.raises(err, match=msg):
            ops.mamba1_step(**{**x, **change})
    with pytest.raises(ValueError, match="implementation"):
        ops.mamba1_step(**x, implementation="cuda")
