"""The array-module shim: one code path for NumPy (CPU) and CuPy (GPU).

Model code never imports NumPy or CuPy for array math. It asks
``get_array_module(*arrays)`` which module owns its arrays and calls that
module (``xp``) instead, in the style of CuPy's own ``get_array_module``.

CuPy is imported lazily, only when a caller asks for it, so NumPy users
never pay for (or depend on) a GPU stack.

Short chains of element-wise operations (a loss and its gradient, the
reparameterisation trick) are written once as Python functions and marked
``@elementwise``: NumPy runs them as written, and CuPy compiles the same
function into one GPU kernel.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeAlias

import numpy as np

from .speed import fused as fused_paths  # MINIVAE_FAST switches every compiled path together

Array: TypeAlias = Any
"""An array on the model's backend: a ``numpy.ndarray``, or a ``cupy.ndarray`` on a GPU.

In annotations it stands for either. To a type checker it is ``Any``: CuPy ships no type information, and the
two classes share no base class. Functions that always return a host array say ``np.ndarray`` instead.
"""

BACKENDS = ("numpy", "cupy", "auto")

_CUPY_HELP = (
    "CuPy is not installed. For an NVIDIA GPU with CUDA 12, run "
    "`pip install 'minivae[cuda]'` (or `pip install cupy-cuda12x`); for CUDA 13, "
    "`pip install cupy-cuda13x`. Or use backend='numpy'."
)


def _import_cupy():
    """Return the ``cupy`` module, with an install hint if it is missing."""
    try:
        import cupy
    except ImportError as err:
        raise ImportError(_CUPY_HELP) from err
    return cupy


def _loaded_cupy():
    """The ``cupy`` module if something already imported it, else None.

    Arrays can only be CuPy arrays if CuPy was imported, so type checks never
    need to import it themselves.
    """
    return sys.modules.get("cupy")


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        cupy = _import_cupy()
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no driver, no device: all mean "no GPU"
        return False


def default_backend() -> str:
    """The backend named by ``MINIVAE_BACKEND``, else ``"numpy"``."""
    return os.environ.get("MINIVAE_BACKEND", "numpy")


def resolve(name: str | None = None) -> ModuleType:
    """Turn a backend name into its array module.

    Parameters
    ----------
    name : {"numpy", "cupy", "auto"} or None
        ``"auto"`` picks CuPy when it imports and sees a GPU, else NumPy.
        ``None`` reads ``MINIVAE_BACKEND`` (default ``"numpy"``).
    """
    if name is None:
        name = default_backend()
    if not isinstance(name, str) or name.lower() not in BACKENDS:
        raise ValueError(
            f"unknown backend {name!r}; choose one of {', '.join(map(repr, BACKENDS))} "
            "(check the backend argument or the MINIVAE_BACKEND variable)"
        )
    name = name.lower()
    if name == "numpy":
        return np
    if name == "cupy":
        return _import_cupy()
    return _import_cupy() if gpu_available() else np


def name_of(xp: ModuleType) -> str:
    """``"numpy"`` or ``"cupy"`` for an array module."""
    return "numpy" if xp is np else "cupy"


def get_array_module(*arrays: Any) -> ModuleType:
    """The module (NumPy or CuPy) that owns the given arrays.

    Non-array arguments (Python scalars, None) are ignored. Mixing NumPy and
    CuPy arrays is an error: moving data between devices must be explicit.
    """
    cupy = _loaded_cupy()
    if cupy is None:  # nothing imported CuPy, so no argument is a CuPy array: the answer needs no look
        return np
    found = None
    for a in arrays:
        if cupy is not None and isinstance(a, cupy.ndarray):
            xp = cupy
        elif isinstance(a, (np.ndarray, np.generic)):
            xp = np
        else:
            continue
        if found is not None and xp is not found:
            raise ValueError(
                "arrays live on different backends (NumPy and CuPy); move them "
                "to one with minivae.backend.to_backend(array, name) first"
            )
        found = xp
    return np if found is None else found


def to_numpy(a: Any) -> np.ndarray:
    """A NumPy copy (or view) of any array; CuPy arrays are copied to the host."""
    cupy = _loaded_cupy()
    if cupy is not None and isinstance(a, cupy.ndarray):
        return cupy.asnumpy(a)
    return np.asarray(a)


def to_backend(a: Any, xp: ModuleType | str, dtype: Any = None) -> Array:
    """Move an array to the array module ``xp`` (or a backend name)."""
    if isinstance(xp, str):
        xp = resolve(xp)
    if get_array_module(a) is not xp:
        a = to_numpy(a) if xp is np else a
    return xp.asarray(a, dtype=dtype)


def elementwise(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for ``fn(xp, *args)``, a function made only of element-wise operations, run as one kernel on CuPy.

    The decorated function takes ``*args`` alone (arrays and scalars); the
    array module ``xp`` is found from the arrays and passed first.

    * On NumPy, ``fn`` runs as written: one NumPy call per operation.
    * On CuPy, the same function is traced once per process by
      ``cupy.fuse`` and compiled into a single kernel that reads each input
      and writes each output once. A training step is short on a GPU, and
      most of its time goes to launching kernels, one per operation, so a
      chain of ten operations fused into one saves nine launches. With
      ``MINIVAE_FAST=0`` CuPy runs it as written, one kernel per operation.

    ``fn`` may use arithmetic operators, comparisons and ``xp``'s element-wise
    functions (``xp.exp``, ``xp.maximum``, ...), and return one array or a
    tuple of them; no reductions, indexing, shapes or ``out=`` arguments, which
    ``cupy.fuse`` cannot compile into an element-wise kernel. Results agree
    with NumPy's to rounding: the GPU's ``exp`` and ``log1p`` are not the CPU's,
    and its compiler may join a product and a sum into one rounding.
    """
    kernels: dict[ModuleType, Callable[..., Any]] = {}

    @functools.wraps(fn)
    def call(*args):
        xp = get_array_module(*args)
        if xp is np or not fused_paths.requested():
            return fn(xp, *args)
        kernel = kernels.get(xp)
        if kernel is None:  # one per module: the tests run CuPy's stand-in and real CuPy in one process
            def traced(*a):
                return fn(xp, *a)

            kernel = kernels[xp] = xp.fuse(kernel_name=f"minivae_{fn.__name__}")(traced)
        return kernel(*args)

    signature = inspect.signature(fn)  # shown without the xp that call passes itself
    shown = signature.replace(parameters=list(signature.parameters.values())[1:])
    call.__signature__ = shown  # type: ignore[attr-defined]
    return call


def device_memory(xp: ModuleType) -> int | None:
    """The bytes of memory of the device ``xp`` computes on: the machine's RAM, or the GPU's; None if unknown."""
    try:
        if xp is np:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return xp.cuda.Device().mem_info[1]
    except (AttributeError, ValueError, OSError):
        return None


def gibibytes(nbytes: int) -> str:
    """``nbytes`` as text for an error message: ``"3.6 GiB"``, or beyond any machine's memory, says so."""
    return f"about {nbytes / 2**30:,.1f} GiB" if nbytes < 2**70 else "more than a billion TiB"


MEMORY_SHARE = 0.5  # one request may take at most this share of the device's memory


def check_memory(need: int, xp: ModuleType, what: str, fix: str) -> None:
    """Refuse, with ``ValueError``, a request for ``need`` bytes above ``MEMORY_SHARE`` of the device's memory.

    ``what`` names the request ("a step with ..."), ``fix`` says how to ask for less.
    """
    have = device_memory(xp)
    if have and need > MEMORY_SHARE * have:
        raise ValueError(f"{what} needs {gibibytes(need)}, more than this {'machine' if xp is np else 'GPU'} can "
                         f"give ({gibibytes(have)}); {fix}")
