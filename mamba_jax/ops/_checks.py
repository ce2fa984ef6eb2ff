"""Argument checks shared by the public ops: each raises before anything is traced into XLA.

Errors name the op, the argument, the shape or dtype received and the one expected, e.g.
``selective_scan: B has shape (2, 7, 3), expected [batch, seqlen, dstate] = (2, 8, 16)``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

# The same limits as the C++ checks (ffi/common).
MAX_DSTATE = 256
MIN_CONV_WIDTH = 2
MAX_CONV_WIDTH = 8

ACTIVATION_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)
IMPLEMENTATIONS = (None, "ffi", "xla")


def _shape(x) -> tuple:
    return tuple(np.shape(x))


def _dtype(x):
    return jnp.result_type(x)


def check_impl(op: str, implementation) -> None:
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"{op}: implementation must be one of None, 'ffi', 'xla'; got {implementation!r}")


def check_array(op: str, name: str, x, expected: tuple, labels: str) -> None:
    """`expected` may hold None for a free size; `labels` reads like "[batch, seqlen, dim]"."""
    if x is None:
        raise ValueError(f"{op}: {name} is required, expected {labels}")
    got = _shape(x)
    ok = len(got) == len(expected) and all(e is None or g == e for g, e in zip(got, expected))
    if not ok:
        want = tuple("?" if e is None else e for e in expected)
        raise ValueError(f"{op}: {name} has shape {got}, expected {labels} = {want}")


def check_rank(op: str, name: str, x, rank: int, labels: str) -> tuple:
    got = _shape(x)
    if len(got) != rank:
        raise ValueError(f"{op}: {name} has shape {got} (rank {len(got)}), expected rank {rank}: {labels}")
    return got


def check_activation_dtype(op: str, name: str, x, like=None, like_name: str = "") -> None:
    dt = _dtype(x)
    if like is not None:
        want = _dtype(like)
        if dt != want:
            raise TypeError(f"{op}: {name} has dtype {dt}, expected {want} (the dtype of {like_name})")
        return
    if dt not in [np.dtype(d) for d in ACTIVATION_DTYPES]:
        raise TypeError(f"{op}: {name} has dtype {dt}, expected one of float32, bfloat16, float16")


def check_float32_or(op: str, name: str, x, like_dtype, like_name: str) -> None:
    """x is float32 or `like_dtype` (the dtype of `like_name`)."""
    dt = _dtype(x)
    if dt not in (np.dtype(jnp.float32), np.dtype(like_dtype)):
        raise TypeError(f"{op}: {name} has dtype {dt}, expected float32 or {np.dtype(like_dtype)} "
                        f"(the dtype of {like_name})")


def check_float32(op: str, name: str, x) -> None:
    if _dtype(x) != np.dtype(jnp.float32):
        raise TypeError(f"{op}: {name} has dtype {_dtype(x)}, expected float32 (state is always float32)")


def as_param_f32(op: str, name: str, x):
    """Parameters (A, D, biases, conv weights) may come in any float dtype; math is fp32."""
    if x is None:
        return None
    if not jnp.issubdtype(_dtype(x), jnp.floating):
        raise TypeError(f"{op}: {name} has dtype {_dtype(x)}, expected a floating dtype (used as float32)")
    return jnp.asarray(x, jnp.float32)


def check_dstate(op: str, dstate: int, name: str | None = None, shape: tuple | None = None) -> None:
    if not 1 <= dstate <= MAX_DSTATE:
        where = f" ({name} has shape {tuple(shape)})" if name is not None else ""
        raise ValueError(f"{op}: dstate is {dstate}{where}, expected 1 <= dstate <= {MAX_DSTATE}")


def check_width(op: str, width: int, shape: tuple | None = None) -> None:
    if not MIN_CONV_WIDTH <= width <= MAX_CONV_WIDTH:
        where = f" (weight has shape {tuple(shape)})" if shape is not None else ""
        raise ValueError(f"{op}: weight width is {width}{where}, expected {MIN_CONV_WIDTH} <= width <= {MAX_CONV_WIDTH}")


def check_activation(op: str, activation) -> bool:
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"{op}: activation must be None or 'silu', got {activation!r}")
    return activation is not None


def check_groups(op: str, name: str, x, batch: int, seq: tuple, dim: int, dstate: int):
    """B/C given as [batch, *seq, dstate] or [batch, *seq, ngroups, dstate]; returns (x4, ngroups)."""
    got = _shape(x)
    base = (batch, *seq)
    seq_labels = ", ".join(["batch"] + (["seqlen"] if seq else []))
    if len(got) == len(base) + 1:
        check_array(op, name, x, base + (dstate,), f"[{seq_labels}, dstate]")
        return jnp.expand_dims(x, -2), 1
    if len(got) == len(base) + 2:
        ngroups = got[-2]
        check_array(op, name, x, base + (None, dstate), f"[{seq_labels}, ngroups, dstate]")
        if ngroups < 1 or dim % ngroups:
            raise ValueError(f"{op}: {name} has ngroups = {ngroups}, which must divide dim = {dim}")
        return x, ngroups
    raise ValueError(
        f"{op}: {name} has shape {got}, expected [{seq_labels}, dstate] or [{seq_labels}, ngroups, dstate] "
        f"with batch={batch}, dstate={dstate}"
    )


def check_bc(op: str, B, C, batch: int, seq: tuple, dim: int, dstate: int):
    """B and C of the Mamba-1 ops, each [batch, *seq, (ngroups,) dstate], of one shape; both as 4-d/3-d."""
    B, _ = check_groups(op, "B", B, batch, seq, dim, dstate)
    C, _ = check_groups(op, "C", C, batch, seq, dim, dstate)
    if np.shape(B) != np.shape(C):
        raise ValueError(f"{op}: B has shape {np.shape(B)} but C has shape {np.shape(C)}; they must match")
    return B, C


def check_skip_bias_gate(op: str, dim: int, D, bias_name: str, bias, z, z_shape: tuple, z_labels: str,
                         like, like_name: str):
    """The Mamba-1 ops' optional D and dt bias ([dim], as float32) and gate z (z_shape, dtype of `like`).
    Returns (D, bias, z)."""
    D = as_param_f32(op, "D", D)
    bias = as_param_f32(op, bias_name, bias)
    for name, v in (("D", D), (bias_name, bias)):
        if v is not None:
            check_array(op, name, v, (dim,), "[dim]")
    if z is not None:
        check_array(op, "z", z, z_shape, z_labels)
        check_activation_dtype(op, "z", z, like, like_name)
        z = jnp.asarray(z)
    return D, bias, z


def check_conv_weight(op: str, weight, bias, dim: int):
    """Conv weight [dim, width] and optional bias [dim], as float32; returns (weight, bias, width)."""
    weight = as_param_f32(op, "weight", weight)
    if weight is None or np.ndim(weight) != 2 or np.shape(weight)[0] != dim:
        raise ValueError(f"{op}: weight has shape {None if weight is None else np.shape(weight)}, "
                         f"expected [dim, width] with dim = {dim}")
    width = np.shape(weight)[1]
    check_width(op, width, np.shape(weight))
    bias = as_param_f32(op, "bias", bias)
    if bias is not None:
        check_array(op, "bias", bias, (dim,), "[dim]")
    return weight, bias, width


def check_seq_idx(op: str, seq_idx, num_sequences, return_final_state: bool, batch: int, seqlen: int):
    """Packed sequences of causal_conv1d and ssd_scan: seq_idx [batch, seqlen] of an integer dtype (cast
    to int32) or None; num_sequences, an int >= 1 whenever given, is required for per-sequence final
    states. Returns seq_idx as an int32 array (or None)."""
    if seq_idx is None:
        if num_sequences is not None:
            raise ValueError(f"{op}: num_sequences={num_sequences!r} was given without seq_idx")
        return None
    check_array(op, "seq_idx", seq_idx, (batch, seqlen), "[batch, seqlen]")
    dtype = np.dtype(getattr(seq_idx, "dtype", None) or np.asarray(seq_idx).dtype)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"{op}: seq_idx has dtype {dtype}, expected int32 (any integer dtype is cast)")
    if num_sequences is None and return_final_state:
        raise ValueError(f"{op}: return_final_state with seq_idx needs num_sequences (a static int >= 1: the "
                         f"final states are [batch, num_sequences, ...])")
    if num_sequences is not None and (isinstance(num_sequences, bool)
                                      or not isinstance(num_sequences, (int, np.integer)) or num_sequences < 1):
        raise ValueError(f"{op}: num_sequences must be an int >= 1, got {num_sequences!r}")
    return jnp.asarray(seq_idx, jnp.int32)
