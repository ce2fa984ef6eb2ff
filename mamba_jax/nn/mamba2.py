"""The Mamba-2 mixer (SSD block) as a Flax NNX module, on top of mamba_jax.ops.

Shape legend: b batch, l seqlen, d d_model, e d_inner (= expand * d_model = h * p), h nheads,
p headdim, g ngroups, n d_state, w d_conv, c conv channels (= e + 2 g n: x, B and C).
Activations are in the module's dtype (float32, bfloat16 or float16); the SSM state, A_log, D and
the dt bias are always float32.
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from .. import ops
from ..ops.elementwise import softplus
from ..ops.mamba2_step import split_xbc
from .mixer import (MixerBase, _torch_default_init, _uniform, default_precision, inverse_softplus_dt_init,
                    use_fused_step)
from .norm import RMSNorm

f32 = jnp.float32
_INF = float("inf")


class Mamba2Mixer(MixerBase):
    """Mamba-2 block: in_proj -> (z, xBC, dt); causal conv1d + SiLU over xBC; split into x, B, C;
    SSD scan (dt = clip(softplus(dt + dt_bias), *dt_limit), D skip); RMSNorm(y * silu(z)) per group of
    e / g channels; out_proj.

    Drops into any NNX model like `MambaMixer`. ``mixer(x)`` maps [b, l, d] -> [b, l, d];
    ``mixer.step`` runs one token against a (conv_state, ssm_state) pair, for decoding.

    Parameters (names match the checkpoint layout after transposition):
      in_proj.kernel [d, e + c + h] (columns: z, then x B C, then dt; + bias when bias);
      conv_weight [c, w]; conv_bias [c] when conv_bias; dt_bias [h] f32; A_log [h] f32;
      D [h] f32 ([e] when D_has_hdim); norm.scale [e] when gated_norm; out_proj.kernel [e, d] (+ bias [d]).

    Args:
      d_model: input and output width.
      d_state: SSM state size n per head channel.
      d_conv: conv width w.
      expand: e = expand * d_model.
      headdim: channels per head p (must divide e); h = e / p.
      ngroups: groups g of B and C (must divide h); head i uses group i // (h / g). Also the groups
        of the gated RMSNorm.
      chunk_size: chunk length of the SSD scan (speed only).
      conv_bias, bias: the conv has a bias; in_proj and out_proj have biases.
      dt_limit: (lo, hi) clip of dt after the softplus.
      gated_norm: RMSNorm(y * silu(z)) before out_proj; False: y * silu(z) (inside the scan), no norm.
      norm_before_gate: with gated_norm, RMSNorm(y) * silu(z) instead.
      norm_eps: epsilon of the gated RMSNorm.
      D_has_hdim: D per channel ([e]) instead of per head ([h]).
      dt_min, dt_max, dt_init_floor: dt_bias = softplus^-1(dt), dt log-uniform in [dt_min, dt_max].
      A_init_range: A_log = log(A), A uniform in this range; D = 1.
      dtype: activation dtype (None: that of the input promoted with the parameters).
      param_dtype: dtype of the projection, conv and norm parameters.
      precision: matmul precision of the projections (None: HIGHEST when computing in float32).
      implementation: None | "ffi" | "xla", passed to every op call (can be overridden per call).
      rngs: nnx.Rngs for the initialisation.
    """

    def __init__(self, d_model: int, *, d_state: int = 128, d_conv: int = 4, expand: int = 2, headdim: int = 64,
                 ngroups: int = 1, chunk_size: int = 256, conv_bias: bool = True, bias: bool = False,
                 dt_limit: tuple = (0.0, _INF), gated_norm: bool = True, norm_before_gate: bool = False,
                 norm_eps: float = 1e-5, D_has_hdim: bool = False, dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4, A_init_range: tuple = (1.0, 16.0), dtype=None, param_dtype=f32,
                 precision=None, implementation: Optional[str] = None, rngs: nnx.Rngs):
        e = expand * d_model
        if e % headdim:
            raise ValueError(f"Mamba2Mixer: d_inner = expand * d_model = {e} is not a multiple of headdim {headdim}")
        h = e // headdim
        if h % ngroups:
            raise ValueError(f"Mamba2Mixer: nheads = {h} is not a multiple of ngroups {ngroups}")
        self.d_model, self.d_state, self.d_conv, self.d_inner = d_model, d_state, d_conv, e
        self.headdim, self.nheads, self.ngroups, self.chunk_size = headdim, h, ngroups, chunk_size
        self.conv_dim = e + 2 * ngroups * d_state
        self.dt_limit = tuple(float(v) for v in dt_limit)
        self.gated_norm = gated_norm
        self.dtype = dtype
        self.implementation = implementation
        lin = dict(dtype=dtype, param_dtype=param_dtype, precision=default_precision(precision, dtype, param_dtype),
                   rngs=rngs)

        self.in_proj = nnx.Linear(d_model, e + self.conv_dim + h, use_bias=bias, kernel_init=_torch_default_init,
                                  **lin)
        bound = 1.0 / math.sqrt(d_conv)
        self.conv_weight = nnx.Param(_uniform(bound)(rngs.params(), (self.conv_dim, d_conv), param_dtype))
        self.conv_bias = (nnx.Param(_uniform(bound)(rngs.params(), (self.conv_dim,), param_dtype))
                          if conv_bias else None)
        self.dt_bias = nnx.Param(inverse_softplus_dt_init(rngs.params(), (h,), dt_min, dt_max, dt_init_floor))
        lo, hi = A_init_range
        self.A_log = nnx.Param(jnp.log(jax.random.uniform(rngs.params(), (h,), f32, lo, hi)))
        self.D = nnx.Param(jnp.ones((e if D_has_hdim else h,), f32))
        self.norm = (RMSNorm(e, eps=norm_eps, group_size=e // ngroups, norm_before_gate=norm_before_gate,
                             dtype=dtype, param_dtype=param_dtype) if gated_norm else None)
        self.out_proj = nnx.Linear(e, d_model, use_bias=bias, kernel_init=_torch_default_init, **lin)

    def _D(self):
        """D as the ops take it: [h] or [h, p] float32."""
        D = self.D[...].astype(f32)
        return D.reshape(self.nheads, self.headdim) if D.shape[0] != self.nheads else D

    def _split(self, zxbcdt):
        """in_proj output [..., e + c + h] -> (z [..., e], xBC [..., c], dt [..., h])."""
        e, c = self.d_inner, self.conv_dim
        return zxbcdt[..., :e], zxbcdt[..., e:e + c], zxbcdt[..., e + c:]

    def _heads(self, xBC):
        """conv output [..., c] -> (x [..., h, p], B [..., g, n], C [..., g, n])."""
        return split_xbc(xBC, self.nheads, self.headdim, self.d_state)

    def _output(self, y, z, proj):
        """Scan output y [..., h, p] -> gated norm -> out_proj -> [..., d] in z's dtype."""
        y = y.reshape(*y.shape[:-2], self.d_inner)
        if self.norm is not None:
            y = self.norm(y, z)
        return self._sum_shards(proj(self.out_proj, y)).astype(z.dtype)

    def _scan_gate(self, z):
        """z [..., e] as the scan's gate [..., h, p] when there is no gated norm (else None)."""
        return None if self.norm is not None else z.reshape(*z.shape[:-1], self.nheads, self.headdim)

    def init_state(self, batch: int, dtype=None):
        """Zero decode state: (conv_state [b, c, w-1] in `dtype` (default self.dtype or float32),
        ssm_state [b, h, p, n] float32)."""
        dtype = dtype or self.dtype or f32
        return (jnp.zeros((batch, self.conv_dim, self.d_conv - 1), dtype),
                jnp.zeros((batch, self.nheads, self.headdim, self.d_state), f32))

    def __call__(self, x, mask=None, *, return_state: bool = False, initial_state=None, implementation=...):
        """Full-sequence forward.

        Args:
          x: [b, l, d] activations.
          mask: optional [b, l] bool, True at real tokens. Padded positions leave the state untouched
            (their conv input is zeroed and their dt is 0), so a LEFT-padded row gives exactly the
            outputs and final state of the unpadded sequence. Outputs at padded positions are junk.
          return_state: also return (conv_state [b, c, w-1] in the activation dtype,
            ssm_state [b, h, p, n] float32), the state after the last position, from the ops.
          initial_state: optional (conv_state, ssm_state) as returned with return_state or by `step`:
            the sequence continues from it (with a mask, from each row's first real position).
          implementation: None | "ffi" | "xla"; default self.implementation.

        Returns:
          y [b, l, d] in the activation dtype, or (y, (conv_state, ssm_state)).
        """
        impl = self._impl(implementation)
        conv0, ssm0 = (None, None) if initial_state is None else initial_state
        z, xBC, dt = self._split(self._project(x))
        act_dtype = xBC.dtype
        xBC, conv0 = self._conv_inputs(xBC, mask, None if conv0 is None else conv0.astype(act_dtype))
        w, b = self._conv_params()
        xBC, conv_state = ops.causal_conv1d(xBC, w, b, activation="silu", initial_state=conv0,
                                            return_final_state=True, implementation=impl)
        xs, B, C = self._heads(xBC)
        common = dict(chunk_size=self.chunk_size, D=self._D(), z=self._scan_gate(z), initial_state=ssm0,
                      return_final_state=True, implementation=impl)
        if mask is None:
            y, ssm_state = ops.ssd_scan(xs, dt, self._A(), B, C, dt_bias=self.dt_bias[...], dt_softplus=True,
                                        dt_limit=self.dt_limit, **common)
        else:
            # dt = 0 at padded positions: exp(0 * A) = 1 and dt * x * B = 0 leave the state as it was.
            lo, hi = self.dt_limit
            dt = jnp.clip(softplus(dt.astype(f32) + self.dt_bias[...].astype(f32)), lo, hi)
            dt = dt * mask[..., None].astype(f32)
            y, ssm_state = ops.ssd_scan(xs, dt.astype(act_dtype), self._A(), B, C, **common)
        out = self._output(y, z, self._linear)
        return (out, (conv_state, ssm_state)) if return_state else out

    def step(self, x, conv_state, ssm_state, *, implementation=..., constants=None, state_indices=None):
        """One decode step (state_indices: optional [b] int32 slots when the states are pools, see
        `ops.ssd_state_update`).

        Args:
          x: [b, d] activations of the new token.
          conv_state: [b, c, w-1] in the activation dtype (previous conv inputs, oldest first).
          ssm_state: [b, h, p, n] float32.
          constants: `step_constants()`, computed once per decode loop (None: computed here).

        Returns:
          (y [b, d], new conv_state, new ssm_state).
        """
        impl = self._impl(implementation)
        A, w, b = self.step_constants() if constants is None else constants
        proj = self._decode_linear(impl)
        z, xBC, dt = self._split(self._project(x, proj))
        conv_state = conv_state.astype(xBC.dtype)
        if self.tp_axis is None and use_fused_step(impl, x.shape[0], every_batch=True):
            y, conv_state, ssm_state = ops.mamba2_step(
                xBC, dt, conv_state, ssm_state, w, b, A, self._D(), self.dt_bias[...], self._scan_gate(z),
                dt_limit=self.dt_limit, state_indices=state_indices, implementation=impl)
            return self._output(y, z, proj), conv_state, ssm_state
        xBC, conv_state = ops.causal_conv1d_update(xBC, conv_state, w, b, activation="silu",
                                                   state_indices=state_indices, implementation=impl)
        xs, B, C = self._heads(xBC)
        y, ssm_state = ops.ssd_state_update(ssm_state, xs, dt, A, B, C, self._D(), self._scan_gate(z),
                                            self.dt_bias[...], dt_softplus=True, dt_limit=self.dt_limit,
                                            state_indices=state_indices, implementation=impl)
        return self._output(y, z, proj), conv_state, ssm_state
