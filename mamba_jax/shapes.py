"""Real model sizes, named once and shared by the tests and the benchmarks.

Each is a small frozen dataclass holding the sizes that the kernels see. Shape letters used across
the package: batch, seqlen, dim (= d_inner, the channels of the Mamba-1 mixer), dstate, ngroups,
width (conv kernel), nheads, headdim.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Mamba1Shape:
    """A Mamba-1 model: each layer's mixer runs conv1d and selective_scan over `d_inner` channels."""

    name: str
    d_model: int
    d_inner: int  # = dim of the ops (2 * d_model in the released models)
    dstate: int
    d_conv: int  # conv width
    dt_rank: int
    n_layers: int

    @property
    def dim(self) -> int:
        return self.d_inner

    def config(self, vocab_size: int = 50277, pad_vocab_size_multiple: int = 8):
        """The `mamba_jax.nn.MambaConfig` of a model of this size (random weights; vocabulary as given)."""
        from .nn import MambaConfig

        return MambaConfig(vocab_size=vocab_size, d_model=self.d_model, n_layer=self.n_layers, d_state=self.dstate,
                           d_conv=self.d_conv, expand=self.d_inner // self.d_model, dt_rank=self.dt_rank,
                           pad_vocab_size_multiple=pad_vocab_size_multiple)


@dataclasses.dataclass(frozen=True)
class Mamba2Shape:
    """A Mamba-2 model: `nheads` heads of `headdim` channels share `ngroups` groups of B/C."""

    name: str
    d_model: int
    nheads: int
    headdim: int
    dstate: int
    ngroups: int
    n_layers: int
    d_conv: int = 4

    @property
    def d_inner(self) -> int:
        return self.nheads * self.headdim

    def config(self, vocab_size: int = 50277, pad_vocab_size_multiple: int = 16):
        """The `mamba_jax.nn.Mamba2Config` of a model of this size (random weights; vocabulary as given)."""
        from .nn import Mamba2Config

        return Mamba2Config(vocab_size=vocab_size, d_model=self.d_model, n_layer=self.n_layers, d_state=self.dstate,
                            d_conv=self.d_conv, expand=self.d_inner // self.d_model, headdim=self.headdim,
                            ngroups=self.ngroups, pad_vocab_size_multiple=pad_vocab_size_multiple)


MAMBA_130M = Mamba1Shape("mamba-130m", d_model=768, d_inner=1536, dstate=16, d_conv=4, dt_rank=48, n_layers=24)
MAMBA_1_4B = Mamba1Shape("mamba-1.4b", d_model=2048, d_inner=4096, dstate=16, d_conv=4, dt_rank=128, n_layers=48)
MAMBA_2_8B = Mamba1Shape("mamba-2.8b", d_model=2560, d_inner=5120, dstate=16, d_conv=4, dt_rank=160, n_layers=64)
MAMBA2_2_7B = Mamba2Shape("mamba2-2.7b", d_model=2560, nheads=80, headdim=64, dstate=128, ngroups=1, n_layers=64)

MAMBA1 = {s.name: s for s in (MAMBA_130M, MAMBA_1_4B, MAMBA_2_8B)}
MAMBA2 = {s.name: s for s in (MAMBA2_2_7B,)}
ALL = {**MAMBA1, **MAMBA2}


def get(name: str) -> Mamba1Shape | Mamba2Shape:
    """Looks a size up by its name ("mamba-130m", "mamba-1.4b", "mamba-2.8b", "mamba2-2.7b")."""
    try:
        return ALL[name]
    except KeyError:
        raise KeyError(f"unknown model size {name!r}; known: {', '.join(ALL)}") from None
