"""Loads the compiled FFI modules and registers their handlers with XLA, once.

``mamba_jax._ffi_cpu`` is always built; ``mamba_jax._ffi_cuda`` only where nvcc was found at build
time. Targets are registered under the same name for each platform, so one ``jax.ffi.ffi_call``
lowers to the CPU or the CUDA handler depending on where it runs.
"""

from __future__ import annotations

import functools
import importlib

import jax


@functools.lru_cache(maxsize=None)
def _register(module_name: str, platform: str) -> bool:
    try:
        mod = importlib.import_module(f"mamba_jax.{module_name}")
    except ImportError:
        return False
    try:
        for name, capsule in mod.registrations().items():
            jax.ffi.register_ffi_target(name, capsule, platform=platform)
    except Exception:  # a jax without that platform cannot take registrations for it
        return False
    return True


def cpu_available() -> bool:
    """True when the C++ CPU kernels are built and registered."""
    return _register("_ffi_cpu", "cpu")


def cuda_available() -> bool:
    """True when the CUDA kernels are built and registered (needs a CUDA-enabled jaxlib)."""
    if not _has_cuda_backend():
        return False
    return _register("_ffi_cuda", "CUDA")


@functools.lru_cache(maxsize=None)
def _has_cuda_backend() -> bool:
    try:
        return len(jax.devices("cuda")) > 0
    except RuntimeError:
        return False


def platform_dispatch(implementation, ffi_fn, xla_fn, *args):
    """Runs `ffi_fn(*args)` where a kernel exists for the platform being lowered, else `xla_fn`.

    implementation None: per platform (lax.platform_dependent emits only the lowered branch);
    "ffi": the kernel, with a clear error when the platform has none; "xla": the pure-JAX path.
    """
    if implementation == "xla":
        return xla_fn(*args)
    cpu = cpu_available()
    cuda = cuda_available()
    if implementation == "ffi":
        backend = jax.default_backend()
        if (backend == "cpu" and not cpu) or (backend == "gpu" and not cuda) or backend not in ("cpu", "gpu"):
            raise RuntimeError(
                f"implementation='ffi' was asked for, but mamba_jax has no FFI kernel built for the "
                f"'{backend}' backend (CPU kernels built: {cpu}, CUDA kernels built: {cuda}); "
                "use implementation=None or 'xla'"
            )
        branches = {}
        if cpu:
            branches["cpu"] = ffi_fn
        if cuda:
            branches["cuda"] = ffi_fn
        return jax.lax.platform_dependent(*args, **branches, default=ffi_fn)
    return jax.lax.platform_dependent(
        *args,
        cpu=ffi_fn if cpu else xla_fn,
        cuda=ffi_fn if cuda else xla_fn,
        default=xla_fn,
    )
