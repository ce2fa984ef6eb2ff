"""mamba2_step (the fused Mamba-2 decode step between in_proj and the gated norm) against a float64 oracle
that rounds the conv output to the activation dtype, as the op is defined to: every implementation, odd
and real sizes (mamba2-130m, mamba2-2.7b layers), dtypes, options, slot pools (traced out-of-range slots
included), jit, vmap, gradients, an empty batch, in place under donation, bad input; the fused op equals
the two unfused ops bit for bit; and Mamba2Mixer's fused step equals its unfused one."""

from __future__ import annotations

import dataclasses
import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import oracle
import oracle_ssd
from conftest import assert_close, tolerance
from mamba_jax import ops
from mamba_jax.ops.mamba2_step import split_xbc
from test_mamba1_step import (assert_fused_step_equals_unfused, check, check_pool, ffi_built, pool_rows, round_to,
                              step_impls)

F32, BF16, F16 = jnp.float32, jnp.bfloat16, jnp.float16
FFI_BUILT = ffi_built("mamba2_step")
IMPLS = step_impls("mamba2_step")
NO_FFI = f"no mamba2_step FFI kernel built for the '{jax.default_backend()}' backend"


@pytest.fixture(params=IMPLS, ids=lambda v: str(v))
def impl(request):
    return request.param


NAMES = ("xBC", "dt", "conv_state", "ssm_state", "conv_weight", "conv_bias", "A", "D", "dt_bias", "z")


@dataclasses.dataclass(frozen=True)
class Case:
    batch: int = 3
    nheads: int = 3
    headdim: int = 5
    dstate: int = 7
    ngroups: int = 1
    width: int = 4
    dtype: object = F32
    conv_bias: bool = True
    D: str | None = "head"  # "head" [h], "channel" [h, p] or None
    z: bool = True
    dt_bias: bool = True
    limit: bool = False

    @property
    def channels(self) -> int:
        return self.nheads * self.headdim + 2 * self.ngroups * self.dstate

    @property
    def dt_limit(self):
        return (0.02, 0.5) if self.limit else (0.0, math.inf)

    def __str__(self):
        tag = {F32: "f32", BF16: "bf16", F16: "f16"}[self.dtype]
        opts = [f"D{self.D[0]}" if self.D else "noD"] + [n for n in ("conv_bias", "z", "dt_bias", "limit")
                                                          if getattr(self, n)]
        return (f"B{self.batch}-H{self.nheads}-P{self.headdim}-N{self.dstate}-G{self.ngroups}-W{self.width}-{tag}-"
                + "+".join(opts))


CASES = [
    Case(),
    Case(ngroups=3, width=3, dtype=BF16),
    Case(width=2, dtype=F16, conv_bias=False, D=None, z=False, dt_bias=False),
    Case(D="channel", limit=True),
    Case(batch=1, nheads=1, headdim=1, dstate=1, width=2),
    Case(batch=5, nheads=6, headdim=16, dstate=16, ngroups=2, dtype=F16, D="channel", z=False),
    Case(batch=2, nheads=4, headdim=8, dstate=256, dtype=BF16, limit=True),
    Case(batch=2, nheads=24, headdim=64, dstate=128, dtype=BF16, z=False),  # mamba2-130m's layer
    Case(batch=2, nheads=80, headdim=64, dstate=128, dtype=BF16, z=False),  # mamba2-2.7b's layer
    Case(batch=1, nheads=80, headdim=64, dstate=128, dtype=F32),
    Case(batch=4, nheads=80, headdim=64, dstate=128, ngroups=8, dtype=F16, D="channel", limit=True),
]


def inputs(rng, c: Case, n_slots=None) -> dict:
    h, p, n, act, cd = c.nheads, c.headdim, c.dstate, c.dtype, c.channels
    rows = c.batch if n_slots is None else n_slots
    a = lambda shape, s=1.0: jnp.asarray(rng.standard_normal(shape) * s, act)
    f = lambda shape, s=1.0: jnp.asarray(rng.standard_normal(shape) * s, F32)
    D = {"head": lambda: f((h,)), "channel": lambda: f((h, p)), None: lambda: None}[c.D]()
    return dict(
        xBC=a((c.batch, cd)), dt=a((c.batch, h), 0.5), conv_state=a((rows, cd, c.width - 1)),
        ssm_state=f((rows, h, p, n), 0.5), conv_weight=f((cd, c.width), 0.5),
        conv_bias=f((cd,), 0.5) if c.conv_bias else None, A=-jnp.exp(f((h,), 0.5)), D=D,
        dt_bias=jnp.asarray(np.log(np.expm1(rng.uniform(1e-3, 1e-1, h))), F32) if c.dt_bias else None,
        z=a((c.batch, h, p)) if c.z else None)


def oracle_step(xBC, dt, conv_state, ssm_state, conv_weight, conv_bias, A, D, dt_bias, z, dt_limit=(0.0, math.inf)):
    """float64, the conv output rounded to the activation dtype. Returns (y, new_conv_state, new_ssm_state,
    y_magnitude, state_magnitude): the last two are the sums of the absolute values of the terms of y and of
    the new state (assert_close's `magnitude`: a one-ulp difference in a rounded conv output moves every term)."""
    _, h, p, n = np.shape(ssm_state)
    u, new_conv = oracle.causal_conv1d_update(xBC, conv_state, conv_weight, conv_bias, activation="silu")
    u = round_to(u, xBC.dtype)
    gn = (u.shape[1] - h * p) // 2
    x, B, C = (u[:, :h * p].reshape(-1, h, p), u[:, h * p:h * p + gn].reshape(-1, gn // n, n),
               u[:, h * p + gn:].reshape(-1, gn // n, n))
    opts = dict(dt_softplus=True, dt_limit=dt_limit)
    y, new_ssm = oracle_ssd.ssd_state_update(ssm_state, x, dt, A, B, C, D, z, dt_bias, **opts)
    absD = None if D is None else np.abs(np.asarray(D, np.float64))
    y_mag, state_mag = oracle_ssd.ssd_state_update(np.abs(np.asarray(ssm_state, np.float64)), np.abs(x), dt, A,
                                                   np.abs(B), np.abs(C), absD, None, dt_bias, **opts)
    if z is not None:
        y_mag = y_mag * np.abs(oracle.silu(np.asarray(z, np.float64)))
    return y, new_conv, new_ssm, y_mag, state_mag


def run(impl, x, c):
    return jax.jit(functools.partial(ops.mamba2_step, dt_limit=c.dt_limit, implementation=impl))(**x)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_oracle(case, impl, rng):
    x = inputs(rng, case)
    check(case, impl, run(impl, x, case), oracle_step(**x, dt_limit=case.dt_limit))


@pytest.mark.parametrize("case", CASES[:4] + CASES[7:9], ids=str)
def test_equals_unfused_ops(case, impl, rng):
    """The fused op == causal_conv1d_update then ssd_state_update with the same implementation, bit for bit
    (the same kernels or the same pure-JAX paths)."""
    x = inputs(rng, case)

    def unfused(xBC, dt, conv_state, ssm_state, conv_weight, conv_bias, A, D, dt_bias, z):
        _, h, p, n = ssm_state.shape
        u, conv_state = ops.causal_conv1d_update(xBC, conv_state, conv_weight, conv_bias, activation="silu",
                                                 implementation=impl)
        xs, B, C = split_xbc(u, h, p, n)
        y, ssm_state = ops.ssd_state_update(ssm_state, xs, dt, A, B, C, D, z, dt_bias, dt_softplus=True,
                                            dt_limit=case.dt_limit, implementation=impl)
        return y, conv_state, ssm_state

    for a, b, name in zip(run(impl, x, case), jax.jit(unfused)(**x), ("y", "new_conv_state", "new_ssm_state")):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"{impl} {name}")


@pytest.mark.parametrize("case", [Case(batch=4, D="channel"), Case(batch=4, nheads=4, headdim=16, dstate=64,
                                                                  ngroups=2, dtype=BF16)], ids=str)
def test_slot_pool(case, impl, rng):
    """Rows read and write their slots of pools of 7 rows; a traced out-of-range slot touches nothing and gives
    y = 0; the other slots keep their values. Concrete out-of-range slots are refused."""
    x = inputs(rng, case, n_slots=7)
    slots = np.array([5, 0, 7, 2], np.int32)  # 7: not a slot (traced, so not rejected)
    got = run(impl, dict(x, state_indices=jnp.asarray(slots)), case)
    check_pool(case, impl, x, slots, 7, got, oracle_step(**pool_rows(x, slots, 7), dt_limit=case.dt_limit))
    with pytest.raises(ValueError, match="state_indices"):
        ops.mamba2_step(**x, state_indices=jnp.asarray(slots), implementation=impl)


def test_vmap(impl, rng):
    c = Case(batch=2, nheads=4, headdim=16, dstate=16, ngroups=2, dtype=BF16, D="channel")
    xs = [inputs(rng, c) for _ in range(3)]
    stacked = {k: jnp.stack([x[k] for x in xs]) for k in NAMES}
    fn = jax.jit(jax.vmap(lambda kw: ops.mamba2_step(**kw, implementation=impl)))
    got = fn(stacked)
    for i, x in enumerate(xs):
        check(c, impl, tuple(g[i] for g in got), oracle_step(**x), f"vmap slice {i}")


def test_gradients(impl, rng):
    """Gradients (from the pure-JAX VJP whichever forward ran) against float64 central differences of the
    oracle, and jax's own check on the float32 function."""
    c = Case(batch=2, nheads=2, headdim=3, dstate=4, ngroups=1, width=3, D="channel")
    x = inputs(rng, c)
    wy = rng.standard_normal((c.batch, c.nheads, c.headdim))
    ws = rng.standard_normal(np.shape(x["ssm_state"]))
    diff = ("xBC", "dt", "ssm_state", "conv_weight", "A", "D", "dt_bias", "z")

    def loss(**kw):
        y, _, s = ops.mamba2_step(**kw, implementation=impl)
        return jnp.sum(y * wy) + jnp.sum(s * ws)

    def loss_ref(**kw):
        y, _, s = oracle_step(**{k: (v if k in diff else x[k]) for k, v in kw.items()})[:3]
        return float(np.sum(y * wy) + np.sum(s * ws))

    grads = jax.jit(jax.grad(lambda d: loss(**{**x, **d})))({k: x[k] for k in diff})
    ref = oracle.numerical_grad(lambda **d: loss_ref(**{**x, **d}), {k: x[k] for k in diff})
    for k in diff:
        assert_close(grads[k], ref[k], F32, "grad", f"{impl} d{k}")
    rtol, atol = tolerance(F32, "check_grads")
    check_grads(jax.jit(lambda a, b: loss(**{**x, "xBC": a, "ssm_state": b})), (x["xBC"], x["ssm_state"]), order=1,
                modes=["rev"], atol=atol, rtol=rtol)


def test_empty_batch(impl, rng):
    c = Case(batch=0)
    x = inputs(rng, c)
    y, conv, ssm = run(impl, x, c)
    assert y.shape == (0, c.nheads, c.headdim) and conv.shape == x["conv_state"].shape
    assert ssm.shape == x["ssm_state"].shape


@pytest.mark.skipif(not FFI_BUILT, reason=NO_FFI)
@pytest.mark.parametrize("case", [Case(), Case(batch=2, nheads=4, headdim=16, dstate=64, dtype=BF16)], ids=str)
def test_in_place_under_donation(case, rng):
    """Both states are aliased to their results: donated, the new states are written into the old buffers."""
    x = inputs(rng, case)
    want = oracle_step(**x)
    fn = jax.jit(lambda conv, ssm, rest: ops.mamba2_step(**rest, conv_state=conv, ssm_state=ssm, implementation="ffi"),
                 donate_argnums=(0, 1))
    rest = {k: v for k, v in x.items() if k not in ("conv_state", "ssm_state")}
    hlo = fn.lower(x["conv_state"], x["ssm_state"], rest).compile().as_text()
    assert re.search(r"input_output_alias=\{[^\n]*\{1\}: \(0, \{\}", hlo), "conv_state is not aliased in the HLO"
    pointers = [x[k].unsafe_buffer_pointer() for k in ("conv_state", "ssm_state")]
    got = fn(x["conv_state"], x["ssm_state"], rest)
    jax.block_until_ready(got)
    assert [got[1].unsafe_buffer_pointer(), got[2].unsafe_buffer_pointer()] == pointers
    check(case, "ffi", got, want, "in place")


# Mamba2Mixer: the fused step (MAMBA_JAX_FUSED_STEP=1) against the unfused ops (=0), three steps.
MIXERS = [
    dict(dtype=F32, d_model=48, d_state=8, headdim=16, ngroups=2, batch=2),
    dict(dtype=BF16, d_model=48, d_state=8, headdim=16, ngroups=2, batch=2, gated_norm=False, D_has_hdim=True,
         dt_limit=(0.01, 0.2), conv_bias=False),
    dict(dtype=BF16, d_model=768, d_state=128, headdim=64, ngroups=1, batch=3),  # mamba2-130m's layer
]


@pytest.mark.parametrize("cfg", MIXERS, ids=["f32", "bf16-nogate-Dhdim-limit-nobias", "bf16-mamba2-130m-layer"])
def test_model_fused_step_equals_unfused(cfg, monkeypatch):
    from flax import nnx
    from mamba_jax.nn import Mamba2Mixer

    cfg = dict(cfg)
    dtype, batch, d_model = cfg.pop("dtype"), cfg.pop("batch"), cfg.pop("d_model")
    mixer = Mamba2Mixer(d_model, d_conv=4, expand=2, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0), **cfg)
    xs = jnp.asarray(np.random.default_rng(0).standard_normal((3, batch, d_model)), dtype)
    assert_fused_step_equals_unfused(mixer, xs, dtype, monkeypatch)


def test_model_tensor_parallel_mixer_stays_unfused(monkeypatch):
    """A tensor-parallel mixer (tp_axis set) never takes the fused op."""
    from flax import nnx
    from mamba_jax.nn import Mamba2Mixer

    mixer = Mamba2Mixer(32, d_state=8, headdim=16, rngs=nnx.Rngs(0))
    mixer.tp_axis = "tp"
    monkeypatch.setenv("MAMBA_JAX_FUSED_STEP", "1")
    called = []
    monkeypatch.setattr(ops, "mamba2_step", lambda *a, **k: called.append(1))
    x = jnp.zeros((1, 32))
    conv, ssm = mixer.init_state(1)
    with pytest.raises(Exception, match="tp"):  # out_proj's psum over an unbound axis: the unfused path ran
        mixer.step(x, conv, ssm)
    assert not called


# Bad input
def _bad_args(**change):
    c = Case(batch=2, nheads=4, headdim=3, dstate=5, ngroups=2, width=4)
    return {**inputs(np.random.default_rng(0), c), **change}


_CD = 4 * 3 + 2 * 2 * 5  # 32 channels
BAD = [
    ("xBC-rank", dict(xBC=jnp.zeros((_CD,))), {}, ValueError, r"xBC has shape \(32,\)"),
    ("xBC-channels", dict(xBC=jnp.zeros((2, _CD - 1)), conv_state=jnp.zeros((2, _CD - 1, 3)),
                          conv_weight=jnp.zeros((_CD - 1, 4)), conv_bias=None), {}, ValueError,
     r"xBC has shape \(2, 31\), expected \[batch, nheads \* headdim \+ 2 \* ngroups \* dstate\]"),
    ("ngroups", dict(xBC=jnp.zeros((2, 12 + 30)), conv_state=jnp.zeros((2, 42, 3)), conv_weight=jnp.zeros((42, 4)),
                     conv_bias=None), {}, ValueError, "ngroups >= 1 dividing nheads = 4"),
    ("xBC-dtype", dict(xBC=jnp.zeros((2, _CD), jnp.int32)), {}, TypeError, "xBC has dtype int32"),
    ("dt-shape", dict(dt=jnp.zeros((2, 3))), {}, ValueError, r"dt has shape \(2, 3\)"),
    ("dt-dtype", dict(dt=jnp.zeros((2, 4), F16)), {}, TypeError, "dt has dtype float16"),
    ("conv_state-shape", dict(conv_state=jnp.zeros((2, _CD, 2))), {}, ValueError, r"conv_state has shape \(2, 32, 2\)"),
    ("conv_state-dtype", dict(conv_state=jnp.zeros((2, _CD, 3), BF16)), {}, TypeError, "conv_state has dtype bfloat16"),
    ("ssm_state-rank", dict(ssm_state=jnp.zeros((2, 4, 15))), {}, ValueError, r"ssm_state has shape \(2, 4, 15\)"),
    ("ssm_state-dtype", dict(ssm_state=jnp.zeros((2, 4, 3, 5), BF16)), {}, TypeError, "ssm_state has dtype bfloat16"),
    ("ssm_state-batch", dict(ssm_state=jnp.zeros((3, 4, 3, 5))), {}, ValueError, r"ssm_state has shape \(3, 4, 3, 5\)"),
    ("dstate-0", dict(ssm_state=jnp.zeros((2, 4, 3, 0))), {}, ValueError, "dstate is 0"),
    ("conv_weight-shape", dict(conv_weight=jnp.zeros((_CD + 1, 4))), {}, ValueError, r"conv_weight has shape \(33, 4\)"),
    ("conv_weight-width", dict(conv_weight=jnp.zeros((_CD, 1))), {}, ValueError, "width is 1"),
    ("conv_weight-dtype", dict(conv_weight=jnp.zeros((_CD, 4), jnp.int32)), {}, TypeError, "conv_weight has dtype"),
    ("conv_bias-shape", dict(conv_bias=jnp.zeros((_CD - 1,))), {}, ValueError, r"conv_bias has shape \(31,\)"),
    ("A-shape", dict(A=-jnp.ones(3)), {}, ValueError, r"A has shape \(3,\)"),
    ("D-shape", dict(D=jnp.zeros((4, 4))), {}, ValueError, r"D has shape \(4, 4\)"),
    ("dt_bias-shape", dict(dt_bias=jnp.zeros((4, 1))), {}, ValueError, r"dt_bias has shape \(4, 1\)"),
    ("z-shape", dict(z=jnp.zeros((2, 4))), {}, ValueError, r"z has shape \(2, 4\)"),
    ("z-dtype", dict(z=jnp.zeros((2, 4, 3), BF16)), {}, TypeError, "z has dtype bfloat16"),
    ("dt_limit", {}, dict(dt_limit=(1.0,)), ValueError, "dt_limit"),
    ("state_indices-dtype", {}, dict(state_indices=np.zeros(2, np.int64)), TypeError, "state_indices has dtype int64"),
    ("implementation", {}, dict(implementation="metal"), ValueError, "implementation must be"),
]


@pytest.mark.parametrize("change,options,exc,msg", [pytest.param(*b[1:], id=b[0]) for b in BAD])
def test_bad_input(change, options, exc, msg):
    with pytest.raises(exc, match=msg) as err:
        ops.mamba2_step(**_bad_args(**change), **options)
    assert str(err.value).startswith("mamba2_step: ")


def _raw(xBC_channels=_CD, ws=None, state_indices=None, rows=2):
    """A direct call of the CPU handler, bypassing the Python checks."""
    z = lambda *s, dtype=F32: jnp.zeros(s, dtype)
    e = z(0)
    args = [z(2, xBC_channels), z(2, 4), z(rows, xBC_channels, 3), z(rows, 4, 3, 5), z(xBC_channels, 4), e,
            -jnp.ones(4), e, e, e, z(0, dtype=jnp.int32) if state_indices is None else state_indices]
    outs = (jax.ShapeDtypeStruct((2, 4, 3), F32), jax.ShapeDtypeStruct((rows, xBC_channels, 3), F32),
            jax.ShapeDtypeStruct((rows, 4, 3, 5), F32), jax.ShapeDtypeStruct(ws or (2, xBC_channels), F32))
    return args, outs


RAW = [
    ("channels", _raw(xBC_channels=_CD + 1), r"xBC has shape \[2, 33\]: its last axis must be nheads \* headdim"),
    ("workspace", _raw(ws=(2, _CD - 1)), r"workspace has shape \[2, 31\], expected \[2, 32\]"),
    ("pool-not-aliased", _raw(state_indices=jnp.asarray([2, 0], jnp.int32), rows=3),
     "with state_indices the new conv_state must alias conv_state"),
]


@pytest.mark.skipif(not ops.cpu_available("mamba2_step"), reason="the mamba2_step CPU kernel is not built")
@pytest.mark.parametrize("call,pattern", [pytest.param(r[1], r[2], id=r[0]) for r in RAW] + [
    pytest.param(_raw(), None, id="consistent")])
def test_cpp_handler_checks(call, pattern):
    args, outs = call
    cpu = jax.devices("cpu")[0]
    args = [jax.device_put(a, cpu) for a in args]
    f = jax.jit(lambda *a: jax.ffi.ffi_call("mamba_jax_mamba2_step", outs)(*a, dt_min=np.float32(0),
                                                                          dt_max=np.float32(np.inf)))
    if pattern is None:
        assert all(np.all(np.isfinite(np.asarray(o))) for o in f(*args))
        return
    with pytest.raises(jax.errors.JaxRuntimeError, match=pattern):
        jax.block_until_ready(f(*args))
