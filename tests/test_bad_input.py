"""Bad input: the public ops raise ValueError/TypeError naming the argument and the shapes before
anything is lowered, and the C++ handlers, called directly with inconsistent operands (bypassing
the Python checks), return InvalidArgument, which XLA raises with the handler's message."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mamba_jax import ops
from mamba_jax.ops import add_rms_norm, causal_conv1d, causal_conv1d_update, selective_scan, selective_state_update

BATCH, SEQLEN, DIM, N, W = 2, 8, 6, 4, 4
F32, BF16 = jnp.float32, jnp.bfloat16


def zeros(*shape, dtype=F32):
    return jnp.zeros(shape, dtype)


def scan_args(**change):
    args = dict(u=zeros(BATCH, SEQLEN, DIM), delta=zeros(BATCH, SEQLEN, DIM), A=-jnp.ones((DIM, N)),
                B=zeros(BATCH, SEQLEN, N), C=zeros(BATCH, SEQLEN, N), D=zeros(DIM), z=zeros(BATCH, SEQLEN, DIM),
                delta_bias=zeros(DIM), initial_state=zeros(BATCH, DIM, N))
    return {**args, **change}


def update_args(**change):
    args = dict(state=zeros(BATCH, DIM, N), x=zeros(BATCH, DIM), dt=zeros(BATCH, DIM), A=-jnp.ones((DIM, N)),
                B=zeros(BATCH, N), C=zeros(BATCH, N), D=zeros(DIM), z=zeros(BATCH, DIM), dt_bias=zeros(DIM))
    return {**args, **change}


def conv_args(**change):
    args = dict(x=zeros(BATCH, SEQLEN, DIM), weight=zeros(DIM, W), bias=zeros(DIM),
                initial_state=zeros(BATCH, DIM, W - 1))
    return {**args, **change}


def conv_update_args(**change):
    args = dict(x=zeros(BATCH, DIM), conv_state=zeros(BATCH, DIM, W - 1), weight=zeros(DIM, W), bias=zeros(DIM))
    return {**args, **change}


def add_norm_args(**change):
    args = dict(h=zeros(BATCH, DIM), y=zeros(BATCH, DIM, dtype=BF16), scale=zeros(DIM))
    return {**args, **change}


EPS = {"eps": 1e-5}


def shape_re(*shape) -> str:
    return re.escape(str(tuple(shape)))


# (id, op, arguments, extra keyword options, exception, pattern the message must match)
CASES = [
    # selective_scan: rank, sizes
    ("scan-u-rank", selective_scan, scan_args(u=zeros(BATCH, DIM)), {}, ValueError,
     r"selective_scan: u has shape \(2, 6\) \(rank 2\), expected rank 3: \[batch, seqlen, dim\]"),
    ("scan-delta-seqlen", selective_scan, scan_args(delta=zeros(BATCH, 7, DIM)), {}, ValueError,
     r"delta has shape " + shape_re(2, 7, 6) + r", expected \[batch, seqlen, dim\] = " + shape_re(2, 8, 6)),
    ("scan-A-dim", selective_scan, scan_args(A=zeros(5, N)), {}, ValueError,
     r"A has shape " + shape_re(5, 4) + r", expected \[dim, dstate\] with dim = 6"),
    ("scan-A-rank", selective_scan, scan_args(A=zeros(DIM)), {}, ValueError, r"A has shape \(6,\)"),
    ("scan-B-seqlen", selective_scan, scan_args(B=zeros(BATCH, 7, N)), {}, ValueError,
     r"B has shape " + shape_re(2, 7, 4) + r", expected \[batch, seqlen, dstate\] = " + shape_re(2, 8, 4)),
    ("scan-C-dstate", selective_scan, scan_args(C=zeros(BATCH, SEQLEN, 5)), {}, ValueError,
     r"C has shape " + shape_re(2, 8, 5) + r", expected .* = " + shape_re(2, 8, 4)),
    ("scan-B-rank", selective_scan, scan_args(B=zeros(SEQLEN, N)), {}, ValueError,
     r"B has shape \(8, 4\), expected \[batch, seqlen, dstate\] or \[batch, seqlen, ngroups, dstate\]"),
    ("scan-BC-groups-differ", selective_scan,
     scan_args(B=zeros(BATCH, SEQLEN, 2, N), C=zeros(BATCH, SEQLEN, 1, N)), {}, ValueError,
     r"B has shape " + shape_re(2, 8, 2, 4) + r" but C has shape " + shape_re(2, 8, 1, 4)),
    ("scan-ngroups-4", selective_scan, scan_args(B=zeros(BATCH, SEQLEN, 4, N), C=zeros(BATCH, SEQLEN, 4, N)), {},
     ValueError, r"B has ngroups = 4, which must divide dim = 6"),
    ("scan-D", selective_scan, scan_args(D=zeros(5)), {}, ValueError,
     r"D has shape \(5,\), expected \[dim\] = \(6,\)"),
    ("scan-z", selective_scan, scan_args(z=zeros(BATCH, SEQLEN, 5)), {}, ValueError,
     r"z has shape " + shape_re(2, 8, 5) + r", expected \[batch, seqlen, dim\] = " + shape_re(2, 8, 6)),
    ("scan-delta_bias", selective_scan, scan_args(delta_bias=zeros(DIM, 1)), {}, ValueError,
     r"delta_bias has shape \(6, 1\), expected \[dim\] = \(6,\)"),
    ("scan-initial_state", selective_scan, scan_args(initial_state=zeros(BATCH, DIM, 5)), {}, ValueError,
     r"initial_state has shape " + shape_re(2, 6, 5) + r", expected \[batch, dim, dstate\] = " + shape_re(2, 6, 4)),
    ("scan-dstate-0", selective_scan,
     scan_args(A=zeros(DIM, 0), B=zeros(BATCH, SEQLEN, 0), C=zeros(BATCH, SEQLEN, 0), initial_state=None), {},
     ValueError, r"dstate is 0 \(A has shape \(6, 0\)\), expected 1 <= dstate <= 256"),
    ("scan-dstate-257", selective_scan,
     scan_args(A=zeros(DIM, 257), B=zeros(BATCH, SEQLEN, 257), C=zeros(BATCH, SEQLEN, 257), initial_state=None),
     {}, ValueError, r"dstate is 257 \(A has shape \(6, 257\)\), expected 1 <= dstate <= 256"),
    # selective_scan: dtypes
    ("scan-u-int32", selective_scan, scan_args(u=zeros(BATCH, SEQLEN, DIM, dtype=jnp.int32)), {}, TypeError,
     r"u has dtype int32, expected one of float32, bfloat16, float16"),
    ("scan-delta-bf16", selective_scan, scan_args(delta=zeros(BATCH, SEQLEN, DIM, dtype=BF16)), {}, TypeError,
     r"delta has dtype bfloat16, expected float32 \(the dtype of u\)"),
    ("scan-B-bf16", selective_scan, scan_args(B=zeros(BATCH, SEQLEN, N, dtype=BF16)), {}, TypeError,
     r"B has dtype bfloat16, expected float32"),
    ("scan-z-f16", selective_scan, scan_args(z=zeros(BATCH, SEQLEN, DIM, dtype=jnp.float16)), {}, TypeError,
     r"z has dtype float16, expected float32"),
    ("scan-initial_state-bf16", selective_scan, scan_args(initial_state=zeros(BATCH, DIM, N, dtype=BF16)), {},
     TypeError, r"initial_state has dtype bfloat16, expected float32"),
    ("scan-A-int32", selective_scan, scan_args(A=zeros(DIM, N, dtype=jnp.int32)), {}, TypeError,
     r"A has dtype int32, expected a floating dtype"),
    ("scan-implementation", selective_scan, scan_args(), {"implementation": "cuda"}, ValueError,
     r"selective_scan: implementation must be one of None, 'ffi', 'xla'; got 'cuda'"),
    # selective_state_update
    ("update-state-rank", selective_state_update, update_args(state=zeros(BATCH, DIM)), {}, ValueError,
     r"state has shape \(2, 6\) \(rank 2\), expected rank 3: \[batch, dim, dstate\]"),
    ("update-x", selective_state_update, update_args(x=zeros(BATCH, 5)), {}, ValueError,
     r"x has shape \(2, 5\), expected \[batch, dim\] = \(2, 6\)"),
    ("update-dt", selective_state_update, update_args(dt=zeros(3, DIM)), {}, ValueError,
     r"dt has shape \(3, 6\), expected \[batch, dim\] = \(2, 6\)"),
    ("update-A", selective_state_update, update_args(A=zeros(DIM, 5)), {}, ValueError,
     r"A has shape \(6, 5\), expected \[dim, dstate\] = \(6, 4\)"),
    ("update-B", selective_state_update, update_args(B=zeros(BATCH, 5)), {}, ValueError,
     r"B has shape \(2, 5\), expected \[batch, dstate\] = \(2, 4\)"),
    ("update-C-groups", selective_state_update, update_args(B=zeros(BATCH, 4, N), C=zeros(BATCH, 4, N)), {},
     ValueError, r"B has ngroups = 4, which must divide dim = 6"),
    ("update-z", selective_state_update, update_args(z=zeros(BATCH, DIM, 1)), {}, ValueError,
     r"z has shape \(2, 6, 1\), expected \[batch, dim\] = \(2, 6\)"),
    ("update-dt_bias", selective_state_update, update_args(dt_bias=zeros(7)), {}, ValueError,
     r"dt_bias has shape \(7,\), expected \[dim\] = \(6,\)"),
    ("update-dstate-0", selective_state_update,
     update_args(state=zeros(BATCH, DIM, 0), A=zeros(DIM, 0), B=zeros(BATCH, 0), C=zeros(BATCH, 0)), {},
     ValueError, r"dstate is 0 \(state has shape \(2, 6, 0\)\)"),
    ("update-dstate-257", selective_state_update,
     update_args(state=zeros(BATCH, DIM, 257), A=zeros(DIM, 257), B=zeros(BATCH, 257), C=zeros(BATCH, 257)), {},
     ValueError, r"dstate is 257 \(state has shape \(2, 6, 257\)\)"),
    ("update-state-bf16", selective_state_update, update_args(state=zeros(BATCH, DIM, N, dtype=BF16)), {}, TypeError,
     r"state has dtype bfloat16, expected float32"),
    ("update-x-int32", selective_state_update, update_args(x=zeros(BATCH, DIM, dtype=jnp.int32)), {}, TypeError,
     r"x has dtype int32, expected one of float32, bfloat16, float16"),
    ("update-dt-bf16", selective_state_update, update_args(dt=zeros(BATCH, DIM, dtype=BF16)), {}, TypeError,
     r"dt has dtype bfloat16, expected float32 \(the dtype of x\)"),
    ("update-implementation", selective_state_update, update_args(), {"implementation": "gpu"}, ValueError,
     r"implementation must be one of None, 'ffi', 'xla'; got 'gpu'"),
    # causal_conv1d
    ("conv-seq_idx-shape", causal_conv1d, conv_args(), {"seq_idx": zeros(BATCH, 7, dtype=jnp.int32)}, ValueError,
     r"causal_conv1d: seq_idx has shape " + shape_re(2, 7) + r", expected \[batch, seqlen\] = " + shape_re(2, 8)),
    ("conv-seq_idx-dtype", causal_conv1d, conv_args(), {"seq_idx": zeros(BATCH, SEQLEN)}, TypeError,
     r"causal_conv1d: seq_idx has dtype float32, expected int32"),
    ("conv-num_sequences-missing", causal_conv1d, conv_args(),
     {"seq_idx": zeros(BATCH, SEQLEN, dtype=jnp.int32), "return_final_state": True}, ValueError,
     r"causal_conv1d: return_final_state with seq_idx needs num_sequences"),
    ("conv-num_sequences-alone", causal_conv1d, conv_args(), {"num_sequences": 3}, ValueError,
     r"causal_conv1d: num_sequences=3 was given without seq_idx"),
    ("conv-x-rank", causal_conv1d, conv_args(x=zeros(SEQLEN, DIM)), {}, ValueError,
     r"causal_conv1d: x has shape \(8, 6\) \(rank 2\), expected rank 3: \[batch, seqlen, dim\]"),
    ("conv-weight-dim", causal_conv1d, conv_args(weight=zeros(5, W)), {}, ValueError,
     r"weight has shape \(5, 4\), expected \[dim, width\] with dim = 6"),
    ("conv-weight-rank", causal_conv1d, conv_args(weight=zeros(DIM)), {}, ValueError, r"weight has shape \(6,\)"),
    ("conv-width-1", causal_conv1d, conv_args(weight=zeros(DIM, 1), initial_state=None), {}, ValueError,
     r"weight width is 1 \(weight has shape \(6, 1\)\), expected 2 <= width <= 8"),
    ("conv-width-9", causal_conv1d, conv_args(weight=zeros(DIM, 9), initial_state=None), {}, ValueError,
     r"weight width is 9 \(weight has shape \(6, 9\)\), expected 2 <= width <= 8"),
    ("conv-bias", causal_conv1d, conv_args(bias=zeros(5)), {}, ValueError,
     r"bias has shape \(5,\), expected \[dim\] = \(6,\)"),
    ("conv-initial_state", causal_conv1d, conv_args(initial_state=zeros(BATCH, DIM, W)), {}, ValueError,
     r"initial_state has shape \(2, 6, 4\), expected \[batch, dim, width - 1\] = \(2, 6, 3\)"),
    ("conv-initial_state-bf16", causal_conv1d, conv_args(initial_state=zeros(BATCH, DIM, W - 1, dtype=BF16)), {},
     TypeError, r"initial_state has dtype bfloat16, expected float32 \(the dtype of x\)"),
    ("conv-x-int32", causal_conv1d, conv_args(x=zeros(BATCH, SEQLEN, DIM, dtype=jnp.int32)), {}, TypeError,
     r"x has dtype int32, expected one of float32, bfloat16, float16"),
    ("conv-activation", causal_conv1d, conv_args(), {"activation": "relu"}, ValueError,
     r"causal_conv1d: activation must be None or 'silu', got 'relu'"),
    ("conv-implementation", causal_conv1d, conv_args(), {"implementation": "XLA"}, ValueError,
     r"implementation must be one of None, 'ffi', 'xla'; got 'XLA'"),
    # causal_conv1d_update
    ("conv-update-x-rank", causal_conv1d_update, conv_update_args(x=zeros(BATCH, 1, DIM)), {}, ValueError,
     r"causal_conv1d_update: x has shape \(2, 1, 6\) \(rank 3\), expected rank 2: \[batch, dim\]"),
    ("conv-update-state", causal_conv1d_update, conv_update_args(conv_state=zeros(BATCH, DIM, W - 2)), {},
     ValueError, r"conv_state has shape \(2, 6, 2\), expected \[batch, dim, width - 1\] = \(2, 6, 3\)"),
    ("conv-update-state-batch", causal_conv1d_update, conv_update_args(conv_state=zeros(1, DIM, W - 1)), {},
     ValueError, r"conv_state has shape \(1, 6, 3\), expected \[batch, dim, width - 1\] = \(2, 6, 3\)"),
    ("conv-update-width-1", causal_conv1d_update, conv_update_args(weight=zeros(DIM, 1)), {}, ValueError,
     r"weight width is 1 \(weight has shape \(6, 1\)\)"),
    ("conv-update-width-9", causal_conv1d_update, conv_update_args(weight=zeros(DIM, 9)), {}, ValueError,
     r"weight width is 9 \(weight has shape \(6, 9\)\)"),
    ("conv-update-state-f16", causal_conv1d_update,
     conv_update_args(conv_state=zeros(BATCH, DIM, W - 1, dtype=jnp.float16)), {}, TypeError,
     r"conv_state has dtype float16, expected float32 \(the dtype of x\)"),
    ("conv-update-activation", causal_conv1d_update, conv_update_args(), {"activation": "gelu"}, ValueError,
     r"activation must be None or 'silu', got 'gelu'"),
    # add_rms_norm
    ("add-norm-y-rank", add_rms_norm, add_norm_args(h=zeros(), y=zeros()), EPS, ValueError,
     r"add_rms_norm: y has shape \(\) \(rank 0\), expected rank >= 1: \[\.\.\., features\]"),
    ("add-norm-h-shape", add_rms_norm, add_norm_args(h=zeros(BATCH, DIM - 1)), EPS, ValueError,
     r"add_rms_norm: h has shape \(2, 5\), expected \[\.\.\., features\] \(the shape of y\) = \(2, 6\)"),
    ("add-norm-h-rank", add_rms_norm, add_norm_args(h=zeros(DIM)), EPS, ValueError,
     r"h has shape \(6,\), expected \[\.\.\., features\] \(the shape of y\) = \(2, 6\)"),
    ("add-norm-scale-shape", add_rms_norm, add_norm_args(scale=zeros(DIM + 1)), EPS, ValueError,
     r"add_rms_norm: scale has shape \(7,\), expected \[features\] = \(6,\)"),
    ("add-norm-scale-missing", add_rms_norm, add_norm_args(scale=None), EPS, ValueError,
     r"add_rms_norm: scale is required, expected \[features\]"),
    ("add-norm-y-int32", add_rms_norm, add_norm_args(y=zeros(BATCH, DIM, dtype=jnp.int32)), EPS, TypeError,
     r"add_rms_norm: y has dtype int32, expected one of float32, bfloat16, float16"),
    ("add-norm-h-f16", add_rms_norm, add_norm_args(h=zeros(BATCH, DIM, dtype=jnp.float16)), EPS, TypeError,
     r"add_rms_norm: h has dtype float16, expected float32 or bfloat16 \(the dtype of y\)"),
    ("add-norm-scale-int32", add_rms_norm, add_norm_args(scale=zeros(DIM, dtype=jnp.int32)), EPS, TypeError,
     r"add_rms_norm: scale has dtype int32, expected a floating dtype"),
    ("add-norm-out-dtype", add_rms_norm, add_norm_args(), {**EPS, "out_dtype": jnp.float16}, TypeError,
     r"add_rms_norm: out_dtype is float16, expected float32 or bfloat16 \(the dtype of y\)"),
    ("add-norm-implementation", add_rms_norm, add_norm_args(), {**EPS, "implementation": "cuda"}, ValueError,
     r"add_rms_norm: implementation must be one of None, 'ffi', 'xla'; got 'cuda'"),
]


@pytest.mark.parametrize("op, args, options, exc, pattern", [pytest.param(*c[1:], id=c[0]) for c in CASES])
@pytest.mark.parametrize("implementation", [None, "ffi", "xla"], ids=["auto", "ffi", "xla"])
def test_python_checks(op, args, options, exc, pattern, implementation):
    options = {"implementation": implementation, **options}
    with pytest.raises(exc, match=pattern):
        op(**args, **options)
    # The same call under jit raises the same error at trace time.
    with pytest.raises(exc, match=pattern):
        jax.jit(lambda a: op(**a, **options))(args)


def test_float64_activations_rejected():
    """With x64 enabled a float64 array reaches the checks as float64 and is refused. (With x64 off,
    JAX itself turns NumPy float64 input into float32, as it does for every jnp function.)"""
    with jax.enable_x64(True):
        u = jnp.zeros((BATCH, SEQLEN, DIM), jnp.float64)
        with pytest.raises(TypeError, match=r"u has dtype float64, expected one of float32, bfloat16, float16"):
            selective_scan(**scan_args(u=u, delta=u))
        x = jnp.zeros((BATCH, DIM), jnp.float64)
        with pytest.raises(TypeError, match=r"x has dtype float64"):
            selective_state_update(**update_args(x=x, dt=x))
        with pytest.raises(TypeError, match=r"x has dtype float64"):
            causal_conv1d(**conv_args(x=u, initial_state=None))
        with pytest.raises(TypeError, match=r"x has dtype float64"):
            causal_conv1d_update(**conv_update_args(x=x, conv_state=zeros(BATCH, DIM, W - 1, dtype=jnp.float64)))


# The C++ handlers' own checks: raw ffi_call with inconsistent operands on the CPU device.
requires_cpu_ffi = pytest.mark.skipif(not ops.cpu_available(), reason="mamba_jax C++ CPU kernels are not built")


def _empty():
    return zeros(0)


def _sds(shape, dtype=F32):
    return jax.ShapeDtypeStruct(shape, dtype)


def raw_scan(u=None, delta=None, A=None, B=None, C=None, D=None, z=None, bias=None, init=None, y_shape=None):
    u = zeros(BATCH, SEQLEN, DIM) if u is None else u
    args = [u, zeros(BATCH, SEQLEN, DIM) if delta is None else delta, -jnp.ones((DIM, N)) if A is None else A,
            zeros(BATCH, SEQLEN, 1, N) if B is None else B, zeros(BATCH, SEQLEN, 1, N) if C is None else C,
            _empty() if D is None else D, _empty() if z is None else z, _empty() if bias is None else bias,
            _empty() if init is None else init]
    dstate = args[3].shape[-1]
    outs = (_sds(y_shape or u.shape, u.dtype), _sds((BATCH, DIM, dstate)))
    return "mamba_jax_selective_scan", args, outs, {"delta_softplus": False}


def raw_update(state=None, x=None, B=None, C=None, D=None):
    state = zeros(BATCH, DIM, N) if state is None else state
    x = zeros(BATCH, DIM) if x is None else x
    args = [state, x, zeros(BATCH, DIM), -jnp.ones((DIM, N)), zeros(BATCH, 1, N) if B is None else B,
            zeros(BATCH, 1, N) if C is None else C, _empty() if D is None else D, _empty(), _empty(),
            zeros(0, dtype=jnp.int32)]  # no state_indices
    outs = (_sds((BATCH, DIM), x.dtype), _sds(state.shape))
    return "mamba_jax_selective_state_update", args, outs, {"dt_softplus": False}


def raw_conv(x=None, weight=None, bias=None, init=None, seq_idx=None, final_shape=None):
    x = zeros(BATCH, SEQLEN, DIM) if x is None else x
    weight = zeros(DIM, W) if weight is None else weight
    args = [x, weight, _empty() if bias is None else bias, _empty() if init is None else init,
            zeros(0, dtype=jnp.int32) if seq_idx is None else seq_idx]
    outs = (_sds(x.shape, x.dtype), _sds(final_shape or (BATCH, DIM, weight.shape[-1] - 1), x.dtype))
    return "mamba_jax_causal_conv1d", args, outs, {"silu": False}


def raw_conv_update(x=None, state=None, weight=None):
    x = zeros(BATCH, DIM) if x is None else x
    weight = zeros(DIM, W) if weight is None else weight
    state = zeros(BATCH, DIM, W - 1) if state is None else state
    args = [x, state, weight, _empty(), zeros(0, dtype=jnp.int32)]  # no state_indices
    outs = (_sds(x.shape, x.dtype), _sds(state.shape, state.dtype))
    return "mamba_jax_causal_conv1d_update", args, outs, {"silu": False}


def raw_step(xz=None, x_proj=None, ssm_state=None, ws=None, state_indices=None, rows=BATCH):
    R = 2
    xz = zeros(BATCH, 2 * DIM) if xz is None else xz
    ssm_state = zeros(rows, DIM, N) if ssm_state is None else ssm_state
    args = [xz, zeros(rows, DIM, W - 1), zeros(DIM, W), _empty(), zeros(DIM, R + 2 * N) if x_proj is None else x_proj,
            zeros(R, DIM), zeros(DIM), -jnp.ones((DIM, N)), _empty(), ssm_state,
            zeros(0, dtype=jnp.int32) if state_indices is None else state_indices]
    j = R + 2 * N
    outs = (_sds((BATCH, DIM), xz.dtype), _sds((rows, DIM, W - 1), xz.dtype), _sds(ssm_state.shape),
            _sds((BATCH * (j + j + DIM) if ws is None else ws,)))
    return "mamba_jax_mamba1_step", args, outs, {}


def raw_add_norm(h=None, y=None, scale=None, h_new_dtype=None, x_dtype=BF16):
    y = zeros(BATCH, DIM, dtype=BF16) if y is None else y
    h = zeros(BATCH, DIM) if h is None else h
    args = [h, y, zeros(DIM) if scale is None else scale]
    outs = (_sds(h.shape, h_new_dtype or h.dtype), _sds(h.shape, x_dtype))
    return "mamba_jax_add_rms_norm", args, outs, {"eps": np.float32(1e-5)}


RAW_CASES = [
    ("scan-delta", raw_scan(delta=zeros(BATCH, 7, DIM)), r"delta has shape \[2, 7, 6\], expected \[2, 8, 6\]"),
    ("scan-A", raw_scan(A=zeros(5, N)), r"A has shape \[5, 4\], expected \[6, 4\]"),
    ("scan-B-rank", raw_scan(B=zeros(BATCH, SEQLEN, N)), r"B must be \[batch, seqlen, ngroups, dstate\], got \[2, 8, 4\]"),
    ("scan-C", raw_scan(C=zeros(BATCH, SEQLEN, 1, 3)), r"C has shape \[2, 8, 1, 3\], expected \[2, 8, 1, 4\]"),
    ("scan-ngroups", raw_scan(B=zeros(BATCH, SEQLEN, 4, N), C=zeros(BATCH, SEQLEN, 4, N)),
     r"ngroups = 4 \(B has shape \[2, 8, 4, 4\]\) must be >= 1 and divide dim = 6"),
    ("scan-dstate-0", raw_scan(A=zeros(DIM, 0), B=zeros(BATCH, SEQLEN, 1, 0), C=zeros(BATCH, SEQLEN, 1, 0)),
     r"dstate must be in \[1, 256\], got 0"),
    ("scan-dstate-257", raw_scan(A=zeros(DIM, 257), B=zeros(BATCH, SEQLEN, 1, 257), C=zeros(BATCH, SEQLEN, 1, 257)),
     r"dstate must be in \[1, 256\], got 257"),
    ("scan-D", raw_scan(D=zeros(5)), r"D has shape \[5\], expected \[6\]"),
    ("scan-z", raw_scan(z=zeros(BATCH, SEQLEN, 5)), r"z has shape \[2, 8, 5\], expected \[2, 8, 6\]"),
    ("scan-init", raw_scan(init=zeros(BATCH, DIM, 3)), r"initial_state has shape \[2, 6, 3\], expected \[2, 6, 4\]"),
    ("scan-y", raw_scan(y_shape=(BATCH, SEQLEN, 5)), r"y has shape \[2, 8, 5\], expected \[2, 8, 6\]"),
    ("scan-u-rank", raw_scan(u=zeros(BATCH, DIM)), r"u must have rank >= 3, got shape \[2, 6\]"),
    ("scan-u-int32", raw_scan(u=zeros(BATCH, SEQLEN, DIM, dtype=jnp.int32)),
     r"u has dtype s32, expected one of f32, bf16, f16"),
    ("scan-delta-bf16", raw_scan(delta=zeros(BATCH, SEQLEN, DIM, dtype=BF16)),
     r"delta has dtype bf16, expected f32 \(the dtype of u\)"),
    ("scan-A-bf16", raw_scan(A=zeros(DIM, N, dtype=BF16)), r"A has dtype bf16, expected f32"),
    ("scan-C-f16", raw_scan(C=zeros(BATCH, SEQLEN, 1, N, dtype=jnp.float16)),
     r"C has dtype f16, expected f32 \(the dtype of u\)"),
    ("update-ngroups", raw_update(B=zeros(BATCH, 4, N), C=zeros(BATCH, 4, N)),
     r"ngroups = 4 \(B has shape \[2, 4, 4\]\) must be >= 1 and divide dim = 6"),
    ("update-x", raw_update(x=zeros(BATCH, 5)), r"x has shape \[2, 5\], expected \[2, 6\]"),
    ("update-B", raw_update(B=zeros(BATCH, 1, 5)), r"B has shape \[2, 1, 5\], expected \[2, 1, 4\]"),
    ("update-B-rank", raw_update(B=zeros(BATCH, N)), r"B must be \[batch, ngroups, dstate\], got \[2, 4\]"),
    ("update-D", raw_update(D=zeros(DIM + 1)), r"D has shape \[7\], expected \[6\]"),
    ("update-state-bf16", raw_update(state=zeros(BATCH, DIM, N, dtype=BF16)), r"state has dtype bf16, expected f32"),
    ("update-dstate-0", raw_update(state=zeros(BATCH, DIM, 0)), r"dstate must be in \[1, 256\], got 0"),
    ("conv-width-1", raw_conv(weight=zeros(DIM, 1)), r"conv width must be in \[2, 8\], got 1"),
    ("conv-width-9", raw_conv(weight=zeros(DIM, 9)), r"conv width must be in \[2, 8\], got 9"),
    ("conv-weight-dim", raw_conv(weight=zeros(5, W)), r"weight has shape \[5, 4\], expected \[6, 4\]"),
    ("conv-bias", raw_conv(bias=zeros(5)), r"bias has shape \[5\], expected \[6\]"),
    ("conv-init", raw_conv(init=zeros(BATCH, DIM, 2)), r"initial_state has shape \[2, 6, 2\], expected \[2, 6, 3\]"),
    ("conv-final", raw_conv(final_shape=(BATCH, DIM, 2)), r"final_state has shape \[2, 6, 2\], expected \[2, 6, 3\]"),
    ("conv-seq_idx-shape", raw_conv(seq_idx=zeros(BATCH, SEQLEN + 1, dtype=jnp.int32)),
     r"seq_idx has shape \[2, 9\], expected \[2, 8\]"),
    ("conv-seq_idx-f32", raw_conv(seq_idx=zeros(BATCH, SEQLEN)), r"seq_idx has dtype f32, expected s32"),
    ("conv-init-bf16", raw_conv(init=zeros(BATCH, DIM, W - 1, dtype=BF16)),
     r"initial_state has dtype bf16, expected f32 \(the dtype of x\)"),
    ("conv-update-state", raw_conv_update(state=zeros(BATCH, DIM, 2)),
     r"conv_state has shape \[2, 6, 2\], expected \[2, 6, 3\]"),
    ("conv-update-width-9", raw_conv_update(weight=zeros(DIM, 9), state=zeros(BATCH, DIM, 8)),
     r"conv width must be in \[2, 8\], got 9"),
    ("conv-update-x-rank", raw_conv_update(x=zeros(DIM)), r"x must have rank >= 2, got shape \[6\]"),
    ("conv-update-state-f16", raw_conv_update(state=zeros(BATCH, DIM, W - 1, dtype=jnp.float16)),
     r"conv_state has dtype f16, expected f32 \(the dtype of x\)"),
    ("step-workspace", raw_step(ws=51), r"workspace has shape \[51\], expected \[52\]"),
    ("step-x_proj", raw_step(x_proj=zeros(DIM, 9)), r"x_proj has shape \[6, 9\], expected \[6, 10\]"),
    ("step-xz-odd", raw_step(xz=zeros(BATCH, 2 * DIM - 1)), r"its last axis must be 2 \* d_inner"),
    ("step-ssm-bf16", raw_step(ssm_state=zeros(BATCH, DIM, N, dtype=BF16)), r"ssm_state has dtype bf16, expected f32"),
    ("step-pool-not-aliased", raw_step(state_indices=jnp.asarray([2, 0], jnp.int32), rows=3),
     r"with state_indices the new conv_state must alias conv_state"),
    ("add-norm-h", raw_add_norm(h=zeros(BATCH, DIM - 1)), r"h has shape \[2, 5\], expected \[2, 6\]"),
    ("add-norm-scale", raw_add_norm(scale=zeros(DIM - 1)), r"scale has shape \[5\], expected \[6\]"),
    ("add-norm-y-rank", raw_add_norm(h=zeros(DIM), y=zeros(DIM, dtype=BF16)), r"y must have rank >= 2, got shape \[6\]"),
    ("add-norm-y-int32", raw_add_norm(y=zeros(BATCH, DIM, dtype=jnp.int32), x_dtype=F32),
     r"y has dtype s32, expected one of f32, bf16, f16"),
    ("add-norm-h-f16", raw_add_norm(h=zeros(BATCH, DIM, dtype=jnp.float16)),
     r"h has dtype f16, expected f32 or bf16 \(the dtype of y\)"),
    ("add-norm-scale-f16", raw_add_norm(scale=zeros(DIM, dtype=jnp.float16)),
     r"scale has dtype f16, expected f32 or bf16 \(the dtype of y\)"),
    ("add-norm-h_new-bf16", raw_add_norm(h_new_dtype=BF16), r"h_new has dtype bf16, expected f32 \(the dtype of h\)"),
    ("add-norm-x-f16", raw_add_norm(x_dtype=jnp.float16), r"x has dtype f16, expected f32 or bf16 \(the dtype of y\)"),
]


@requires_cpu_ffi
@pytest.mark.parametrize("call, pattern", [pytest.param(c[1], c[2], id=c[0]) for c in RAW_CASES])
def test_cpp_handler_checks(call, pattern):
    target, args, outs, attrs = call
    cpu = jax.devices("cpu")[0]
    args = [jax.device_put(a, cpu) for a in args]  # committed to the CPU: the CPU handler runs
    f = jax.ffi.ffi_call(target, outs)
    with pytest.raises(jax.errors.JaxRuntimeError, match=pattern):
        jax.block_until_ready(jax.jit(lambda *a: f(*a, **attrs))(*args))


@requires_cpu_ffi
def test_cpp_handler_accepts_consistent_raw_call():
    """The raw-call builders above are right when nothing is changed: the errors come from the change."""
    cpu = jax.devices("cpu")[0]
    for target, args, outs, attrs in (raw_scan(), raw_update(), raw_conv(), raw_conv_update(), raw_step(),
                                     raw_add_norm()):
        args = [jax.device_put(a, cpu) for a in args]
        out = jax.jit(lambda *a: jax.ffi.ffi_call(target, outs)(*a, **attrs))(*args)
        if target == "mamba_jax_mamba1_step":
            out = out[:-1]  # the last result is the kernel's scratch: parts of it are never written
        assert all(np.all(np.isfinite(np.asarray(o))) for o in out)
