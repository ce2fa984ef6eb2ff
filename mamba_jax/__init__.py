"""mamba-jax: fast Mamba inference for JAX (XLA FFI kernels for CUDA and CPU, a portable pure-JAX path)."""

from . import ops
from .ops import causal_conv1d, causal_conv1d_update, selective_scan, selective_state_update
from .loading import from_pretrained  # imports flax only when called
# Binds the function over the submodule's name: `mamba_jax.generate(model, ...)`. The submodule stays
# importable as `from mamba_jax.generate import Generator`; it imports flax only when called.
from .generate import Generator, generate

__version__ = "0.1.0"

__all__ = [
    "ops",
    "selective_scan",
    "selective_state_update",
    "causal_conv1d",
    "causal_conv1d_update",
    "from_pretrained",
    "generate",
    "Generator",
    "nn",
    "MambaConfig",
    "Mamba2Config",
    "MambaMixer",
    "Mamba2Mixer",
    "MambaLM",
    "MambaCache",
]

_NN_NAMES = ("MambaConfig", "Mamba2Config", "MambaMixer", "Mamba2Mixer", "MambaLM", "MambaCache")


def __getattr__(name):
    # mamba_jax.nn (and so flax) is imported on first use, keeping `import mamba_jax` light.
    if name == "nn" or name in _NN_NAMES:
        import importlib

        nn = importlib.import_module(".nn", __name__)
        return nn if name == "nn" else getattr(nn, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
