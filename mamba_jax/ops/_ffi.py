"""Loads the compiled FFI modules, registers their targets with XLA once, and calls them.

``mamba_jax._ffi_cpu`` is always built; ``mamba_jax._ffi_cuda`` only where nvcc was found at build
time. Each module's ``targets()`` is generated from ffi/targets.h, the one list of ops:
``{op: (handler capsule, operand names, result names)}``. Every op is registered as
``"mamba_jax_" + op`` for its platform, so one ``jax.ffi.ffi_call`` lowers to the CPU or the CUDA
handler depending on where it runs, and `call` passes operands by name in the module's order.
"""

from __future__ import annotations

import functools
import importlib

import jax
import jax.numpy as jnp

_MODULES = {"cpu": ("_ffi_cpu", "cpu"), "cuda": ("_ffi_cuda", "CUDA")}


def target_name(op: str) -> str:
    return "mamba_jax_" + op


@functools.lru_cache(maxsize=None)
def _targets(platform: str) -> dict:
    """{op: (operand names, result names)} registered for `platform` ("cpu" or "cuda"); {} if none."""
    if platform == "cuda" and not _has_cuda_backend():
        return {}
    module_name, xla_platform = _MODULES[platform]
    try:
        mod = importlib.import_module(f"mamba_jax.{module_name}")
    except ImportError:
        return {}
    ops = {}
    try:
        for op, (capsule, operands, results) in mod.targets().items():
            jax.ffi.register_ffi_target(target_name(op), capsule, platform=xla_platform)
            ops[op] = (tuple(operands), tuple(results))
    except Exception:  # a jax without that platform cannot take registrations for it
        return {}
    return ops


@functools.lru_cache(maxsize=None)
def _has_cuda_backend() -> bool:
    try:
        return len(jax.devices("cuda")) > 0
    except RuntimeError:
        return False


def cpu_available(op: str | None = None) -> bool:
    """True when the C++ CPU kernels (of `op`, or any) are built and registered."""
    t = _targets("cpu")
    return bool(t) if op is None else op in t


def cuda_available(op: str | None = None) -> bool:
    """True when the CUDA kernels (of `op`, or any) are built and registered (needs a CUDA jaxlib)."""
    t = _targets("cuda")
    return bool(t) if op is None else op in t


def _signature(op: str):
    for platform in ("cpu", "cuda"):
        sig = _targets(platform).get(op)
        if sig is not None:
            return sig
    raise RuntimeError(f"mamba_jax has no FFI kernel built for {op!r}")


def empty(dtype=jnp.float32):
    """What an absent optional operand is passed as."""
    return jnp.zeros((0,), dtype)


def call(op: str, results: dict, operands: dict, attrs: dict | None = None, *,
         vmap_method: str = "broadcast_all", aliases: dict | None = None):
    """Calls the FFI target of `op`.

    results: {name: jax.ShapeDtypeStruct}; operands: {name: array}; aliases: {operand name: result
    name} (the result reuses the operand's buffer; in place under donation). Names must be exactly
    the module's lists (ffi/targets.h), so a Python binding cannot drift from its handler.
    Returns the results as a tuple in the module's order.
    """
    operand_names, result_names = _signature(op)
    if set(operands) != set(operand_names) or set(results) != set(result_names):
        raise RuntimeError(
            f"{op}: the Python binding passes operands {sorted(operands)} -> results {sorted(results)}, but "
            f"the built module declares {list(operand_names)} -> {list(result_names)} (rebuild the extension?)")
    io = {operand_names.index(k): result_names.index(v) for k, v in (aliases or {}).items()}
    fn = jax.ffi.ffi_call(target_name(op), tuple(results[n] for n in result_names),
                          vmap_method=vmap_method, input_output_aliases=io or None)
    out = fn(*(operands[n] for n in operand_names), **(attrs or {}))
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def platform_dispatch(op: str, implementation, ffi_fn, xla_fn, *args):
    """Runs `ffi_fn(*args)` where `op` has a kernel for the platform being lowered, else `xla_fn`.

    implementation None: per platform (lax.platform_dependent emits only the lowered branch);
    "ffi": the kernel, with a clear error when the platform has none; "xla": the pure-JAX path.
    """
    if implementation == "xla":
        return xla_fn(*args)
    cpu = cpu_available(op)
    cuda = cuda_available(op)
    if implementation == "ffi":
        backend = jax.default_backend()
        if (backend == "cpu" and not cpu) or (backend == "gpu" and not cuda) or backend not in ("cpu", "gpu"):
            raise RuntimeError(
                f"{op}: implementation='ffi' was asked for, but mamba_jax has no FFI kernel of it built for "
                f"the '{backend}' backend (CPU kernel built: {cpu}, CUDA kernel built: {cuda}); "
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
