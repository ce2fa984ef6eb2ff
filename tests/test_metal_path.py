"""The Metal path: what Apple's jax-metal would be asked to compile, checked against the allow-list in
tests/metal_allowlist.py, and the chunked selective scan (the "xla" form that GPUs and Metal
run) against the float64 oracle.

Lowering checks: every op, its gradient, the model (forward, prefill, step) and `generate` are
lowered with implementation="xla" for the "METAL" platform (jax lowers for a platform without its
plugin) and every StableHLO operation and element type is checked; implementation=None is lowered for
"METAL" too (its lax.platform_dependent default branch, where `case` is tolerated). Nothing here runs
on a Mac.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import oracle
from metal_allowlist import check_stablehlo, format_violations
from conftest import (ConvCase, ScanCase, assert_close, conv_inputs, conv_update_inputs, rows, scan_inputs,
                      update_inputs)
from mamba_jax import ops
from mamba_jax.ops.selective_scan.xla import selective_scan_chunked

F32, BF16, F16 = jnp.float32, jnp.bfloat16, jnp.float16
METAL = ("METAL",)


def lower(fn, *args, platforms=METAL) -> str:
    return jax.jit(fn).trace(*args).lower(lowering_platforms=platforms).as_text()


def assert_metal_safe(text: str, what: str, allow_case: bool = False):
    v = check_stablehlo(text, allow_case=allow_case)
    assert not v, f"{what}: {len(v)} allow-list violations\n{format_violations(v, text)}"


def grad_of(fn, n_args: int):
    """d(sum of every float output)/d(every float argument), as one function of the same arguments."""
    def loss(*a):
        return sum(jnp.sum(o.astype(F32)) for o in jax.tree.leaves(fn(*a)))

    def g(*a):
        nums = tuple(i for i, x in enumerate(a) if x is not None and jnp.issubdtype(x.dtype, jnp.floating))
        return jax.grad(loss, argnums=nums)(*a)

    return g


# ------------------------------------------------------------------------------ the checker itself
@pytest.mark.parametrize("name,fn,expected", [
    ("argmax", lambda x: jnp.argmax(x, axis=1), "variadic reduce"),
    ("associative_scan", lambda x: jax.lax.associative_scan(jnp.add, x, axis=1), "interior padding"),
    ("cumsum", lambda x: jnp.cumsum(x, axis=1), "stablehlo.reduce_window"),
    ("sort", lambda x: jnp.sort(x, axis=1), "stablehlo.sort"),
    ("random", lambda x: jax.random.uniform(jax.random.key(0), x.shape), "ui32"),
    ("cond", lambda x: jax.lax.cond(x[0, 0] > 0, jnp.sin, jnp.cos, x), "stablehlo.case"),
])
def test_checker_rejects(name, fn, expected):
    """Each known-bad construct is caught, with a message naming it (no vacuous passes)."""
    text = lower(fn, jnp.ones((4, 16), F32))
    msgs = [str(v) for v in check_stablehlo(text)]
    assert any(expected in m for m in msgs), f"{name}: expected a violation mentioning {expected!r}, got {msgs}"


def test_checker_rejects_custom_call_and_f64():
    if not ops.cpu_available():
        pytest.skip("the C++ CPU kernels are not built here (no custom_call to lower)")
    x = jnp.ones((1, 8, 16), F32)
    w = jnp.ones((16, 4), F32)
    text = lower(lambda x: ops.causal_conv1d(x, w, implementation="ffi"), x, platforms=("cpu",))
    assert any("custom_call" in str(v) for v in check_stablehlo(text))
    f64_text = 'func.func public @main(%arg0: tensor<4xf64>) -> tensor<4xf64> {\n  return %arg0 : tensor<4xf64>\n}'
    assert any("f64" in str(v) for v in check_stablehlo(f64_text))


def test_checker_accepts_clean_math():
    text = lower(lambda x: jnp.sum(jnp.exp(x) * jnp.tanh(x), axis=1), jnp.ones((4, 16), F32))
    assert_metal_safe(text, "exp/tanh/sum")


# ------------------------------------------------------------------------------ every op, lowered
def _scan_full(dtype, rng, impl):
    inp = scan_inputs(rng, ScanCase(batch=2, seqlen=37, dim=40, dstate=16, ngroups=2, dtype=dtype, init=True))
    args = tuple(inp[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"))
    return (lambda *a: ops.selective_scan(*a[:8], delta_softplus=True, initial_state=a[8],
                                          return_last_state=True, implementation=impl)), args


def _scan_plain(dtype, rng, impl):
    inp = scan_inputs(rng, ScanCase(batch=1, seqlen=20, dim=24, dstate=1, ngroups=0, dtype=dtype,
                                    D=False, z=False, bias=False, softplus=False))
    args = tuple(inp[k] for k in ("u", "delta", "A", "B", "C"))
    return (lambda *a: ops.selective_scan(*a, implementation=impl)), args


def _update(dtype, rng, impl):
    inp = update_inputs(rng, ScanCase(batch=2, seqlen=0, dim=40, dstate=16, ngroups=2, dtype=dtype))
    args = tuple(inp[k] for k in ("state", "x", "dt", "A", "B", "C", "D", "z", "dt_bias"))
    return (lambda *a: ops.selective_state_update(*a, dt_softplus=True, implementation=impl)), args


def _conv(dtype, rng, impl):
    inp = conv_inputs(rng, ConvCase(batch=2, seqlen=37, dim=40, dtype=dtype, init=True))
    args = tuple(inp[k] for k in ("x", "weight", "bias", "initial_state"))
    return (lambda *a: ops.causal_conv1d(*a[:3], activation="silu", initial_state=a[3],
                                         return_final_state=True, implementation=impl)), args


def _conv_update(dtype, rng, impl):
    inp = conv_update_inputs(rng, ConvCase(batch=2, dim=40, dtype=dtype))
    args = tuple(inp[k] for k in ("x", "conv_state", "weight", "bias"))
    return (lambda *a: ops.causal_conv1d_update(*a, activation="silu", implementation=impl)), args


OPS = {"selective_scan": _scan_full, "selective_scan-plain": _scan_plain,
       "selective_state_update": _update, "causal_conv1d": _conv, "causal_conv1d_update": _conv_update}


def _build(op, dtype, rng, impl):
    return OPS[op](dtype, rng, impl)


@pytest.mark.parametrize("mode", ["fwd", "grad"])
@pytest.mark.parametrize("dtype", [F32, BF16, F16], ids=["f32", "bf16", "f16"])
@pytest.mark.parametrize("op", list(OPS))
def test_op_xla_is_metal_safe(op, dtype, mode, rng):
    """implementation="xla": no custom_call, no case, only allowed ops and element types."""
    fn, args = _build(op, dtype, rng, "xla")
    if mode == "grad":
        fn = grad_of(fn, len(args))
    assert_metal_safe(lower(fn, *args), f"{op} {mode} implementation='xla'")


@pytest.mark.parametrize("mode", ["fwd", "grad"])
@pytest.mark.parametrize("op", list(OPS))
def test_op_default_branch_is_metal_safe(op, mode, rng):
    """implementation=None lowered for METAL takes lax.platform_dependent's default (pure-JAX)
    branch: no custom_call; `case` from the dispatch itself is tolerated (see CONDITIONAL_OPS)."""
    fn, args = _build(op, BF16, rng, None)
    if mode == "grad":
        fn = grad_of(fn, len(args))
    assert_metal_safe(lower(fn, *args), f"{op} {mode} implementation=None on METAL", allow_case=True)


def test_default_branch_exists_next_to_the_kernel(rng):
    """Lowered for CPU and METAL at once, implementation=None holds both branches: the FFI kernel
    (CPU) and the pure-JAX scan (the default branch, a while loop)."""
    if not ops.cpu_available():
        pytest.skip("the C++ CPU kernels are not built here")
    fn, args = _build("selective_scan", F32, rng, None)
    text = lower(fn, *args, platforms=("cpu", "METAL"))
    assert "mamba_jax_selective_scan" in text and "stablehlo.while" in text
    metal_only = lower(fn, *args)
    assert "custom_call" not in metal_only and "stablehlo.while" in metal_only


def test_xla_lowers_the_same_for_cpu(rng):
    """The "xla" program does not depend on the lowering platform: CPU and METAL texts agree."""
    fn, args = _build("selective_scan", BF16, rng, "xla")
    assert lower(fn, *args, platforms=("cpu",)) == lower(fn, *args)


@pytest.mark.parametrize("mode", ["fwd", "grad"])
def test_chunked_form_is_metal_safe(mode, rng):
    """The multi-chunk form (what "xla" runs off CPU) with a ragged last chunk, and its gradient."""
    inp = scan_inputs(rng, ScanCase(batch=2, seqlen=113, dim=40, dstate=16, ngroups=2, dtype=BF16, init=True))
    args = tuple(inp[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"))
    fn = lambda *a: selective_scan_chunked(*a[:8], delta_softplus=True, initial_state=a[8], chunk_size=16)
    if mode == "grad":
        fn = grad_of(fn, len(args))
    assert_metal_safe(lower(fn, *args), f"selective_scan_chunked {mode}")


# ------------------------------------------------------------------------------ model and generate
def _nn():
    # The model and generate ship with the package: an import error must fail these checks, not skip them.
    return importlib.import_module("mamba_jax.nn")


def _tiny_model(dtype=F32, vocab=97, d_model=32):
    nn = _nn()
    from flax import nnx
    cfg = nn.MambaConfig(vocab_size=vocab, d_model=d_model, n_layer=2, d_state=16)
    return nn.MambaLM(cfg, dtype=dtype, implementation="xla", rngs=nnx.Rngs(0))


@pytest.mark.parametrize("dtype,impl", [(F32, "xla"), (BF16, "xla"), (F32, None)],
                         ids=["f32-xla", "bf16-xla", "f32-default"])
def test_model_is_metal_safe(dtype, impl):
    """implementation="xla" strictly; implementation=None (each op's platform dispatch) with `case`."""
    from flax import nnx
    model = _tiny_model(dtype)
    model.implementation = impl
    graph, state = nnx.split(model)
    ids = jnp.asarray(np.arange(2 * 19).reshape(2, 19) % 97, jnp.int32)
    mask = jnp.arange(19)[None, :] >= jnp.array([[0], [5]])  # a left-padded ragged batch
    cache = model.init_cache(2)
    cases = {
        "__call__": (lambda st, ids: nnx.merge(graph, st)(ids), (state, ids)),
        "prefill": (lambda st, ids, m: nnx.merge(graph, st).prefill(ids, m), (state, ids, mask)),
        "step": (lambda st, tok, c: nnx.merge(graph, st).step(tok, c), (state, ids[:, 0], cache)),
    }
    for name, (fn, args) in cases.items():
        assert_metal_safe(lower(fn, *args), f"MambaLM.{name} ({jnp.dtype(dtype).name}, implementation={impl!r})",
                          allow_case=impl is None)


def test_model_gradient_is_metal_safe():
    """A training step's gradient (cross-entropy of next-token logits) on the Metal path."""
    from flax import nnx
    model = _tiny_model()
    graph, state = nnx.split(model)
    ids = jnp.asarray(np.arange(2 * 12).reshape(2, 12) % 97, jnp.int32)

    def loss(st, ids):
        logits = nnx.merge(graph, st)(ids)[:, :-1]
        tgt = jax.nn.one_hot(ids[:, 1:], logits.shape[-1], dtype=F32)  # no gather on the labels
        return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - jnp.sum(logits * tgt, axis=-1))

    assert_metal_safe(lower(jax.grad(loss), state, ids), "grad of the LM loss")


def _generate():
    return importlib.import_module("mamba_jax.generate").generate


@pytest.mark.parametrize("sampling", [
    dict(temperature=0.0),
    dict(temperature=0.8, seed=3),
    dict(temperature=0.8, top_k=5, top_p=0.9, seed=3),
], ids=["greedy", "sample", "sample-top_k-top_p"])
def test_generate_is_metal_safe(sampling, tmp_path):
    """Every program that generate() compiles (prefill, the decode loop, and any helper), dumped by
    jax while it runs a tiny model with implementation="xla", passes the allow-list."""
    generate = _generate()
    model = _tiny_model(vocab=89, d_model=24)  # sizes no other test uses: nothing comes from a cache
    jax.config.update("jax_include_debug_info_in_dumps", False)
    jax.config.update("jax_dump_ir_to", str(tmp_path))
    try:
        out = generate(model, [[1, 2, 3], [4, 5]], max_new_tokens=6, **sampling)
    finally:
        jax.config.update("jax_dump_ir_to", "")
        jax.config.update("jax_include_debug_info_in_dumps", True)
    assert len(out) == 2
    texts = {p.name: p.read_text() for p in sorted(tmp_path.glob("*.mlir"))}
    assert len(texts) >= 2 and any("stablehlo.while" in t for t in texts.values()), \
        f"expected generate's prefill and decode loop among the dumped modules, got {list(texts)}"
    bad = {name: check_stablehlo(t) for name, t in texts.items()}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, "generate() compiles programs outside the Metal allow-list " \
        "(mamba_jax/sampling.py has int32-only argmax, Gumbel noise, top-k and top-p masks):\n" + \
        "\n".join(f"{k}: {sorted({v.what for v in vs})}\n{format_violations(vs, texts[k], 6)}" for k, vs in bad.items())
