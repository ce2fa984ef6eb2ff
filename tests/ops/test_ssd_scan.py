"""ssd_scan (Mamba-2) against the float64 oracle (tests/oracle_ssd.py): every implementation ("xla" the
chunked pure-JAX path, "ref" the token-by-token reference, "ffi" the kernel where one is built), odd
sizes, chunk sizes, options, dtypes, jit, eager, vmap, gradients, packed sequences (seq_idx), the scan
against repeated ssd_state_update steps, bad input and the Metal allow-list."""

from __future__ import annotations

import dataclasses
import functools
import math
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import oracle
import oracle_ssd
from conftest import assert_close, rows, tolerance
from mamba_jax.ops import _ffi, ssd_scan, ssd_state_update
from mamba_jax.ops.ssd_scan import ssd_scan_ref

F32, BF16, F16 = jnp.float32, jnp.bfloat16, jnp.float16
_TAGS = {F32: "f32", BF16: "bf16", F16: "f16"}


# Implementations: the kernel is tested where `op` is built for this backend.
def ffi_built(op: str) -> bool:
    backend = jax.default_backend()
    return (backend == "cpu" and _ffi.cpu_available(op)) or (backend == "gpu" and _ffi.cuda_available(op))


def implementations(op: str, with_ref: bool = True):
    reason = f"no {op} FFI kernel built for the '{jax.default_backend()}' backend"
    return ["xla"] + (["ref"] if with_ref else []) + [pytest.param("ffi", marks=pytest.mark.skipif(not ffi_built(op), reason=reason))]


IMPLS = implementations("ssd_scan")


# Cases: a base case plus rows that each change one field; ids like B2-L63-H4-P16-N16-G1-C16-f32-Dh+z+bias+softplus.
@dataclasses.dataclass(frozen=True)
class SsdCase:
    """ssd_scan sizes and options (seqlen 0: ssd_state_update, a single step, no L or C in the id)."""

    batch: int = 2
    seqlen: int = 63
    nheads: int = 4
    headdim: int = 16
    dstate: int = 16
    ngroups: int = 1
    chunk: int = 16
    dtype: type = F32
    D: str | None = "head"  # "head": D [nheads]; "channel": D [nheads, headdim]; None
    z: bool = True
    bias: bool = True
    softplus: bool = True
    limit: bool = False  # dt_limit = (0.01, 0.05) instead of (0, inf)
    init: bool = False

    @property
    def id(self) -> str:
        opts = ([f"D{self.D[0]}"] if self.D else []) + [n for n in ("z", "bias", "softplus", "limit", "init")
                                                         if getattr(self, n)]
        seq = f"-L{self.seqlen}" if self.seqlen else ""
        chunk = f"-C{self.chunk}" if self.seqlen else ""
        return (f"B{self.batch}{seq}-H{self.nheads}-P{self.headdim}-N{self.dstate}-G{self.ngroups}{chunk}-"
                f"{_TAGS[self.dtype]}-" + ("+".join(opts) if opts else "plain"))

    @property
    def dt_limit(self):
        return (0.01, 0.05) if self.limit else (0.0, math.inf)

    def options(self) -> dict:
        return {"dt_softplus": self.softplus, "dt_limit": self.dt_limit}


def case_rng(case, salt: str = "") -> np.random.Generator:
    """Inputs depend on the case (not the implementation), so every implementation sees the same ones."""
    return np.random.default_rng(zlib.crc32((case.id + salt).encode()))


def scan_inputs(rng, case: SsdCase) -> dict:
    """Keyword arguments of ssd_scan, with Mamba-2's initialisation: A = -[1, 16], dt a step in
    [1e-3, 1e-1] (softplus of a noisy inverse-softplus bias)."""
    b, l, h, p, n, g = case.batch, case.seqlen, case.nheads, case.headdim, case.dstate, case.ngroups
    act = lambda shape, scale=1.0: jnp.asarray(rng.normal(0.0, scale, shape), case.dtype)
    if case.softplus:
        raw = act((b, l, h)) if case.bias else jnp.asarray(rng.normal(-4.0, 1.0, (b, l, h)), case.dtype)
        bias = np.log(np.expm1(np.exp(rng.uniform(np.log(1e-3), np.log(1e-1), h))))
    else:
        # Some dt + dt_bias < 0: the default dt_limit (0, inf) clips those steps to 0.
        raw = jnp.asarray(rng.uniform(-0.06, 0.1, (b, l, h)), case.dtype)
        bias = rng.uniform(0.0, 0.05, h)
    D = {"head": (h,), "channel": (h, p), None: None}[case.D]
    return {
        "x": act((b, l, h, p)),
        "dt": raw,
        "A": jnp.asarray(-rng.uniform(1.0, 16.0, h), F32),
        "B": act((b, l, g, n)),
        "C": act((b, l, g, n)),
        "D": None if D is None else jnp.asarray(rng.normal(0.0, 1.0, D), F32),
        "z": act((b, l, h, p)) if case.z else None,
        "dt_bias": jnp.asarray(bias, F32) if case.bias else None,
        "initial_state": jnp.asarray(rng.normal(0.0, 0.5, (b, h, p, n)), F32) if case.init else None,
    }


def run(impl, inputs, case, jit=True, **extra):
    """(y, final_state) of one implementation, jitted (options static)."""
    kw = {**case.options(), "chunk_size": case.chunk, "return_final_state": True, **extra}
    if impl == "ref":
        fn = functools.partial(ssd_scan_ref, **kw)
    else:
        fn = functools.partial(ssd_scan, implementation=impl, **kw)
    return (jax.jit(fn) if jit else fn)(**inputs)


_ORACLE_CACHE: dict = {}


def oracle_run(case, inputs, key=None, **extra):
    """The oracle's (y, final_state), computed once per case (or `key`) for every implementation."""
    key = (case.id, key)
    if key not in _ORACLE_CACHE:
        _ORACLE_CACHE[key] = oracle_ssd.ssd_scan(**inputs, **case.options(), **extra)
    return _ORACLE_CACHE[key]


def oracle_magnitude(case, inputs):
    """Per element of y, the sum of the absolute values of the terms that make it: the oracle on |x|, |B|,
    |C|, |D| and |initial_state| (the decays are positive), times |silu(z)|."""
    key = (case.id, "magnitude")
    if key not in _ORACLE_CACHE:
        ab = lambda v: None if v is None else np.abs(np.asarray(v, np.float64))
        kw = {**inputs, **{k: ab(inputs[k]) for k in ("x", "B", "C", "D", "initial_state")}, "z": None}
        y_abs, _ = oracle_ssd.ssd_scan(**kw, **case.options())
        if inputs["z"] is not None:
            y_abs = y_abs * np.abs(oracle.silu(np.asarray(inputs["z"], np.float64)))
        _ORACLE_CACHE[key] = y_abs
    return _ORACLE_CACHE[key]


def check(case, impl, y, final, y_ref, final_ref, what="", y_magnitude=None):
    assert y.dtype == case.dtype and final.dtype == F32
    assert_close(y, y_ref, case.dtype, "out", f"{impl} {what}y", magnitude=y_magnitude)
    assert_close(final, final_ref, case.dtype, "state", f"{impl} {what}final_state")


BASE = SsdCase()  # B2-L63-H4-P16-N16-G1-C16-f32, D per head, z, dt_bias, softplus
CASES = rows(
    BASE,
    {},
    # seqlen, and chunk sizes: seqlen not a multiple of the chunk, one chunk, tiny chunks, the default
    {"seqlen": 1}, {"seqlen": 2}, {"seqlen": 113}, {"seqlen": 113, "chunk": 32},
    {"chunk": 64}, {"chunk": 1, "seqlen": 9}, {"chunk": 7}, {"chunk": 256, "seqlen": 113},
    # heads, headdim, dstate up to the limit, groups
    {"nheads": 1}, {"nheads": 3}, {"nheads": 80, "seqlen": 17, "ngroups": 8},
    {"headdim": 64}, {"dstate": 128}, {"dstate": 256, "seqlen": 37},
    {"ngroups": 2}, {"nheads": 8, "ngroups": 8}, {"nheads": 6, "ngroups": 2},
    # D per channel / none; each option off in turn, all off; dt_limit; initial state
    {"D": "channel"}, {"D": None}, {"z": False}, {"bias": False}, {"softplus": False},
    {"D": None, "z": False, "bias": False, "softplus": False}, {"limit": True},
    {"limit": True, "softplus": False}, {"init": True}, {"batch": 1}, {"batch": 3, "init": True, "ngroups": 2},
    # every activation dtype, alone and with the other features
    {"dtype": BF16}, {"dtype": F16},
    {"dtype": BF16, "seqlen": 113, "ngroups": 2, "init": True, "D": "channel"},
    {"dtype": F16, "seqlen": 2, "headdim": 64, "dstate": 64, "init": True},
    {"dtype": BF16, "seqlen": 1, "z": False, "limit": True},
    {"dtype": F16, "softplus": False, "bias": False, "nheads": 3},
)
LONG = rows(
    SsdCase(batch=1, seqlen=2048, nheads=2, chunk=256),
    {}, {"dtype": BF16, "ngroups": 2, "init": True, "chunk": 64},
)


# The token-loop reference has no chunks: it runs on the rows that change its own math.
REF_CASES = rows(
    BASE,
    {}, {"seqlen": 1}, {"nheads": 6, "ngroups": 2}, {"D": "channel"},
    {"D": None, "z": False, "bias": False, "softplus": False}, {"limit": True}, {"init": True},
    {"dtype": F16, "dstate": 128},
) + LONG[1:]


@pytest.mark.parametrize("impl", [p for p in IMPLS if p != "ref"])
@pytest.mark.parametrize("case", CASES + LONG)
def test_matches_oracle(case, impl):
    inputs = scan_inputs(case_rng(case), case)
    y, final = run(impl, inputs, case)
    # The pure-JAX path takes each decay exp(cs_t - cs_s) from prefix sums cs of dt A over a chunk (up to
    # |cs| ~ 100 here), so every term carries a relative error ~|cs| x 6e-8 (1e-5 in float32 at chunk 256):
    # its y error scales with the sum of the terms' absolute values, not with y.
    mag = oracle_magnitude(case, inputs) if impl == "xla" else None
    check(case, impl, y, final, *oracle_run(case, inputs), y_magnitude=mag)


@pytest.mark.parametrize("case", REF_CASES)
def test_reference_matches_oracle(case):
    inputs = scan_inputs(case_rng(case), case)
    y, final = run("ref", inputs, case)
    check(case, "ref", y, final, *oracle_run(case, inputs))


# Eager: the reference and the kernel (the chunked path's ops would each compile on their own).
@pytest.mark.parametrize("impl", [p for p in IMPLS if p != "xla"])
def test_eager_and_y_only(impl):
    """Without jit, and without return_final_state only y comes back (the same values)."""
    case = dataclasses.replace(BASE, dtype=BF16, ngroups=2, init=True)
    inputs = scan_inputs(case_rng(case), case)
    y, final = run(impl, inputs, case, jit=False)
    check(case, impl, y, final, *oracle_run(case, inputs))
    y_only = run(impl, inputs, case, jit=False, return_final_state=False)
    np.testing.assert_array_equal(np.asarray(y_only, np.float32), np.asarray(y, np.float32))


def test_chunk_size_only_changes_rounding():
    """The chunked path with different chunk sizes agrees with itself to float32 rounding."""
    case = dataclasses.replace(BASE, seqlen=50, init=True)
    inputs = scan_inputs(case_rng(case), case)
    outs = [run("xla", inputs, dataclasses.replace(case, chunk=c)) for c in (1, 7, 512)]
    for y, final in outs[1:]:
        np.testing.assert_allclose(np.asarray(y), np.asarray(outs[0][0]), rtol=2e-5, atol=2e-5)
        np.testing.assert_allclose(np.asarray(final), np.asarray(outs[0][1]), rtol=2e-5, atol=2e-5)


# Packed sequences: seq_idx restarts the state; one row of several prompts == each prompt alone.
PACK_CASE = SsdCase(batch=1, seqlen=63, nheads=4, ngroups=2, chunk=16, init=True)
# Lengths per row: boundaries inside chunks, on a chunk edge (16, 32), a 1-token sequence, a
# sequence longer than a chunk; row 1 also leaves ids 1 and 5 out (their final states are zeros).
PACKINGS = {
    "mixed": [[5, 17, 1, 40]],
    "edges": [[16, 16, 31]],
    "two-rows": [[5, 17, 1, 40], [30, 33]],
}


def _seq_idx(lengths_per_row, seqlen, ids_per_row=None):
    rows_ = []
    for r, lengths in enumerate(lengths_per_row):
        assert sum(lengths) == seqlen
        ids = ids_per_row[r] if ids_per_row else range(len(lengths))
        rows_.append(np.concatenate([np.full(n, i, np.int32) for n, i in zip(lengths, ids)]))
    return np.stack(rows_)


def _row_slice(inputs, b, start, stop, init):
    sl = {k: (v[b:b + 1, start:stop] if k in ("x", "dt", "B", "C", "z") else v) for k, v in inputs.items()}
    sl["initial_state"] = init
    return sl


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("packing", list(PACKINGS))
def test_packed_equals_separate(packing, impl):
    lengths = PACKINGS[packing]
    case = dataclasses.replace(PACK_CASE, batch=len(lengths))
    inputs = scan_inputs(case_rng(case, packing), case)
    ids = [[0, 2, 3, 4], [0, 3]] if len(lengths) == 2 else None
    seq_idx = jnp.asarray(_seq_idx(lengths, case.seqlen, ids))
    S = 6
    y, finals = run(impl, inputs, case, seq_idx=seq_idx, num_sequences=S)
    assert finals.shape == (case.batch, S, case.nheads, case.headdim, case.dstate)
    # Against the oracle on the packed rows.
    y_ref, finals_ref = oracle_run(case, inputs, key=packing, seq_idx=seq_idx, num_sequences=S)
    check(case, impl, y, finals, y_ref, finals_ref, "packed ")
    # Against each sequence alone (the initial state belongs to each row's first sequence only).
    seen = np.zeros((case.batch, S), bool)
    for b, row in enumerate(lengths):
        start = 0
        for i, n in enumerate(row):
            s = (ids[b] if ids else range(len(row)))[i]
            init = inputs["initial_state"][b:b + 1] if start == 0 else None
            alone = _row_slice(inputs, b, start, start + n, init)
            y1, f1 = oracle_ssd.ssd_scan(**alone, **case.options())
            assert_close(y[b:b + 1, start:start + n], y1, case.dtype, "out", f"{impl} packed y of seq {s}")
            assert_close(finals[b:b + 1, s], f1, case.dtype, "state", f"{impl} final state of seq {s}")
            seen[b, s] = True
            start += n
    assert np.all(np.asarray(finals)[~seen] == 0), "ids that never occur must give zero states"


@pytest.mark.parametrize("impl", IMPLS)
def test_packed_odd_ids(impl):
    """Ids outside [0, num_sequences) are computed but not stored; ids that go down restart too; a
    seq_idx without a requested final state needs no num_sequences; one id everywhere == no seq_idx."""
    case = dataclasses.replace(PACK_CASE, batch=2, seqlen=29, chunk=8)
    inputs = scan_inputs(case_rng(case), case)
    # int64 NumPy ids are taken too (cast to int32).
    seq_idx = np.array([[-1] * 4 + [0] * 9 + [7] * 6 + [1] * 10, [2] * 10 + [0] * 10 + [2] * 9], np.int64)
    y, finals = run(impl, inputs, case, seq_idx=seq_idx, num_sequences=3)
    y_ref, finals_ref = oracle_run(case, inputs, key="odd ids", seq_idx=seq_idx, num_sequences=3)
    check(case, impl, y, finals, y_ref, finals_ref, "odd ids ")
    y_only = run(impl, inputs, case, seq_idx=seq_idx, return_final_state=False)
    np.testing.assert_array_equal(np.asarray(y_only), np.asarray(y))
    y0, f0 = run(impl, inputs, case)
    y1, f1 = run(impl, inputs, case, seq_idx=np.zeros((2, case.seqlen), np.int32), num_sequences=1)
    np.testing.assert_allclose(np.asarray(y1, np.float32), np.asarray(y0, np.float32), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(f1[:, 0]), np.asarray(f0), rtol=1e-5, atol=1e-5)


# The scan over a sequence == the same tokens through repeated ssd_state_update steps.
@pytest.mark.parametrize("impl", [p for p in IMPLS if p != "ref"])
@pytest.mark.parametrize("case", rows(SsdCase(batch=2, seqlen=21, nheads=6, ngroups=2, chunk=8, init=True),
                                      {}, {"dtype": BF16, "D": "channel", "limit": True}))
def test_scan_equals_state_updates(case, impl):
    inputs = scan_inputs(case_rng(case), case)
    y_scan, final_scan = run(impl, inputs, case)
    step = jax.jit(functools.partial(ssd_state_update, **case.options(), implementation=impl))
    state = inputs["initial_state"]
    ys = []
    for t in range(case.seqlen):
        at = lambda k: None if inputs[k] is None else inputs[k][:, t]
        y_t, state = step(state, at("x"), at("dt"), inputs["A"], at("B"), at("C"), inputs["D"], at("z"),
                          inputs["dt_bias"])
        ys.append(y_t)
    # Both are float32 math on the same inputs: compared to each other with the oracle's tolerance.
    y_steps = np.stack([np.asarray(v, np.float32) for v in ys], axis=1)
    assert_close(y_scan, y_steps.astype(np.float64), case.dtype, "out", f"{impl} scan vs steps y")
    assert_close(final_scan, np.asarray(state, np.float64), F32, "state", f"{impl} scan vs steps state")
    # And the prefill's final state continues a decode: scan L-1, then one step == the oracle's last.
    head = {k: (v[:, :-1] if k in ("x", "dt", "B", "C", "z") else v) for k, v in inputs.items()}
    _, mid = run(impl, head, case)
    y_last, last = step(mid, inputs["x"][:, -1], inputs["dt"][:, -1], inputs["A"], inputs["B"][:, -1],
                        inputs["C"][:, -1], inputs["D"], inputs["z"][:, -1], inputs["dt_bias"])
    y_ref, final_ref = oracle_run(case, inputs)
    assert_close(y_last, y_ref[:, -1], case.dtype, "out", f"{impl} decode after prefill y")
    assert_close(last, final_ref, case.dtype, "state", f"{impl} decode after prefill state")


# vmap, gradients
NAMES = ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_state")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("packed", [False, True], ids=["plain", "packed"])
def test_vmap(impl, packed):
    case = SsdCase(batch=2, seqlen=13, nheads=4, ngroups=2, chunk=4, init=True, dtype=BF16)
    nv = 3
    draws = [scan_inputs(case_rng(case, str(i)), case) for i in range(nv)]
    stacked = {k: jnp.stack([d[k] for d in draws]) for k in NAMES}
    seq = jnp.asarray(_seq_idx([[3, 10], [7, 6]], case.seqlen)) if packed else None
    extra = {"seq_idx": seq, "num_sequences": 2} if packed else {}

    def f(*a):
        kw = dict(zip(NAMES, a))
        return run(impl, kw, case, jit=False, **extra)

    y, final = jax.jit(jax.vmap(f))(*(stacked[k] for k in NAMES))
    for i, one in enumerate(draws):
        y_ref, f_ref = oracle_ssd.ssd_scan(**one, **case.options(), **extra)
        check(case, impl, y[i], final[i], y_ref, f_ref, f"vmap[{i}] ")


GRAD_CASE = SsdCase(batch=1, seqlen=9, nheads=2, headdim=3, dstate=4, ngroups=1, chunk=4, init=True,
                    D="channel")
GRAD_SEQ = np.array([[0, 0, 0, 1, 1, 1, 1, 1, 2]], np.int32)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("packed", [False, True], ids=["plain", "packed"])
def test_grad_matches_oracle(impl, packed):
    """Every input's gradient (y and final state in the loss) against float64 central differences."""
    case = dataclasses.replace(GRAD_CASE, limit=packed)
    rng = case_rng(case, "grad")
    inputs = scan_inputs(rng, case)
    extra = {"seq_idx": jnp.asarray(GRAD_SEQ), "num_sequences": 3} if packed else {}
    y_shape = inputs["x"].shape
    gy = rng.normal(size=y_shape)
    f_shape = (1, 3) + inputs["initial_state"].shape[1:] if packed else inputs["initial_state"].shape
    gf = rng.normal(size=f_shape)

    def loss(*a):
        y, final = run(impl, dict(zip(NAMES, a)), case, jit=False, **extra)
        return jnp.sum(y * gy) + jnp.sum(final * gf)

    grads = jax.jit(jax.grad(loss, argnums=tuple(range(len(NAMES)))))(*(inputs[k] for k in NAMES))

    def loss_ref(**kw):
        y, final = oracle_ssd.ssd_scan(**kw, **case.options(), **extra)
        return np.sum(y * gy) + np.sum(final * gf)

    ref = oracle.numerical_grad(loss_ref, {k: inputs[k] for k in NAMES})
    for k, g in zip(NAMES, grads):
        assert_close(g, ref[k], F32, "grad", f"{impl} d/d{k}")


@pytest.mark.parametrize("impl", IMPLS)
def test_check_grads(impl):
    case = dataclasses.replace(GRAD_CASE, D="head")
    inputs = scan_inputs(case_rng(case), case)

    def f(*a):
        return run(impl, dict(zip(NAMES, a)), case, jit=False)

    rtol, atol = tolerance(F32, "check_grads")
    check_grads(jax.jit(f), tuple(inputs[k] for k in NAMES), order=1, modes=["rev"], atol=atol, rtol=rtol)


# Implementation choice
def test_default_implementation():
    """implementation=None gives the same arrays as the implementation it picks."""
    picked = "ffi" if ffi_built("ssd_scan") else "xla"
    case = dataclasses.replace(BASE, seqlen=17, ngroups=2, init=True)
    inputs = scan_inputs(case_rng(case), case)
    for a, b in zip(run(None, inputs, case), run(picked, inputs, case)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.skipif(ffi_built("ssd_scan"), reason="the ssd_scan kernel is built here")
def test_ffi_without_kernel_raises():
    inputs = scan_inputs(case_rng(BASE), BASE)
    with pytest.raises(RuntimeError, match="ssd_scan.*implementation='ffi'"):
        ssd_scan(**inputs, implementation="ffi")


# Bad input: ValueError / TypeError naming the argument, before anything is lowered.
def _bad_args(**change):
    b, l, h, p, g, n = 2, 8, 4, 3, 2, 5
    z = lambda *s, dtype=F32: jnp.zeros(s, dtype)
    args = dict(x=z(b, l, h, p), dt=z(b, l, h), A=-jnp.ones(h), B=z(b, l, g, n), C=z(b, l, g, n), D=z(h),
                z=z(b, l, h, p), dt_bias=z(h), initial_state=z(b, h, p, n), seq_idx=jnp.zeros((b, l), jnp.int32))
    return {**args, **change}


BAD = [
    ("x-rank", dict(x=jnp.zeros((2, 8, 12))), {}, ValueError, r"x has shape \(2, 8, 12\).*rank 4"),
    ("x-dtype", dict(x=jnp.zeros((2, 8, 4, 3), jnp.int32)), {}, TypeError, "x has dtype int32"),
    ("dt-shape", dict(dt=jnp.zeros((2, 8, 3))), {}, ValueError, r"dt has shape \(2, 8, 3\).*\(2, 8, 4\)"),
    ("dt-dtype", dict(dt=jnp.zeros((2, 8, 4), BF16)), {}, TypeError, "dt has dtype bfloat16"),
    ("A-shape", dict(A=-jnp.ones((4, 5))), {}, ValueError, r"A has shape \(4, 5\).*\[nheads\]"),
    ("A-int", dict(A=jnp.ones(4, jnp.int32)), {}, TypeError, "A has dtype int32"),
    ("B-rank", dict(B=jnp.zeros((2, 8, 5))), {}, ValueError, r"B has shape \(2, 8, 5\)"),
    ("B-seqlen", dict(B=jnp.zeros((2, 7, 2, 5))), {}, ValueError, r"B has shape \(2, 7, 2, 5\)"),
    ("C-mismatch", dict(C=jnp.zeros((2, 8, 2, 6))), {}, ValueError, r"C has shape \(2, 8, 2, 6\)"),
    ("groups", dict(B=jnp.zeros((2, 8, 3, 5)), C=jnp.zeros((2, 8, 3, 5))), {}, ValueError,
     "ngroups = 3 must divide nheads = 4"),
    ("dstate", dict(B=jnp.zeros((2, 8, 2, 257)), C=jnp.zeros((2, 8, 2, 257)), initial_state=None), {},
     ValueError, "dstate is 257"),
    ("B-dtype", dict(B=jnp.zeros((2, 8, 2, 5), F16)), {}, TypeError, "B has dtype float16"),
    ("D-shape", dict(D=jnp.zeros(3)), {}, ValueError, r"D has shape \(3,\).*\[nheads\]"),
    ("D-shape2", dict(D=jnp.zeros((4, 2))), {}, ValueError, r"D has shape \(4, 2\).*\[nheads, headdim\]"),
    ("z-shape", dict(z=jnp.zeros((2, 8, 4, 2))), {}, ValueError, r"z has shape \(2, 8, 4, 2\)"),
    ("z-dtype", dict(z=jnp.zeros((2, 8, 4, 3), F16)), {}, TypeError, "z has dtype float16"),
    ("dt_bias", dict(dt_bias=jnp.zeros(5)), {}, ValueError, r"dt_bias has shape \(5,\)"),
    ("init-shape", dict(initial_state=jnp.zeros((2, 4, 3, 6))), {}, ValueError,
     r"initial_state has shape \(2, 4, 3, 6\).*\(2, 4, 3, 5\)"),
    ("init-dtype", dict(initial_state=jnp.zeros((2, 4, 3, 5), BF16)), {}, TypeError,
     "initial_state has dtype bfloat16"),
    ("seq_idx-shape", dict(seq_idx=jnp.zeros((2, 7), jnp.int32)), {}, ValueError, r"seq_idx has shape \(2, 7\)"),
    ("seq_idx-dtype", dict(seq_idx=jnp.zeros((2, 8), F32)), {}, TypeError, "seq_idx has dtype float32"),
    ("num_sequences-missing", {}, dict(return_final_state=True), ValueError, "needs num_sequences"),
    ("num_sequences-bad", {}, dict(return_final_state=True, num_sequences=0), ValueError, "num_sequences must be"),
    ("num_sequences-without-seq_idx", dict(seq_idx=None), dict(num_sequences=2), ValueError,
     "without seq_idx"),
    ("chunk_size", {}, dict(chunk_size=0), ValueError, "chunk_size must be"),
    ("dt_limit", {}, dict(dt_limit=(0.1, 0.01)), ValueError, "dt_limit"),
    ("implementation", {}, dict(implementation="cuda"), ValueError, "implementation must be"),
]


@pytest.mark.parametrize("change,options,exc,msg", [pytest.param(*b[1:], id=b[0]) for b in BAD])
def test_bad_input(change, options, exc, msg):
    args = _bad_args(**change)
    with pytest.raises(exc, match=msg) as err:
        ssd_scan(**args, **options)
    assert str(err.value).startswith("ssd_scan: ")


# The Metal path: the "xla" program (forward and gradient, packed) passes the allow-list.
def metal_checker():
    try:
        from metal_allowlist import check_stablehlo, format_violations  # tests/metal_allowlist.py
    except ImportError:
        try:
            from tools.metal_allowlist import check_stablehlo, format_violations
        except ImportError:
            from mamba_jax.ops.metal_allowlist import check_stablehlo, format_violations
    return check_stablehlo, format_violations


def assert_metal_safe(fn, *args, what=""):
    check_stablehlo, format_violations = metal_checker()
    text = jax.jit(fn).trace(*args).lower(lowering_platforms=("METAL",)).as_text()
    v = check_stablehlo(text)
    assert not v, f"{what}: {len(v)} allow-list violations\n{format_violations(v, text)}"


@pytest.mark.parametrize("packed", [False, True], ids=["plain", "packed"])
def test_metal_allowlist(packed):
    case = dataclasses.replace(BASE, seqlen=37, chunk=16, ngroups=2, init=True, limit=True, dtype=BF16)
    inputs = scan_inputs(case_rng(case), case)
    extra = {"seq_idx": jnp.asarray(_seq_idx([[10, 27], [37]], 37)), "num_sequences": 2} if packed else {}

    def f(*a):
        return run("xla", dict(zip(NAMES, a)), case, jit=False, **extra)

    def loss(*a):
        y, final = f(*a)
        return jnp.sum(y.astype(F32)) + jnp.sum(final)

    args = tuple(inputs[k] for k in NAMES)
    assert_metal_safe(f, *args, what="ssd_scan xla")
    assert_metal_safe(jax.grad(loss, argnums=tuple(range(len(NAMES)))), *args, what="ssd_scan xla grad")
