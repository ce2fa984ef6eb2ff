"""Flax NNX Mamba modules (the only part of mamba_jax that imports flax).

    MambaMixer    the Mamba-1 selective-SSM block, usable on its own in any NNX model
    Mamba2Mixer   the Mamba-2 SSD block, the same way
    MambaBlock    RMSNorm + mixer + residual
    MambaLM       embedding, blocks, final norm, LM head; prefill / step with a MambaCache (either family)
    MambaConfig   Mamba-1 sizes and options (readers for transformers and state-spaces config.json)
    Mamba2Config  the same for Mamba-2
    RMSNorm       RMSNorm in float32, optionally per group and gated (Mamba-2's norm before out_proj)
"""

from .config import Mamba2Config, MambaConfig
from .mamba2 import Mamba2Mixer
from .mixer import MambaMixer
from .model import MambaBlock, MambaCache, MambaLM
from .norm import RMSNorm

__all__ = ["MambaConfig", "Mamba2Config", "MambaMixer", "Mamba2Mixer", "MambaBlock", "MambaCache", "MambaLM",
           "RMSNorm"]
