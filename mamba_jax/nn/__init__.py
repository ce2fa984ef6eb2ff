"""Flax NNX Mamba modules (the only part of mamba_jax that imports flax).

    MambaMixer   the Mamba-1 selective-SSM block, usable on its own in any NNX model
    MambaBlock   RMSNorm + MambaMixer + residual
    MambaLM      embedding, blocks, final norm, LM head; prefill / step with a MambaCache
    MambaConfig  sizes and options (readers for transformers and state-spaces config.json)
"""

from .config import MambaConfig
from .mixer import MambaMixer
from .model import MambaBlock, MambaCache, MambaLM, RMSNorm

__all__ = ["MambaConfig", "MambaMixer", "MambaBlock", "MambaCache", "MambaLM", "RMSNorm"]
