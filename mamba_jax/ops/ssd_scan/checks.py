"""Argument checks shared by `ssd_scan` and `ssd_state_update` (the Mamba-2 ops)."""

from __future__ import annotations

import math

import numpy as np

from .. import _checks as ck
from .xla import per_channel_D


def check_dt_limit(op: str, dt_limit) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in dt_limit)
    except (TypeError, ValueError):
        raise ValueError(f"{op}: dt_limit must be a pair of floats (dt_min, dt_max), got {dt_limit!r}") from None
    if math.isnan(lo) or math.isnan(hi) or lo > hi:
        raise ValueError(f"{op}: dt_limit = {dt_limit!r}, expected dt_min <= dt_max")
    return lo, hi


def check_bc(op: str, B, C, x, lead: tuple, labels: str, nheads: int):
    """B and C [*lead, ngroups, dstate] of one shape and x's dtype, ngroups dividing nheads.

    `labels` names the lead axes, e.g. "batch, seqlen". Returns (ngroups, dstate)."""
    for name, v in (("B", B), ("C", C)):
        ck.check_rank(op, name, v, len(lead) + 2, f"[{labels}, ngroups, dstate]")
        ck.check_array(op, name, v, lead + (None, None), f"[{labels}, ngroups, dstate]")
    if np.shape(B) != np.shape(C):
        raise ValueError(f"{op}: B has shape {np.shape(B)} but C has shape {np.shape(C)}; they must match")
    ngroups, dstate = np.shape(B)[-2:]
    if ngroups < 1 or nheads % ngroups:
        raise ValueError(f"{op}: B has shape {np.shape(B)}: ngroups = {ngroups} must divide nheads = {nheads}")
    ck.check_dstate(op, dstate, "B", np.shape(B))
    ck.check_activation_dtype(op, "B", B, x, "x")
    ck.check_activation_dtype(op, "C", C, x, "x")
    return ngroups, dstate


def check_params(op: str, A, D, dt_bias, nheads: int, headdim: int):
    """A [nheads], D [nheads] or [nheads, headdim], dt_bias [nheads], any float dtype, as float32;
    D is returned broadcast to [nheads, headdim]."""
    A = ck.as_param_f32(op, "A", A)
    ck.check_array(op, "A", A, (nheads,), "[nheads]")
    D = ck.as_param_f32(op, "D", D)
    if D is not None and np.shape(D) not in ((nheads,), (nheads, headdim)):
        raise ValueError(f"{op}: D has shape {np.shape(D)}, expected [nheads] = ({nheads},) or "
                         f"[nheads, headdim] = ({nheads}, {headdim})")
    dt_bias = ck.as_param_f32(op, "dt_bias", dt_bias)
    if dt_bias is not None:
        ck.check_array(op, "dt_bias", dt_bias, (nheads,), "[nheads]")
    return A, per_channel_D(D, nheads, headdim), dt_bias
