"""Times the Mamba-1 ops' "ffi" kernels against pure-JAX variants measured in the same run.

    .venv/bin/python benchmarks/bench_ops.py [--ops scan,conv,ssu,conv_update] [--dtype float32]
                                             [--batches 1,64] [--quick] [--out FILE]

Variants:
  selective_scan        ffi | jax-chunked (the library's "xla" path: chunked, Metal-safe)
                            | jax-scan (lax.scan over steps: reference.selective_scan_ref)
                            | jax-assoc (lax.associative_scan, written below as a baseline only)
  causal_conv1d         ffi | jax-ref
  selective_state_update, causal_conv1d_update
                        ffi | jax-ref, each timed two ways: mode "call" (one jitted call per step
                        from Python, state donated and fed back) and mode "loop64" (64 steps inside
                        one jitted fori_loop, per-step time; what an on-device decode loop sees).

Shapes: one mamba-130m layer (batch 1, dim 1536, dstate 16, seqlen 2048, conv width 4) with the
options a Mamba block uses (D, z, delta_bias, softplus; bias and silu for the conv), and the update
ops at batch 1 and 64. Prints a table and writes JSON rows (benchmarks/results/cpu-*.json on CPU).
Each row also records the variant's largest absolute difference from the reference on the same
inputs (max_abs_diff_vs_reference), so a fast but wrong variant shows up in the data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
from jax import lax

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import mamba_jax as mj  # noqa: E402
from mamba_jax.ops.reference import selective_scan_ref, softplus  # noqa: E402
from mamba_jax.shapes import MAMBA_130M  # noqa: E402

JAX_VARIANTS = ("jax-chunked", "jax-scan", "jax-assoc", "jax-ref")
LOOP_STEPS = 64


# ---- the associative-scan baseline (benchmark only) ---------------------------------------------

def selective_scan_assoc(u, delta, A, B, C, D, z, delta_bias, *, delta_softplus, initial_state):
    """Same math as selective_scan_ref, with the linear recurrence h_t = a_t h_{t-1} + b_t solved by
    lax.associative_scan over the sequence axis. B, C [b, l, n] (one group). fp32 math."""
    f32 = jnp.float32
    u32 = u.astype(f32)
    dt = delta.astype(f32) + delta_bias
    dt = softplus(dt) if delta_softplus else dt
    a = jnp.exp(dt[..., None] * A)                                   # [b, l, d, n]
    bx = (dt * u32)[..., None] * B.astype(f32)[:, :, None, :]         # [b, l, d, n]
    bx = bx.at[:, 0].add(a[:, 0] * initial_state)

    def combine(left, right):
        a1, b1 = left
        a2, b2 = right
        return a1 * a2, a2 * b1 + b2

    _, h = lax.associative_scan(combine, (a, bx), axis=1)
    y = jnp.einsum("bldn,bln->bld", h, C.astype(f32)) + u32 * D
    y = y * (z.astype(f32) * jax.nn.sigmoid(z.astype(f32)))
    return y.astype(u.dtype), h[:, -1]


# ---- cases --------------------------------------------------------------------------------------

def _max_diff(fn, ref_fn, args):
    """Largest |fn - ref_fn| over all outputs on `args`, in float32: every timed variant is checked
    against the reference on the benchmark's own inputs, so a row never times a wrong answer."""
    out = jax.tree_util.tree_leaves(fn(*args))
    ref = jax.tree_util.tree_leaves(ref_fn(*args))
    return max(float(jnp.max(jnp.abs(o.astype(jnp.float32) - r.astype(jnp.float32)))) for o, r in zip(out, ref))


def _keys(n):
    return jax.random.split(jax.random.PRNGKey(0), n)


def _scan_inputs(key, batch, seqlen, dim, dstate, dtype):
    k = jax.random.split(key, 9)
    act = lambda kk, shape, scale=1.0: (jax.random.normal(kk, shape) * scale).astype(dtype)
    u = act(k[0], (batch, seqlen, dim))
    delta = act(k[1], (batch, seqlen, dim), 0.5)
    A = -jnp.exp(jax.random.normal(k[2], (dim, dstate)) * 0.5)
    B = act(k[3], (batch, seqlen, dstate))
    C = act(k[4], (batch, seqlen, dstate))
    D = jax.random.normal(k[5], (dim,))
    z = act(k[6], (batch, seqlen, dim))
    delta_bias = jax.random.normal(k[7], (dim,)) * 0.5 - 2.0
    h0 = jax.random.normal(k[8], (batch, dim, dstate))
    return (u, delta, A, B, C, D, z, delta_bias, h0)


def bench_selective_scan(dtype, reps, quick):
    batch, seqlen, dim, dstate = 1, 2048, MAMBA_130M.dim, MAMBA_130M.dstate
    shape = dict(batch=batch, seqlen=seqlen, dim=dim, dstate=dstate)
    sets = [_scan_inputs(k, batch, seqlen, dim, dstate, dtype) for k in _keys(2)]
    u, delta, A, B, C, D, z, bias, h0 = sets[0]
    moved = common.nbytes(u, delta, z, u, B, C, A, D, bias, h0, h0)  # u, delta, z, y; B, C; params; h0 in, h out

    def lib(impl):
        return jax.jit(lambda u, dl, A, B, C, D, z, db, h0: mj.selective_scan(
            u, dl, A, B, C, D, z, db, delta_softplus=True, initial_state=h0, return_last_state=True,
            implementation=impl))

    variants = {
        "ffi": lib("ffi"),
        "jax-chunked": lib("xla"),
        "jax-scan": jax.jit(_scan_ref_entry),
        "jax-assoc": jax.jit(_assoc_entry),
    }
    rows = []
    for name, fn in variants.items():
        slow = name == "jax-assoc"
        t = common.measure(fn, sets, warmup=1 if slow else 3, reps=max(3, reps // 5) if slow else reps,
                           max_seconds=4.0 if quick else 15.0)
        err = _max_diff(fn, variants["jax-scan"], sets[0])
        rows.append(common.make_row("selective_scan", shape, dtype.__name__, name, t, moved,
                                    max_abs_diff_vs_reference=err))
    return rows


def _scan_ref_entry(u, dl, A, B, C, D, z, db, h0):
    return selective_scan_ref(u, dl, A, B[:, :, None, :], C[:, :, None, :], D, z, db, delta_softplus=True,
                              initial_state=h0)


def _assoc_entry(u, dl, A, B, C, D, z, db, h0):
    return selective_scan_assoc(u, dl, A, B, C, D, z, db, delta_softplus=True, initial_state=h0)


def bench_conv1d(dtype, reps, quick):
    batch, seqlen, dim, width = 1, 2048, MAMBA_130M.dim, MAMBA_130M.d_conv
    shape = dict(batch=batch, seqlen=seqlen, dim=dim, width=width)
    sets = []
    for k in _keys(2):
        k = jax.random.split(k, 4)
        x = jax.random.normal(k[0], (batch, seqlen, dim)).astype(dtype)
        w = jax.random.normal(k[1], (dim, width)) * 0.5
        b = jax.random.normal(k[2], (dim,))
        st = jax.random.normal(k[3], (batch, dim, width - 1)).astype(dtype)
        sets.append((x, w, b, st))
    x, w, b, st = sets[0]
    moved = common.nbytes(x, x, w, b, st, st)
    fns = {name: jax.jit(lambda x, w, b, st, impl=impl: mj.causal_conv1d(
        x, w, b, activation="silu", initial_state=st, return_final_state=True, implementation=impl))
        for name, impl in (("ffi", "ffi"), ("jax-ref", "xla"))}
    rows = []
    for name, fn in fns.items():
        t = common.measure(fn, sets, reps=reps, max_seconds=4.0 if quick else 15.0)
        err = _max_diff(fn, fns["jax-ref"], sets[0])
        rows.append(common.make_row("causal_conv1d", shape, dtype.__name__, name, t, moved,
                                    max_abs_diff_vs_reference=err))
    return rows


def _ssu_inputs(key, batch, dim, dstate, dtype):
    k = jax.random.split(key, 9)
    act = lambda kk, shape, scale=1.0: (jax.random.normal(kk, shape) * scale).astype(dtype)
    state = jax.random.normal(k[0], (batch, dim, dstate))
    x = act(k[1], (batch, dim))
    dt = act(k[2], (batch, dim), 0.5)
    A = -jnp.exp(jax.random.normal(k[3], (dim, dstate)) * 0.5)
    B = act(k[4], (batch, dstate))
    C = act(k[5], (batch, dstate))
    D = jax.random.normal(k[6], (dim,))
    z = act(k[7], (batch, dim))
    dt_bias = jax.random.normal(k[8], (dim,)) * 0.5 - 2.0
    return (state, x, dt, A, B, C, D, z, dt_bias)


def _time_update(step, sets, reps, quick):
    """Times `step(state, *rest) -> (y, new_state)` per call (state donated and carried) and per
    step inside a jitted fori_loop of LOOP_STEPS steps."""
    call = jax.jit(step, donate_argnums=0)

    def loop_fn(state, *rest):
        def body(_, carry):
            st, acc = carry
            y, st = step(st, *rest)
            return st, acc + y.astype(jnp.float32)  # keeps y live, as the next layer would
        y0 = jnp.zeros(rest[0].shape, jnp.float32)
        return lax.fori_loop(0, LOOP_STEPS, body, (state, y0))

    loop = jax.jit(loop_fn, donate_argnums=0)
    # Fresh copies: donation consumes the state buffers.
    fresh = lambda: [(jnp.array(s[0], copy=True),) + tuple(s[1:]) for s in sets]
    t_call = common.measure(call, fresh(), warmup=20, reps=reps * 10, min_seconds=0.5,
                            max_seconds=2.0 if quick else 6.0, carry=(0, 1))
    t_loop = common.measure(loop, fresh(), warmup=3, reps=reps, min_seconds=0.3,
                            max_seconds=2.0 if quick else 6.0, carry=(0, 0))
    t_loop = common.Timing([s / LOOP_STEPS for s in t_loop.samples_ms])
    return t_call, t_loop


def bench_state_update(dtype, reps, quick, batches):
    dim, dstate = MAMBA_130M.dim, MAMBA_130M.dstate
    rows = []
    for batch in batches:
        shape = dict(batch=batch, dim=dim, dstate=dstate)
        sets = [_ssu_inputs(k, batch, dim, dstate, dtype) for k in _keys(4)]
        state, x, dt, A, B, C, D, z, bias = sets[0]
        moved = common.nbytes(state, state, x, dt, z, x, A, B, C, D, bias)
        steps = {name: (lambda st, x, dt, A, B, C, D, z, db, impl=impl: mj.selective_state_update(
            st, x, dt, A, B, C, D, z, db, dt_softplus=True, implementation=impl))
            for name, impl in (("ffi", "ffi"), ("jax-ref", "xla"))}
        rows += _update_rows("selective_state_update", shape, dtype, steps, sets, moved, reps, quick)
    return rows


def _update_rows(op, shape, dtype, steps, sets, moved, reps, quick):
    rows = []
    for name, step in steps.items():
        t_call, t_loop = _time_update(step, sets, reps, quick)
        err = _max_diff(jax.jit(step), jax.jit(steps["jax-ref"]), sets[0])
        rows.append(common.make_row(op, shape, dtype.__name__, name, t_call, moved, max_abs_diff_vs_reference=err))
        rows.append(common.make_row(op, shape, dtype.__name__, name, t_loop, moved, mode=f"loop{LOOP_STEPS}",
                                    max_abs_diff_vs_reference=err))
    return rows


def bench_conv_update(dtype, reps, quick, batches):
    dim, width = MAMBA_130M.dim, MAMBA_130M.d_conv
    rows = []
    for batch in batches:
        shape = dict(batch=batch, dim=dim, width=width)
        sets = []
        for k in _keys(4):
            k = jax.random.split(k, 4)
            st = jax.random.normal(k[0], (batch, dim, width - 1)).astype(dtype)
            x = jax.random.normal(k[1], (batch, dim)).astype(dtype)
            w = jax.random.normal(k[2], (dim, width)) * 0.5
            b = jax.random.normal(k[3], (dim,))
            sets.append((st, x, w, b))
        st, x, w, b = sets[0]
        moved = common.nbytes(st, st, x, x, w, b)
        # state first so it can be donated and carried; the op itself takes x first.
        steps = {name: (lambda st, x, w, b, impl=impl: mj.causal_conv1d_update(
            x, st, w, b, activation="silu", implementation=impl))
            for name, impl in (("ffi", "ffi"), ("jax-ref", "xla"))}
        rows += _update_rows("causal_conv1d_update", shape, dtype, steps, sets, moved, reps, quick)
    return rows


OPS = ("scan", "conv", "ssu", "conv_update")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", default=",".join(OPS), help=f"comma-separated subset of {','.join(OPS)}")
    ap.add_argument("--dtype", default="float32", help="float32, bfloat16, float16, or a comma list")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run, noisier)")
    ap.add_argument("--batches", default="1,64", help="batch sizes for the update ops")
    ap.add_argument("--out", default=None, help="JSON file to write (default benchmarks/results/<backend>-<date>-<commit>.json)")
    args = ap.parse_args(argv)

    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    bad = [o for o in ops if o not in OPS]
    if bad:
        ap.error(f"unknown ops {bad}; choose from {OPS}")
    dtypes = [getattr(jnp, d.strip()) for d in args.dtype.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    reps = 7 if args.quick else 30
    if not mj.ops.cpu_available() and not mj.ops.cuda_available():
        print("warning: no FFI kernels are built; the 'ffi' variant will fail", file=sys.stderr)

    rows = []
    for dtype in dtypes:
        if "scan" in ops:
            rows += bench_selective_scan(dtype, reps, args.quick)
        if "conv" in ops:
            rows += bench_conv1d(dtype, reps, args.quick)
        if "ssu" in ops:
            rows += bench_state_update(dtype, reps, args.quick, batches)
        if "conv_update" in ops:
            rows += bench_conv_update(dtype, reps, args.quick, batches)
    common.add_ratios(rows, JAX_VARIANTS)
    info = common.machine_info()
    print(f"# {info['cpu_model']} ({info['cpu_cores']} cores), device {info['device']}, "
          f"jax {info['jax_version']}, commit {info['git_commit']}")
    print(common.format_table(rows))
    print("# ratio = best pure-JAX median of the same case / this median (> 1: faster)")
    out = args.out or common.default_out_path(jax.default_backend())
    path = common.write_rows(rows, out)
    print(f"# wrote {len(rows)} rows to {path}")


if __name__ == "__main__":
    main()
