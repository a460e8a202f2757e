"""Compiled, fused optimiser updates: the ``fast`` extra (``pip install "minivae[fast]"``, which brings numba).

The NumPy updates in :mod:`minivae.optim` make a dozen passes over the
parameter vector, one NumPy call each. Here each update is the textbook loop,
written once per element, and numba compiles it into one pass. The two agree
to the last bit (``tests/test_optim.py`` checks it): every operation is done
in the arrays' own precision, in the same order as the NumPy path, with the
scalars cast to that precision as NumPy casts them.

Compiled code is cached on disk (``cache=True``), so each machine pays the
compilation once. ``MINIVAE_FAST=0`` forces the NumPy path; without numba it
is the only one.
"""

import importlib.util
import math
import os
import warnings
from pathlib import Path
from typing import Any

# numba is imported at the first compiled update, not with minivae: it takes about 100 MiB and a second to load
AVAILABLE = importlib.util.find_spec("numba") is not None
_kernels: dict[str, Any] = {}


OFF, ON = ("0", "false", "no", "off"), ("1", "true", "yes", "on", "")


def requested():
    """False when ``MINIVAE_FAST`` is ``0`` (or ``false``, ``no``, ``off``): the NumPy-style updates.

    That holds on the CPU and the GPU alike; on CuPy it also runs
    :func:`minivae.backend.elementwise` functions one kernel per operation,
    unfused. Any other value than these and ``1``, ``true``, ``yes``, ``on``
    is an error, so that a setting meant to turn the compiled path off never
    leaves it on.
    """
    value = os.environ.get("MINIVAE_FAST", "1").strip().lower()
    if value.isdigit():
        value = "1" if int(value) else "0"
    if value not in OFF + ON:
        raise ValueError(f"MINIVAE_FAST must be 0 (or false, no, off) or 1 (or true, yes, on); got "
                         f"{os.environ['MINIVAE_FAST']!r}")
    return value in ON


def enabled():
    """True when numba is installed and ``MINIVAE_FAST`` is not ``"0"``."""
    return AVAILABLE and requested()


def _compiled(fn):
    """``fn`` compiled by numba on its first call (and cached on disk for later processes)."""
    def call(*args):
        kernel = _kernels.get(fn.__name__)
        if kernel is not None:
            return kernel(*args)
        import numba
        # error_model="numpy": a division by zero gives inf as in NumPy, not a check that stops vectorisation
        kernel = numba.njit(cache=True, error_model="numpy", nogil=True)(fn)
        try:
            result = kernel(*args)  # the first call loads the cache, or compiles and writes it
        except Exception as err:  # a damaged cache file (a truncated write, a disk error) fails the load
            if not _remove_cache(kernel):
                raise
            warnings.warn(f"the compiled {fn.__name__} in numba's cache was damaged ({type(err).__name__}: {err}); "
                          "it was deleted and is compiled afresh", RuntimeWarning, stacklevel=3)
            kernel = numba.njit(cache=True, error_model="numpy", nogil=True)(fn)
            result = kernel(*args)
        _kernels[fn.__name__] = kernel
        return result

    call.__doc__ = fn.__doc__
    return call


def _remove_cache(kernel):
    """Delete the cache files of the numba function ``kernel``; returns whether there were any."""
    try:
        cache = kernel._cache  # numba's own: the folder and the index file's name
        folder, index = Path(cache._cache_path), cache._cache_file._index_name
    except AttributeError:
        return False
    stem = index[:-len(".nbi")]
    files = [f for f in folder.glob(stem + "*") if f.suffix in (".nbi", ".nbc")]
    for f in files:
        f.unlink(missing_ok=True)
    return bool(files)


def _adam(w, dw, m, v, b1, c1, b2, c2, lr_t, eps_hat, tiny, flush, saved_w, saved_m, saved_v, save):
    """One Adam step in place; ``c1 = 1 - b1``, ``c2 = 1 - b2``, all scalars in the arrays' dtype.

    With ``save``, the values before the step go to ``saved_w``, ``saved_m``
    and ``saved_v`` in the same pass, so that the step can be undone.
    """
    for i in range(w.size):
        if save:
            saved_w[i], saved_m[i], saved_v[i] = w[i], m[i], v[i]
        g = dw[i]
        m[i] = m[i] * b1 + g * c1  # m <- b1 m + (1 - b1) dw
        v[i] = v[i] * b2 + (g * g) * c2  # v <- b2 v + (1 - b2) dw^2
        w[i] -= (m[i] / (math.sqrt(v[i]) + eps_hat)) * lr_t  # w <- w - lr_t m / (sqrt(v) + eps_hat)
        if flush:  # keep m and v out of the slow subnormal range (see optim.Adam)
            if abs(m[i]) < tiny:
                m[i] = 0
            if v[i] < tiny:
                v[i] = 0


def _sgd(w, dw, v, lr, momentum, saved_w, saved_v, save):
    """One step of gradient descent with momentum in place (``momentum = 0``: ``v`` is not used)."""
    for i in range(w.size):
        if save:
            saved_w[i] = w[i]
        if momentum == 0:
            w[i] -= lr * dw[i]  # w <- w - lr dw
        else:
            if save:
                saved_v[i] = v[i]
            v[i] = v[i] * momentum + dw[i]  # v <- momentum v + dw
            w[i] -= lr * v[i]  # w <- w - lr v


adam = _compiled(_adam)
sgd = _compiled(_sgd)
