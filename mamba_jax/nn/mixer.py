"""The Mamba-1 mixer (selective SSM block) as a Flax NNX module, on top of mamba_jax.ops, and the base
class and initialisers it shares with the Mamba-2 mixer (mamba2.py).

Shape legend: b batch, l seqlen, d d_model, e d_inner (= expand * d_model), n d_state, r dt_rank,
w d_conv.  Activations are in the module's dtype (float32, bfloat16 or float16); the SSM state,
A_log, D and the dt bias are always float32.
"""

from __future__ import annotations

import math
import os
from typing import Optional, Union

import jax
import jax.numpy as jnp
from flax import nnx

from .. import ops
from ..ops.linear import kernel_applies

f32 = jnp.float32

# dt at a masked prefill's padded positions: softplus(PAD_DT + bias) is exactly 0 in float32 (exp
# underflows) for any dt_bias below ~9900 (Mamba initialises it to softplus^-1 of a step in [1e-3, 0.1],
# about [-7, -2.3]). It is finite in every activation dtype, so no infinity arises on the way (a
# fast-math exp, as on Metal, need not handle -inf).
PAD_DT = -1e4

# torch.nn.Linear / Conv1d's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), which the reference keeps.
_torch_default_init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _uniform(bound: float):
    def init(key, shape, dtype=f32):
        return jax.random.uniform(key, shape, f32, -bound, bound).astype(dtype)
    return init


def default_precision(precision, dtype, param_dtype):
    """The matmul precision of a module: `precision` when given; else HIGHEST when the module computes
    in float32 (its dtype, or param_dtype when dtype is None), so that float32 models get float32
    matmuls on GPUs too (JAX's default there is TF32-like); else None (the backend default)."""
    if precision is not None:
        return precision
    compute = jnp.dtype(param_dtype if dtype is None else dtype)
    return jax.lax.Precision.HIGHEST if compute == jnp.float32 else None


def inverse_softplus_dt_init(key, shape, dt_min: float, dt_max: float, dt_init_floor: float):
    """dt log-uniform in [dt_min, dt_max] (at least dt_init_floor), returned as softplus^-1(dt), float32:
    the reference initialisation of the dt bias."""
    u = jax.random.uniform(key, shape, f32)
    dt = jnp.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = jnp.maximum(dt, dt_init_floor)
    return dt + jnp.log(-jnp.expm1(-dt))


class MixerBase(nnx.Module):
    """What the Mamba-1 and Mamba-2 mixers share: the implementation choice, the conv parameters,
    A = -exp(A_log), the per-decode-loop constants and the projections' application. Subclasses set
    in_proj, conv_weight, conv_bias, A_log, dtype and implementation."""

    # Set by mamba_jax.sharding on the per-device copy of a tensor-parallel model: the mesh axis the
    # mixer's channels are split over. The projections that contract over those channels (out_proj,
    # and Mamba-1's x_proj) then give partial sums, which `_sum_shards` adds up across that axis.
    tp_axis = None

    def _impl(self, implementation):
        return self.implementation if implementation is ... else implementation

    def _sum_shards(self, x):
        return x if self.tp_axis is None else jax.lax.psum(x, self.tp_axis)

    def _conv_params(self):
        return self.conv_weight[...], (None if self.conv_bias is None else self.conv_bias[...])

    def _A(self):
        return -jnp.exp(self.A_log[...].astype(f32))

    @staticmethod
    def _conv_inputs(xi, mask, conv_state):
        """The conv's input and initial state for a (LEFT-padded) chunk that continues from conv_state.

        xi [b, l, c]; mask [b, l] bool or None; conv_state [b, c, w-1] (the inputs before the chunk,
        oldest first) or None (zeros). Padded inputs are zero, and a row's previous inputs are placed
        right before its first real position, so every real position's window sees exactly the
        inputs of its unpadded sequence and the final state is that of the unpadded sequence too.
        Returns (x [b, l, c], initial_state [b, c, w-1] or None). Elementwise selects only."""
        if mask is None:
            return xi, conv_state
        zero = jnp.zeros((), xi.dtype)
        xi = jnp.where(mask[..., None], xi, zero)
        if conv_state is None:
            return xi, None
        k, l = conv_state.shape[-1], xi.shape[1]
        conv_state = conv_state.astype(xi.dtype)
        pads = l - jnp.sum(mask, axis=1, dtype=jnp.int32)  # [b]
        # Previous input j goes to position pads - k + j: in the chunk when >= 0, else in the initial state.
        t = jnp.arange(l, dtype=jnp.int32)
        cols = []
        for j in range(k):
            at = t[None, :] == (pads - k + j)[:, None]  # [b, l]
            xi = jnp.where(at[..., None], conv_state[:, None, :, j], xi)
        for i in range(k):
            col = jnp.zeros_like(conv_state[..., 0])
            for j in range(k):
                col = jnp.where((i - k == pads - k + j)[:, None], conv_state[..., j], col)
            cols.append(col)
        return xi, jnp.stack(cols, axis=-1)

    @staticmethod
    def _linear(lin, x):
        """`lin(x)`, nnx.Linear's numerics."""
        return lin(x)

    @staticmethod
    def _decode_linear(impl):
        """For decode steps: nnx.Linear `lin` applied through ops.linear (its CUDA GEMV kernel) where
        that kernel applies (see ops.linear.kernel_applies: small dots that XLA would split into a
        multiply + reduce reading the weights three times), else `lin(x)` as in the forward pass."""
        if impl == "xla":
            return MixerBase._linear

        def apply(lin, x):
            dtype = lin.dtype or jnp.result_type(x, lin.kernel[...])
            x, k = x.astype(dtype), lin.kernel[...].astype(dtype)
            if not kernel_applies(x, k):
                return lin(x)
            y = ops.linear(x, k, implementation=impl)
            return y if lin.bias is None else y + lin.bias[...].astype(dtype)
        return apply

    def _project(self, x, proj=None):
        """in_proj(x) in the activation dtype. x [..., d]."""
        if self.dtype is not None:
            x = x.astype(self.dtype)
        return (proj or self._linear)(self.in_proj, x)

    def step_constants(self):
        """The float32 values every decode step derives from the parameters alone: (A = -exp(A_log),
        conv weight, conv bias or None). A decode loop computes them once, outside the loop, and passes
        them to `step` (XLA does not hoist them out of a while loop by itself: the H200 profile showed
        three extra kernels per layer per token, the negate-exp and two float32 casts)."""
        w, b = self._conv_params()
        return (self._A(), w.astype(f32), None if b is None else b.astype(f32))


def use_fused_step(impl, batch: int, *, every_batch: bool = False) -> bool:
    """Whether a mixer's decode step runs its fused op instead of its unfused ops: `MambaMixer.step`
    `ops.mamba1_step`, `Mamba2Mixer.step` `ops.mamba2_step` (neither when the mixer is tensor-parallel).

    The environment variable MAMBA_JAX_FUSED_STEP, read when the step is traced: "auto" (the default) runs
    the fused op on a GPU, at batch 1 only unless `every_batch`; "1" runs it at every batch and on every
    backend, "0" never. `implementation="xla"` always runs the unfused ops. mamba1_step is faster than the
    unfused step at batch 1 only (its x_proj and dt_proj run on CUDA cores, which XLA runs as GEMMs from
    batch 4 on); mamba2_step runs the unfused ops' own kernels, with one launch's latency hidden, so
    Mamba2Mixer passes every_batch=True (H200 measurements: benchmarks/NOTES-cuda.md, "Session 10" and
    "Session 11")."""
    mode = os.environ.get("MAMBA_JAX_FUSED_STEP", "auto")
    if mode not in ("auto", "0", "1"):
        raise ValueError(f"MAMBA_JAX_FUSED_STEP must be auto, 0 or 1, got {mode!r}")
    if impl == "xla" or mode == "0":
        return False
    return mode == "1" or ((batch == 1 or every_batch) and jax.default_backend() == "gpu")


class MambaMixer(MixerBase):
    """Mamba-1 block: in_proj -> causal conv1d + SiLU -> x_proj -> dt_proj -> selective scan
    (with D skip and SiLU(z) gating) -> out_proj.

    Drops into any NNX model. ``mixer(x)`` maps [b, l, d] -> [b, l, d]; ``mixer.step`` runs one token
    against a (conv_state, ssm_state) pair, for decoding.

    Parameters (names match the checkpoint layout after transposition):
      in_proj.kernel [d, 2e] (+ bias [2e] when bias); conv_weight [e, w]; conv_bias [e] when conv_bias;
      x_proj.kernel [e, r + 2n]; dt_proj.kernel [r, e]; dt_bias [e] f32; A_log [e, n] f32; D [e] f32;
      out_proj.kernel [e, d] (+ bias [d]).

    Args:
      d_model: input and output width.
      d_state, d_conv, expand, dt_rank, conv_bias, bias: sizes and options, as in `MambaConfig`.
      dt_min, dt_max, dt_init, dt_scale, dt_init_floor: dt_proj initialisation (the reference's:
        dt log-uniform in [dt_min, dt_max], dt_bias = softplus^-1(dt)); A_log = log(1..n), D = 1.
      dtype: activation dtype (None: that of the input promoted with the parameters).
      param_dtype: dtype of the projection and conv parameters.
      precision: matmul precision passed to the projections (None: HIGHEST when computing in float32,
        see `default_precision`; the backend default otherwise).
      implementation: None | "ffi" | "xla", passed to every op call (can be overridden per call).
      rngs: nnx.Rngs for the initialisation.
    """

    def __init__(self, d_model: int, *, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: Union[int, str] = "auto", conv_bias: bool = True, bias: bool = False,
                 dt_min: float = 0.001, dt_max: float = 0.1, dt_init: str = "random", dt_scale: float = 1.0,
                 dt_init_floor: float = 1e-4, dtype=None, param_dtype=f32, precision=None,
                 implementation: Optional[str] = None, rngs: nnx.Rngs):
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.dtype = dtype
        self.implementation = implementation
        e, n, r = self.d_inner, d_state, self.dt_rank
        lin = dict(dtype=dtype, param_dtype=param_dtype, precision=default_precision(precision, dtype, param_dtype),
                   rngs=rngs)

        self.in_proj = nnx.Linear(d_model, 2 * e, use_bias=bias, kernel_init=_torch_default_init, **lin)
        self.conv_weight = nnx.Param(_uniform(1.0 / math.sqrt(d_conv))(rngs.params(), (e, d_conv), param_dtype))
        self.conv_bias = (nnx.Param(_uniform(1.0 / math.sqrt(d_conv))(rngs.params(), (e,), param_dtype))
                          if conv_bias else None)
        self.x_proj = nnx.Linear(e, r + 2 * n, use_bias=False, kernel_init=_torch_default_init, **lin)

        dt_std = r ** -0.5 * dt_scale
        dt_kernel_init = (nnx.initializers.constant(dt_std) if dt_init == "constant" else _uniform(dt_std))
        self.dt_proj = nnx.Linear(r, e, use_bias=False, kernel_init=dt_kernel_init, **lin)
        self.dt_bias = nnx.Param(inverse_softplus_dt_init(rngs.params(), (e,), dt_min, dt_max, dt_init_floor))

        self.A_log = nnx.Param(jnp.log(jnp.broadcast_to(jnp.arange(1, n + 1, dtype=f32), (e, n))))
        self.D = nnx.Param(jnp.ones((e,), f32))
        self.out_proj = nnx.Linear(e, d_model, use_bias=bias, kernel_init=_torch_default_init, **lin)

    def _in_proj(self, x, proj=None):
        """x [..., d] -> (conv input xi [..., e], gate z [..., e]), in the activation dtype."""
        xz = self._project(x, proj)
        return xz[..., :self.d_inner], xz[..., self.d_inner:]

    def _in_proj_halves(self, x):
        """The forward pass's in_proj: (xi, z) as two products, over the kernel's x and z column halves.
        Each product is written contiguous where the conv and scan kernels read it; slicing one
        [..., 2e] product would copy both halves out again (about 100 us per 8192-token chunk of a
        mamba-2.8b layer on the H200). nnx.Linear's numerics: its dtype promotion, precision, bias."""
        lin, e = self.in_proj, self.d_inner
        if self.dtype is not None:
            x = x.astype(self.dtype)
        bias = None if lin.bias is None else lin.bias[...]
        x, k, bias = lin.promote_dtype((x, lin.kernel[...], bias), dtype=lin.dtype)
        pet = getattr(lin, "preferred_element_type", None)
        kw = {} if pet is None else {"preferred_element_type": pet}

        def half(cols):
            y = lin.dot_general(x, k[:, cols], (((x.ndim - 1,), (0,)), ((), ())), precision=lin.precision, **kw)
            return y if bias is None else y + bias[cols]
        return half(slice(0, e)), half(slice(e, 2 * e))

    def _ssm_inputs(self, xc, proj=None):
        """xc [..., e] -> (dt before bias [..., e], B [..., n], C [..., n]), all in xc's dtype."""
        proj = proj or self._linear
        x_dbl = self._sum_shards(proj(self.x_proj, xc)).astype(xc.dtype)
        r, n = self.dt_rank, self.d_state
        dt_low, B, C = x_dbl[..., :r], x_dbl[..., r:r + n], x_dbl[..., r + n:]
        return proj(self.dt_proj, dt_low).astype(xc.dtype), B, C

    def init_state(self, batch: int, dtype=None):
        """Zero decode state: (conv_state [b, e, w-1] in `dtype` (default self.dtype or float32),
        ssm_state [b, e, n] float32)."""
        dtype = dtype or self.dtype or f32
        return (jnp.zeros((batch, self.d_inner, self.d_conv - 1), dtype),
                jnp.zeros((batch, self.d_inner, self.d_state), f32))

    def __call__(self, x, mask=None, *, return_state: bool = False, initial_state=None, implementation=...):
        """Full-sequence forward.

        Args:
          x: [b, l, d] activations.
          mask: optional [b, l] bool, True at real tokens. Padded positions leave the state untouched
            (their conv input is zeroed and their dt is 0), so a LEFT-padded row gives exactly the
            outputs and final state of the unpadded sequence. Outputs at padded positions are junk.
          return_state: also return (conv_state [b, e, w-1] in the activation dtype,
            ssm_state [b, e, n] float32), the state after the last position, from the ops.
          initial_state: optional (conv_state, ssm_state) as returned with return_state or by `step`:
            the sequence continues from it (with a mask, from each row's first real position).
          implementation: None | "ffi" | "xla"; default self.implementation.

        Returns:
          y [b, l, d] in the activation dtype, or (y, (conv_state, ssm_state)).
        """
        impl = self._impl(implementation)
        conv0, ssm0 = (None, None) if initial_state is None else initial_state
        xi, z = self._in_proj_halves(x)
        act_dtype = xi.dtype
        xi, conv0 = self._conv_inputs(xi, mask, None if conv0 is None else conv0.astype(act_dtype))
        w, b = self._conv_params()
        xc, conv_state = ops.causal_conv1d(xi, w, b, activation="silu", initial_state=conv0,
                                           return_final_state=True, implementation=impl)
        dt, B, C = self._ssm_inputs(xc)
        A, D, dt_bias = self._A(), self.D[...], self.dt_bias[...]
        if mask is not None:
            # Padded positions get dt = PAD_DT, whose softplus(dt + bias) is exactly 0 in every
            # implementation: exp(0 * A) = 1 and 0 * B * u = 0 leave the state as it was. One select in
            # the activation dtype; the scan applies the bias and softplus itself, as without a mask.
            dt = jnp.where(mask[..., None], dt, jnp.asarray(PAD_DT, dt.dtype))
        y, ssm_state = ops.selective_scan(xc, dt, A, B, C, D, z, dt_bias, delta_softplus=True,
                                          initial_state=ssm0, return_last_state=True, implementation=impl)
        out = self._sum_shards(self.out_proj(y)).astype(act_dtype)
        return (out, (conv_state, ssm_state)) if return_state else out

    def step(self, x, conv_state, ssm_state, *, implementation=..., constants=None, state_indices=None):
        """One decode step (state_indices: optional [b] int32 slots when the states are pools, see
        `ops.selective_state_update`).

        Args:
          x: [b, d] activations of the new token.
          conv_state: [b, e, w-1] in the activation dtype (previous conv inputs, oldest first).
          ssm_state: [b, e, n] float32.
          constants: `step_constants()`, computed once per decode loop (None: computed here).

        Returns:
          (y [b, d], new conv_state, new ssm_state).
        """
        impl = self._impl(implementation)
        A, w, b = self.step_constants() if constants is None else constants
        proj = self._decode_linear(impl)
        if self.tp_axis is None and use_fused_step(impl, x.shape[0]):
            xz = self._project(x, proj)
            act_dtype = xz.dtype
            y, conv_state, ssm_state = ops.mamba1_step(
                xz, conv_state.astype(act_dtype), ssm_state, w, b, self.x_proj.kernel[...], self.dt_proj.kernel[...],
                self.dt_bias[...], A, self.D[...], state_indices=state_indices, implementation=impl)
            return proj(self.out_proj, y).astype(act_dtype), conv_state, ssm_state
        xi, z = self._in_proj(x, proj)
        act_dtype = xi.dtype
        xc, conv_state = ops.causal_conv1d_update(xi, conv_state.astype(act_dtype), w, b, activation="silu",
                                                  state_indices=state_indices, implementation=impl)
        dt, B, C = self._ssm_inputs(xc, proj)
        y, ssm_state = ops.selective_state_update(ssm_state, xc, dt, A, B, C, self.D[...], z,
                                                  self.dt_bias[...], dt_softplus=True, state_indices=state_indices,
                                                  implementation=impl)
        return self._sum_shards(proj(self.out_proj, y)).astype(act_dtype), conv_state, ssm_state
