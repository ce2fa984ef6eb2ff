"""add_rms_norm against the float64 oracle: every implementation, odd and real feature counts, leading
shapes, every supported dtype combination, jit and eager, vmap and gradients; its pure-JAX path against
the unfused model code (residual add, then RMSNorm) bit for bit; the model's decode step calling it once
per layer."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

import oracle
from conftest import assert_close, ffi_available, requires_ffi, tolerance
from mamba_jax.nn import Mamba2Config, MambaConfig, MambaLM
from mamba_jax.nn.norm import RMSNorm
from mamba_jax.ops import add_rms_norm

F32, BF16, F16 = jnp.float32, jnp.bfloat16, jnp.float16
EPS = 1e-5
# (h dtype, y dtype): the residual stream in float32 (residual_in_fp32) or in the activation dtype.
COMBOS = [(F32, BF16), (F32, F16), (F32, F32), (BF16, BF16), (F16, F16)]
LEADS = [(), (1,), (3,), (2, 5)]
FEATURES = [7, 33, 768, 2560, 4097]
SHAPES = [lead + (f,) for lead in LEADS for f in FEATURES]


def _tag(dtype) -> str:
    return {F32: "f32", BF16: "bf16", F16: "f16"}[dtype]


def _coarsest(*dtypes):
    """The dtype whose tolerance applies to a value that went through all of `dtypes`."""
    return max(dtypes, key=lambda d: tolerance(d, "out")[0])


def inputs(rng, shape, h_dtype, y_dtype, scale_dtype=F32):
    return dict(h=jnp.asarray(rng.normal(0.0, 2.0, shape), h_dtype),
                y=jnp.asarray(rng.normal(0.0, 1.0, shape), y_dtype),
                scale=jnp.asarray(rng.normal(1.0, 0.3, shape[-1:]), scale_dtype))


def check(impl, args, h_new, x, out_dtype, what=""):
    h_dtype, y_dtype = args["h"].dtype, args["y"].dtype
    s_ref, x_ref = oracle.add_rms_norm(**args, eps=EPS, residual_dtype=h_dtype)
    assert h_new.dtype == h_dtype and x.dtype == out_dtype
    assert h_new.shape == x.shape == args["y"].shape
    assert_close(h_new, s_ref, h_dtype, "out", f"{impl}{what} h_new")
    assert_close(x, x_ref, _coarsest(h_dtype, out_dtype), "out", f"{impl}{what} x")


def run(impl, args, jit=True, **options):
    fn = functools.partial(add_rms_norm, eps=EPS, implementation=impl, **options)
    return (jax.jit(fn) if jit else fn)(**args)


@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: f"h{_tag(c[0])}-y{_tag(c[1])}")
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)) if len(s) > 1 else f"F{s[0]}")
def test_matches_oracle(shape, combo, impl, rng):
    args = inputs(rng, shape, *combo)
    check(impl, args, *run(impl, args), combo[1])


@pytest.mark.parametrize("scale_dtype, out_dtype", [(BF16, None), (BF16, F32), (F32, F32), (F16, None)],
                         ids=["scale-bf16", "scale-bf16-out-f32", "out-f32", "scale-f16-as-f32"])
@pytest.mark.parametrize("combo", [(F32, BF16), (BF16, BF16)], ids=["hf32", "hbf16"])
def test_scale_and_out_dtypes(combo, scale_dtype, out_dtype, impl, rng):
    args = inputs(rng, (4, 768), *combo, scale_dtype=scale_dtype)
    check(impl, args, *run(impl, args, out_dtype=out_dtype), out_dtype or combo[1])


@pytest.mark.parametrize("combo", [(F32, BF16), (F16, F16)], ids=["hf32-ybf16", "hf16-yf16"])
def test_eager(combo, impl, rng):
    args = inputs(rng, (2, 33), *combo)
    check(impl, args, *run(impl, args, jit=False), combo[1])


def test_eps_and_zero_rows(impl, rng):
    """eps reaches the kernel (a row of zeros normalises to zeros, a tiny row by sqrt(eps)); a batch
    of 0 rows gives empty results."""
    args = inputs(rng, (3, 40), F32, F32)
    args["h"] = args["h"].at[0].set(0.0).at[1].set(1e-4)
    args["y"] = args["y"].at[0].set(0.0).at[1].set(0.0)
    h_new, x = run(impl, args)
    s_ref, x_ref = oracle.add_rms_norm(**args, eps=EPS, residual_dtype=F32)
    np.testing.assert_array_equal(np.asarray(x[0]), np.zeros(40, np.float32))
    assert_close(x, x_ref, F32, "out", f"{impl} x")
    empty = inputs(rng, (0, 40), F32, BF16)
    h_new, x = run(impl, empty)
    assert h_new.shape == x.shape == (0, 40) and x.dtype == BF16


@pytest.mark.parametrize("batched_scale", [False, True], ids=["acts", "acts+scale"])
@pytest.mark.parametrize("combo", [(F32, BF16), (BF16, BF16)], ids=["hf32", "hbf16"])
def test_vmap(combo, batched_scale, impl, rng):
    draws = [inputs(rng, (2, 33), *combo) for _ in range(3)]
    names = ("h", "y", "scale")
    unbatched = () if batched_scale else ("scale",)
    stacked = [draws[0][k] if k in unbatched else jnp.stack([d[k] for d in draws]) for k in names]
    in_axes = tuple(None if k in unbatched else 0 for k in names)
    g = functools.partial(add_rms_norm, eps=EPS, implementation=impl)
    h_new, x = jax.jit(jax.vmap(g, in_axes=in_axes))(*stacked)
    for i, d in enumerate(draws):
        one = dict(d, scale=draws[0]["scale"] if not batched_scale else d["scale"])
        check(impl, one, h_new[i], x[i], combo[1], f" vmap[{i}]")


def test_check_grads(impl, rng):
    rtol, atol = tolerance(F32, "check_grads")
    args = inputs(rng, (2, 9), F32, F32)
    g = functools.partial(add_rms_norm, eps=EPS, implementation=impl)
    check_grads(jax.jit(g), (args["h"], args["y"], args["scale"]), order=1, modes=["rev"], atol=atol, rtol=rtol)


def test_grad_matches_oracle(impl, rng):
    args = inputs(rng, (2, 9), F32, F32)
    gh = rng.normal(size=(2, 9))
    gx = rng.normal(size=(2, 9))

    def loss(h, y, scale):
        h_new, x = add_rms_norm(h, y, scale, eps=EPS, implementation=impl)
        return jnp.sum(h_new * gh) + jnp.sum(x * gx)

    def loss_ref(**kw):
        s, x = oracle.add_rms_norm(**kw, eps=EPS, residual_dtype=np.float64)
        return np.sum(s * gh) + np.sum(x * gx)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(args["h"], args["y"], args["scale"])
    ref = oracle.numerical_grad(loss_ref, args)
    for k, g in zip(("h", "y", "scale"), grads):
        assert_close(g, ref[k], F32, "grad", f"{impl} d/d{k}")


@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: f"h{_tag(c[0])}-y{_tag(c[1])}")
@pytest.mark.parametrize("param_dtype", [F32, BF16], ids=["scale-f32", "scale-bf16"])
def test_xla_path_is_the_unfused_model_code(combo, param_dtype, rng):
    """The pure-JAX path gives exactly what the model's residual add and next RMSNorm give."""
    h_dtype, y_dtype = combo
    norm = RMSNorm(2560, eps=EPS, dtype=y_dtype, param_dtype=param_dtype)
    norm.scale[...] = jnp.asarray(rng.normal(1.0, 0.3, 2560), param_dtype)
    args = inputs(rng, (5, 2560), h_dtype, y_dtype)

    @jax.jit
    def unfused(h, y):
        h = h.astype(h_dtype) + y.astype(h_dtype)
        return h, norm(h)

    @jax.jit
    def fused(h, y):
        return add_rms_norm(h, y, norm.scale[...], eps=EPS, implementation="xla")

    for a, b in zip(fused(args["h"], args["y"]), unfused(args["h"], args["y"])):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a.astype(F32)), np.asarray(b.astype(F32)))


def test_default_implementation(rng):
    """implementation=None runs the FFI kernel where one is built for this backend, else pure JAX."""
    picked = "ffi" if ffi_available() else "xla"
    args = inputs(rng, (4, 768), F32, BF16)
    for a, b in zip(run(None, args), run(picked, args)):
        np.testing.assert_array_equal(np.asarray(a.astype(F32)), np.asarray(b.astype(F32)))


MODEL_CFGS = {
    "mamba1": MambaConfig(vocab_size=50, d_model=40, n_layer=3, d_state=8),
    "mamba1-residual-bf16": MambaConfig(vocab_size=50, d_model=40, n_layer=3, d_state=8, residual_in_fp32=False),
    "mamba2": Mamba2Config(vocab_size=50, d_model=64, n_layer=3, d_state=16, headdim=16, ngroups=2),
}


@requires_ffi
@pytest.mark.parametrize("name", list(MODEL_CFGS))
def test_model_step_fuses_each_residual_add_with_the_next_norm(name):
    """MambaLM.step runs one add_rms_norm per layer (each block's add with the next block's norm, the
    last one's with norm_f) and gives the logits of its pure-JAX ("xla") step."""
    cfg = MODEL_CFGS[name]
    models = {impl: MambaLM(cfg, dtype=BF16, implementation=impl, rngs=nnx.Rngs(0)) for impl in ("ffi", "xla")}
    ids = jnp.asarray(np.random.default_rng(1).integers(0, 50, (2, 4)), jnp.int32)
    step = nnx.jit(lambda m, t, c: m.step(t, c))
    hlo = jax.jit(lambda t, c: models["ffi"].step(t, c)).lower(ids[:, 0], models["ffi"].init_cache(2)).as_text()
    assert hlo.count("@mamba_jax_add_rms_norm(") == cfg.n_layer
    logits = {}
    for impl, m in models.items():
        _, cache = m.prefill(ids[:, :3])
        logits[impl], _ = step(m, ids[:, 3], cache)
    ref = np.asarray(logits["xla"], np.float64)
    # bfloat16 activations: the kernels' sums round differently from XLA's, a few bf16 ulps per layer.
    assert np.max(np.abs(np.asarray(logits["ffi"]) - ref)) <= 0.05 * np.max(np.abs(ref))
