"""Running mamba_jax over several devices: data parallelism (batch) and tensor parallelism (channels).

    mesh = sharding.make_mesh(data=2, model=4)              # 8 devices: batch over 2, channels over 4
    model = sharding.shard_model(from_pretrained(...), mesh)  # or sharding.init_model(cfg, mesh, ...)
    logits = model(input_ids)                                 # input_ids [b, l], b a multiple of `data`
    tokens = mamba_jax.generate(model, prompts, max_new_tokens=64)

Everything runs inside one `jax.shard_map` per model call, so every op (FFI kernel or pure JAX) sees
only its device's rows and channels: nothing is all-gathered behind the kernels' backs. The mesh has
two axes, DATA ("data") and MODEL ("model"):

  * DATA splits the batch. The parameters are replicated over it, and no layer communicates.
  * MODEL splits each mixer's channels (Megatron style): in_proj is column-parallel (each device
    computes its own channels of x, z, dt and, for Mamba-2, the B/C groups its heads read), the conv
    and the scan run on those channels, and out_proj is row-parallel: its partial sums are added by
    one all-reduce of [tokens, d_model] per layer. Two extra, small reductions exist where the math
    contracts over the split channels: Mamba-1's x_proj ([tokens, dt_rank + 2 d_state] per layer), and
    Mamba-2's gated RMSNorm when a norm group straddles devices (ngroups not a multiple of the MODEL
    size: [tokens, ngroups] per layer). With ngroups a multiple of the MODEL size, Mamba-2 pays only
    the out_proj all-reduce. The embedding, the final norm and the LM head are replicated.

The per-layer parameters are stored in a device-major layout: in_proj's columns (and the conv's
channels) are reordered so that an even split along MODEL gives each device exactly the columns of
its own channels ([x_k, z_k] for Mamba-1; [z_k, x_k, B_k, C_k, dt_k] for Mamba-2, where B_k, C_k are
the groups of device k's heads, copied to each device of a group when groups straddle devices). The
per-device copy of the model is then an ordinary smaller model (`Layout.localize` sets its sizes).
A bias of out_proj is stored divided by the MODEL size (added once per device, then summed).

The decode cache is sharded like the activations (batch over DATA, channels over MODEL) and is
donated by `generate` as on one device.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
from collections import Counter
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA = "data"
MODEL = "model"

__all__ = ["DATA", "MODEL", "make_mesh", "shard_op", "Layout", "ShardedLM", "shard_model", "init_model",
           "count_collectives", "comm_bytes_per_token"]


def make_mesh(data: int = 1, model: int = 1, devices=None) -> Mesh:
    """A (DATA, MODEL) mesh of data * model devices (default: the first ones of jax.devices())."""
    devices = list(jax.devices() if devices is None else devices)
    if data < 1 or model < 1 or data * model > len(devices):
        raise ValueError(f"make_mesh: data={data} x model={model} needs {data * model} devices, "
                         f"{len(devices)} available")
    return Mesh(np.array(devices[:data * model]).reshape(data, model), (DATA, MODEL))


def _axis_size(mesh: Mesh, axis) -> int:
    return 1 if axis is None else int(mesh.shape[axis])


# Axis roles of every array of every op: b batch, c channels (dim for Mamba-1, nheads for Mamba-2),
# g groups of B/C; any other letter is not split. One string per accepted rank.
_OP_ROLES = {
    "selective_scan": ({"u": "blc", "delta": "blc", "A": "cn", "B": ("bln", "blgn"), "C": ("bln", "blgn"),
                        "D": "c", "z": "blc", "delta_bias": "c", "initial_state": "bcn"}, ("blc", "bcn")),
    "selective_state_update": ({"state": "bcn", "x": "bc", "dt": "bc", "A": "cn", "B": ("bn", "bgn"),
                                "C": ("bn", "bgn"), "D": "c", "z": "bc", "dt_bias": "c"}, ("bc", "bcn")),
    "causal_conv1d": ({"x": "blc", "weight": "cw", "bias": "c", "initial_state": "bcw", "seq_idx": "bl"},
                      ("blc", ("bcw", "bscw"))),
    "causal_conv1d_update": ({"x": "bc", "conv_state": "bcw", "weight": "cw", "bias": "c"}, ("bc", "bcw")),
    "linear": ({"x": ("bk", "blk"), "w": "kc"}, (("bc", "blc"),)),
    "ssd_scan": ({"x": "blcp", "dt": "blc", "A": "c", "B": "blgn", "C": "blgn", "D": ("c", "cp"),
                  "z": "blcp", "dt_bias": "c", "initial_state": "bcpn", "seq_idx": "bl"},
                 ("blcp", ("bcpn", "bscpn"))),
    "ssd_state_update": ({"state": "bcpn", "x": "bcp", "dt": "bc", "A": "c", "B": "bgn", "C": "bgn",
                          "D": ("c", "cp"), "z": "bcp", "dt_bias": "c"}, ("bcp", "bcpn")),
}


def _roles(options, ndim: int, what: str) -> str:
    for r in (options,) if isinstance(options, str) else options:
        if len(r) == ndim:
            return r
    raise ValueError(f"shard_op: {what} has rank {ndim}, expected one of {options}")


def _spec(roles: str, batch_axis, channel_axis, group_axis) -> P:
    return P(*[{"b": batch_axis, "c": channel_axis, "g": group_axis}.get(r) for r in roles])


def shard_op(op: str, mesh: Mesh, *args, batch_axis=DATA, channel_axis=MODEL, **kwargs):
    """Runs `mamba_jax.ops.<op>(*args, **kwargs)` under `jax.shard_map` on `mesh`: the batch split over
    `batch_axis`, the channels (dim for Mamba-1 ops, nheads for Mamba-2 ops; the output columns of
    `linear`) over `channel_axis` (either may be None: not split). Grouped B/C ([..., ngroups, dstate])
    are split with the channels when ngroups is a multiple of the channel axis size; otherwise (the
    axis size a multiple of ngroups) they are replicated and each device reads the one group its
    channels use. Every FFI call then runs on its device's block: the compiled program holds no
    collective. Array arguments may be positional or keywords; the others are passed through.

    Returns what the op returns, each array sharded like its inputs (states: batch and channels).
    """
    from . import ops

    fn = getattr(ops, op)
    in_roles, out_roles = _OP_ROLES[op]
    bound = inspect.signature(fn).bind(*args, **kwargs)
    arrays = {k: v for k, v in bound.arguments.items() if k in in_roles and v is not None}
    static = {k: v for k, v in bound.arguments.items() if k not in arrays}
    tp = _axis_size(mesh, channel_axis)
    group_axis, pick_group = channel_axis, None
    for name, a in arrays.items():
        roles = _roles(in_roles[name], np.ndim(a), name)
        if "g" in roles:
            g = np.shape(a)[roles.index("g")]
            if g % tp == 0:
                continue
            if tp % g:
                raise ValueError(f"shard_op({op}): {name} has {g} groups; the '{channel_axis}' axis has {tp} "
                                 "devices: one must be a multiple of the other")
            group_axis, pick_group = None, tp // g
    specs = {k: _spec(_roles(in_roles[k], np.ndim(a), k), batch_axis, channel_axis, group_axis)
             for k, a in arrays.items()}
    out_shape = jax.eval_shape(functools.partial(fn, **static), **arrays)
    flat_out, out_tree = jax.tree.flatten(out_shape)
    out_specs = jax.tree.unflatten(out_tree, [
        _spec(_roles(out_roles[i], s.ndim, f"output {i}"), batch_axis, channel_axis, group_axis)
        for i, s in enumerate(flat_out)])

    def local(arrs):
        if pick_group is not None:  # this device's channels all read group k // pick_group
            k = jax.lax.axis_index(channel_axis) // pick_group
            arrs = dict(arrs)
            for name, a in arrs.items():
                roles = _roles(in_roles[name], a.ndim, name)
                if "g" in roles:
                    arrs[name] = jax.lax.dynamic_slice_in_dim(a, k, 1, roles.index("g"))
        return fn(**arrs, **static)

    return jax.shard_map(local, mesh=mesh, in_specs=(specs,), out_specs=out_specs, check_vma=False)(arrays)


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one model's mixers are split over `tp` devices of the MODEL axis (see the module doc).

    mamba2: the family; e d_inner; n d_state; Mamba-2 only: h nheads, p headdim, g ngroups.
    """

    tp: int
    mamba2: bool
    e: int
    n: int
    h: int = 0
    g: int = 0

    @classmethod
    def of(cls, cfg, tp: int) -> "Layout":
        from .nn import Mamba2Config

        e = cfg.expand * cfg.d_model
        if isinstance(cfg, Mamba2Config):
            h, g = e // cfg.headdim, cfg.ngroups
            if h % tp:
                raise ValueError(f"tensor parallelism over {tp} devices needs nheads ({h}) to be a multiple of {tp}")
            if g % tp and tp % g:
                raise ValueError(f"tensor parallelism over {tp} devices needs ngroups ({g}) to be a multiple or a "
                                 f"divisor of {tp}, so that no device's heads read two partial groups")
            return cls(tp=tp, mamba2=True, e=e, n=cfg.d_state, h=h, g=g)
        if e % tp:
            raise ValueError(f"tensor parallelism over {tp} devices needs d_inner ({e}) to be a multiple of {tp}")
        return cls(tp=tp, mamba2=False, e=e, n=cfg.d_state)

    # local sizes
    @property
    def groups_split(self) -> bool:
        return self.g % self.tp == 0

    @property
    def local_groups(self) -> int:
        return self.g // self.tp if self.groups_split else 1

    def _group_cols(self, k: int) -> np.ndarray:
        """Columns (within B or C, [g * n]) that device k holds."""
        gl = self.local_groups
        first = k * gl if self.groups_split else k // (self.tp // self.g)
        return np.arange(first * self.n, (first + gl) * self.n)

    def _block(self, size: int, k: int, offset: int = 0) -> np.ndarray:
        s = size // self.tp
        return offset + np.arange(k * s, (k + 1) * s)

    def in_proj_columns(self) -> np.ndarray:
        """Index of the original in_proj columns in the device-major layout."""
        e, cols = self.e, []
        for k in range(self.tp):
            if not self.mamba2:
                cols += [self._block(e, k), self._block(e, k, e)]
            else:
                gn = self.g * self.n
                cols += [self._block(e, k), self._block(e, k, e), 2 * e + self._group_cols(k),
                         2 * e + gn + self._group_cols(k), self._block(self.h, k, 2 * e + 2 * gn)]
        return np.concatenate(cols)

    def conv_channels(self) -> np.ndarray:
        """Index of the original conv channels in the device-major layout (Mamba-2: x, B, C)."""
        if not self.mamba2:
            return np.arange(self.e)
        e, gn = self.e, self.g * self.n
        return np.concatenate([np.concatenate([self._block(e, k), e + self._group_cols(k),
                                               e + gn + self._group_cols(k)]) for k in range(self.tp)])

    # parameters
    _MIXER_AXES = {"in_proj.kernel": 1, "in_proj.bias": 0, "conv_weight": 0, "conv_bias": 0, "x_proj.kernel": 0,
                   "dt_proj.kernel": 1, "dt_bias": 0, "A_log": 0, "D": 0, "norm.scale": 0, "out_proj.kernel": 0}

    @staticmethod
    def _mixer_name(path: tuple) -> Optional[str]:
        """'in_proj.kernel' for ('layers', 3, 'mixer', 'in_proj', 'kernel'); None outside mixers."""
        if len(path) >= 4 and path[0] == "layers" and path[2] == "mixer":
            return ".".join(map(str, path[3:]))
        return None

    def spec(self, path: tuple) -> P:
        """PartitionSpec of a parameter (path as in nnx: ('layers', i, 'mixer', 'in_proj', 'kernel'))."""
        axis = self._MIXER_AXES.get(self._mixer_name(path))
        if axis is None:
            return P()
        return P(*([None] * axis + [MODEL]))

    def changes(self, name: Optional[str]) -> bool:
        """Whether `relayout` changes the parameter of this `_mixer_name`."""
        return self.tp > 1 and (name in ("in_proj.kernel", "in_proj.bias", "out_proj.bias")
                                or (self.mamba2 and name in ("conv_weight", "conv_bias")))

    def relayout(self, name: Optional[str], x):
        """A parameter of the unsharded model (its `_mixer_name`) -> its device-major layout."""
        if not self.changes(name):
            return x
        if name in ("in_proj.kernel", "in_proj.bias"):
            return jnp.take(x, self.in_proj_columns(), axis=x.ndim - 1)
        if self.mamba2 and name in ("conv_weight", "conv_bias"):
            return jnp.take(x, self.conv_channels(), axis=0)
        if name == "out_proj.bias":
            return x / self.tp
        return x

    def localize(self, model) -> None:
        """Turns a per-device copy of the model (merged inside shard_map) into a model of its local
        sizes whose mixers sum their partial products over MODEL."""
        if self.tp == 1:
            return
        for layer in model.layers:
            m = layer.mixer
            m.tp_axis = MODEL
            m.d_inner = self.e // self.tp
            if self.mamba2:
                m.nheads = self.h // self.tp
                m.ngroups = self.local_groups
                m.conv_dim = m.d_inner + 2 * m.ngroups * self.n
                if m.norm is not None and not self.groups_split:
                    m.norm.group_size = m.d_inner
                    m.norm.tp_axis = MODEL
                    m.norm.shards_per_group = self.tp // self.g

    def cache_specs(self, n_layer: int, data_axis=DATA):
        from .nn import MambaCache

        s = P(data_axis, MODEL)
        return MambaCache(conv_states=(s,) * n_layer, ssm_states=(s,) * n_layer)


def _keys(path) -> tuple:
    """A jax tree path of an nnx State leaf -> its nnx path (names and layer indices, no 'value')."""
    out = tuple(getattr(k, "key", getattr(k, "name", getattr(k, "idx", None))) for k in path)
    return out[:-1] if out and out[-1] == "value" else out


def _state_specs(layout: Layout, state):
    return jax.tree_util.tree_map_with_path(lambda p, _: layout.spec(_keys(p)), state)


class ShardedLM(nnx.Module):
    """A `MambaLM` whose parameters live sharded on a (DATA, MODEL) mesh in the device-major layout,
    with the model's interface: ``model(ids)``, ``prefill``, ``step``, ``step_constants``,
    ``init_cache``, ``config``, ``implementation``, ``tokenizer``; `mamba_jax.generate` takes it as is.
    Each call runs the wrapped model inside one `jax.shard_map`. Build it with `shard_model` or
    `init_model`. The batch must be a multiple of the DATA size (`batch_multiple`; generate pads it)."""

    def __init__(self, model, mesh: Mesh, layout: Layout):
        self.model, self.mesh, self.layout = model, mesh, layout

    # the wrapped model's interface
    config = property(lambda self: self.model.config)
    dtype = property(lambda self: self.model.dtype)
    tokenizer = property(lambda self: self.model.tokenizer)
    batch_multiple = property(lambda self: int(self.mesh.shape[DATA]))

    @property
    def implementation(self):
        return self.model.implementation

    @implementation.setter
    def implementation(self, value):
        self.model.implementation = value

    def _run(self, fn, arg_specs, out_specs, *args):
        graphdef, state = nnx.split(self.model)
        layout = self.layout

        def local(state, *args):
            m = nnx.merge(graphdef, state)
            layout.localize(m)
            return fn(m, *args)

        return jax.shard_map(local, mesh=self.mesh, in_specs=(_state_specs(layout, state), *arg_specs),
                             out_specs=out_specs, check_vma=False)(state, *args)

    def _cache_specs(self):
        return self.layout.cache_specs(self.config.n_layer)

    def _const_specs(self):
        b = P(MODEL) if self.config.conv_bias else None
        return tuple((P(MODEL), P(MODEL), b) for _ in range(self.config.n_layer))

    def prefill(self, input_ids, mask=None, *, cache=None, **options):
        """As `MambaLM.prefill` (options such as last_only are passed on); logits [b, l, V] (or [b, V])
        split over DATA, the cache (given and returned) sharded like `init_cache`'s."""
        arrays = {k: v for k, v in (("ids", input_ids), ("mask", mask), ("cache", cache)) if v is not None}
        specs = {"ids": P(DATA), "mask": P(DATA), "cache": self._cache_specs()}

        def fn(m, a):
            extra = {"cache": a["cache"]} if "cache" in a else {}
            return m.prefill(a["ids"], a.get("mask"), **extra, **options)

        return self._run(fn, ({k: specs[k] for k in arrays},), (P(DATA), self._cache_specs()), arrays)

    def __call__(self, input_ids, mask=None):
        return self.prefill(input_ids, mask)[0]

    def step_constants(self):
        return self._run(lambda m: m.step_constants(), (), self._const_specs())

    def step(self, token_ids, cache, constants=None):
        """As `MambaLM.step` (the cache sharded as `init_cache` makes it)."""
        if constants is None:
            constants = self.step_constants()
        return self._run(lambda m, t, c, k: m.step(t, c, k), (P(DATA), self._cache_specs(), self._const_specs()),
                         (P(DATA), self._cache_specs()), token_ids, cache, constants)

    def init_cache(self, batch: int):
        """Zero cache for `batch` sequences (a multiple of the DATA size), sharded."""
        d = self.batch_multiple
        if batch % d:
            raise ValueError(f"init_cache: batch {batch} is not a multiple of the '{DATA}' axis size {d}")
        return self._run(lambda m: m.init_cache(batch // d), (), self._cache_specs())


def _place(layout: Layout, mesh: Mesh, state, *, donate: bool = False):
    """The unsharded model's state -> the device-major layout, each parameter put on the mesh, one
    parameter at a time. donate: consume the given arrays (init_model: the old and the new
    parameters are then never both held whole)."""
    def put(path, x):
        keys = _keys(path)
        name, sharding = layout._mixer_name(keys), NamedSharding(mesh, layout.spec(keys))
        if not layout.changes(name) and getattr(x, "sharding", None) == sharding:
            return x  # already where it belongs
        # Donated only where the new array can take the old one's place (not when columns are copied).
        same = jax.eval_shape(functools.partial(layout.relayout, name), x).shape == x.shape
        return _relayout_fn(layout, name, sharding, donate and same)(x)
    return jax.tree_util.tree_map_with_path(put, state)


@functools.lru_cache(maxsize=256)
def _relayout_fn(layout, name, sharding, donate):
    # One compiled function per (parameter kind, sharding), shared by the layers.
    return jax.jit(functools.partial(layout.relayout, name), out_shardings=sharding,
                   donate_argnums=(0,) if donate else ())


def placer(cfg, mesh: Mesh):
    """(layout, put) for `loading.load_weights`: put(path, host array, dtype) places one parameter of a
    model of `cfg` on `mesh` in the device-major layout, as `shard_model` would (a parameter whose
    columns are regrouped passes through one device whole; the others go to their shards directly)."""
    layout = Layout.of(cfg, int(mesh.shape[MODEL]))

    def put(path, arr, dtype):
        keys = tuple(path)
        name, sharding = layout._mixer_name(keys), NamedSharding(mesh, layout.spec(keys))
        if not layout.changes(name):
            return jax.device_put(np.asarray(arr).astype(dtype), sharding)
        return _relayout_fn(layout, name, sharding, False)(jnp.asarray(arr, dtype))

    return layout, put


def shard_model(model, mesh: Mesh) -> "ShardedLM":
    """Puts a `MambaLM` on `mesh` (see `make_mesh`): parameters replicated over DATA and split over MODEL
    in the device-major layout. Returns a `ShardedLM` (same interface, same logits up to rounding);
    the unsharded model is left as it was (drop it to free its memory)."""
    layout = Layout.of(model.config, int(mesh.shape[MODEL]))
    graphdef, state = nnx.split(model)
    return ShardedLM(nnx.merge(graphdef, _place(layout, mesh, state)), mesh, layout)


def init_model(cfg, mesh: Mesh, *, dtype=jnp.float32, param_dtype=None, precision=None,
               implementation: Optional[str] = None, seed: int = 0) -> "ShardedLM":
    """A randomly initialised `MambaLM` built directly on `mesh`: each device computes only its share
    of the parameters (the random initialisation runs partitioned), so a model larger than one
    device's memory can be built. The same seed gives the same weights as
    ``shard_model(MambaLM(cfg, ..., rngs=nnx.Rngs(seed)), mesh)``."""
    from .nn import MambaLM
    from .nn.model import MambaBlock

    param_dtype = dtype if param_dtype is None else param_dtype
    layout = Layout.of(cfg, int(mesh.shape[MODEL]))
    kw = dict(dtype=dtype, param_dtype=param_dtype, precision=precision, implementation=implementation)

    def build():
        return MambaLM(cfg, **kw, rngs=nnx.Rngs(seed))

    abstract = nnx.eval_shape(build)
    graphdef, abstract_state = nnx.split(abstract)

    def sharding_of(keys, x):
        # The original column order, split where the layout splits when the size allows.
        spec = layout.spec(keys)
        axis = next((i for i, a in enumerate(spec) if a is not None), None)
        ok = axis is None or x.shape[axis] % layout.tp == 0
        return NamedSharding(mesh, spec if ok else P())

    def shardings(tree, prefix=()):
        return jax.tree_util.tree_map_with_path(lambda p, x: sharding_of(prefix + _keys(p), x), tree)

    # One compiled program per layer, run n_layer times (one program for the whole model would unroll
    # every layer's random initialisation: minutes of compilation for a 64-layer model on a GPU). The
    # keys are the ones MambaLM's constructor draws from nnx.Rngs(seed): one per initialiser, in order
    # (embedding, then each layer's, then the LM head), so the RNG counter is passed in as a value.
    def rngs_at(count):
        rngs = nnx.Rngs(seed)
        rngs.default.count[...] = count
        return rngs

    def layer(count):
        rngs = rngs_at(count)
        block = MambaBlock(cfg, **kw, rngs=rngs)
        if cfg.rescale_prenorm_residual:
            block.rescale_out_proj(cfg.n_layer)
        return nnx.split(block)[1], rngs.default.count[...]

    block_state = nnx.split(nnx.eval_shape(lambda: MambaBlock(cfg, **kw, rngs=nnx.Rngs(seed))))[1]
    layer_fn = jax.jit(layer, out_shardings=(shardings(block_state, ("layers", 0)), None))
    values, count = {}, jnp.ones((), jnp.uint32)  # the embedding draws key 0
    for i in range(cfg.n_layer):
        st, count = layer_fn(count)
        values.update({("layers", i) + _keys(p): v for p, v in jax.tree_util.tree_flatten_with_path(st)[0]})

    # The embedding, final norm and LM head: a one-layer model built twice, from counter 0 (embedding)
    # and from the counter that puts its LM head at the key the full model's LM head draws.
    one = dataclasses.replace(cfg, n_layer=1)
    ends_state = nnx.split(nnx.eval_shape(lambda: MambaLM(one, **kw, rngs=nnx.Rngs(seed))))[1]
    ends_sh = shardings(ends_state)

    def ends(count):
        per_layer = (count - 1) // cfg.n_layer  # keys one layer draws
        first = nnx.split(MambaLM(one, **kw, rngs=rngs_at(jnp.zeros((), jnp.uint32))))[1]
        last = nnx.split(MambaLM(one, **kw, rngs=rngs_at(count - 1 - per_layer)))[1]
        return first, last

    first, last = jax.jit(ends, out_shardings=(ends_sh, ends_sh))(count)
    for src, keep in ((first, lambda k: k[0] != "lm_head"), (last, lambda k: k[0] == "lm_head")):
        values.update({_keys(p): v for p, v in jax.tree_util.tree_flatten_with_path(src)[0]
                       if keep(_keys(p)) and _keys(p)[0] != "layers"})
    state = jax.tree_util.tree_map_with_path(lambda p, _: values.pop(_keys(p)), abstract_state)
    assert not values, sorted(values)
    return ShardedLM(nnx.merge(graphdef, _place(layout, mesh, state, donate=True)), mesh, layout)


_COLLECTIVE = re.compile(r"\s(all-reduce|all-gather|reduce-scatter|collective-permute|all-to-all)(?:-start)?\(")


def count_collectives(hlo_text: str) -> Counter:
    """Collective ops in compiled HLO text (``jitted.lower(...).compile().as_text()``), by kind."""
    return Counter(m.group(1) for m in _COLLECTIVE.finditer(hlo_text))


def comm_bytes_per_token(cfg, tp: int, dtype_bytes: int = 2) -> dict:
    """Bytes each device sends into the MODEL-axis all-reduces per token and layer (the payload
    sizes; a ring all-reduce over tp devices moves 2 (tp - 1) / tp times that per device), and the
    total over the layers. Data parallelism adds nothing per layer."""
    from .nn import Mamba2Config

    if tp == 1:
        return {"out_proj": 0, "x_proj": 0, "norm": 0, "per_layer": 0, "per_token": 0}
    out = {"out_proj": cfg.d_model * dtype_bytes, "x_proj": 0, "norm": 0}
    if isinstance(cfg, Mamba2Config):
        if cfg.ngroups % tp:  # a norm group straddles devices: float32 mean squares, one per group
            out["norm"] = cfg.ngroups * 4
    else:
        dt_rank = -(-cfg.d_model // 16) if cfg.dt_rank == "auto" else int(cfg.dt_rank)
        out["x_proj"] = (dt_rank + 2 * cfg.d_state) * dtype_bytes
    out["per_layer"] = out["out_proj"] + out["x_proj"] + out["norm"]
    out["per_token"] = out["per_layer"] * cfg.n_layer
    return out
