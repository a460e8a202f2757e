"""Fused optimiser updates on the GPU: each update is one CUDA kernel (a CuPy ``ElementwiseKernel``).

On CuPy, :mod:`minivae.optim`'s NumPy-style updates launch a dozen kernels a
step, each reading and writing the whole parameter vector. Here each update is
written once per element, as in :mod:`minivae.speed.fused` for the CPU, and runs as
one kernel: one read of each array and one write of what changes.

The bodies below are plain C statements of the forms ``x = expr;``,
``x op= expr;`` and ``if (cond) x = expr;``, with ``sqrt`` and ``fabs``. They
are compiled without fused multiply-adds (``--fmad=false``): every product and
sum is then rounded on its own, as in NumPy, and CUDA's default division and
square root are correctly rounded, as the CPU's are, so the kernel should
give the NumPy path's bits. ``tests/test_optim.py`` checks that on real CuPy
where a GPU is present, and on the strict stand-in, which runs these bodies
on the host.

With ``save``, the values before the step go to the ``saved_*`` outputs in
the same pass, so that the step can be undone (see
:class:`minivae.optim.UndoRecord`).
"""

import sys
from typing import Any

OPTIONS = ("--fmad=false",)  # no contraction of a * b + c into one rounding: the same bits as NumPy

ADAM_INPUTS = "T g, T b1, T c1, T b2, T c2, T lr_t, T eps_hat, T tiny, bool flush"
ADAM = """
m = m * b1 + g * c1;  // m <- b1 m + (1 - b1) dw
v = v * b2 + (g * g) * c2;  // v <- b2 v + (1 - b2) dw^2
w -= (m / (sqrt(v) + eps_hat)) * lr_t;  // w <- w - lr_t m / (sqrt(v) + eps_hat)
if (flush && fabs(m) < tiny) m = 0;  // keep m and v out of the subnormal range (see optim.Adam)
if (flush && v < tiny) v = 0;
"""

SGD_INPUTS = "T g, T lr, T momentum"
SGD_MOMENTUM = """
v = v * momentum + g;  // v <- momentum v + dw
w -= lr * v;  // w <- w - lr v
"""
SGD_PLAIN = """
w -= lr * g;  // w <- w - lr dw
"""

_kernels: dict[Any, Any] = {}


def kernel(name, inputs, outputs, body, save):
    """The ``ElementwiseKernel`` for ``body`` updating the arrays named in ``outputs`` (built once per process).

    With ``save``, each output ``x`` also gets a ``saved_x`` output written
    with its value before the body runs. A kernel is kept per module that
    built it: a process that swaps the module imported as ``cupy`` (the tests
    run the strict stand-in and real CuPy in turn) gets that module's kernel.
    """
    cupy = sys.modules["cupy"]  # the caller holds CuPy arrays, so CuPy is imported
    key = (cupy, name, save)
    if key not in _kernels:
        if save:
            body = "".join(f"saved_{x} = {x};\n" for x in outputs) + body
            outputs = outputs + tuple("saved_" + x for x in outputs)
        params = ", ".join("T " + x for x in outputs)
        _kernels[key] = cupy.ElementwiseKernel(inputs, params, body, f"minivae_{name}", options=OPTIONS)
    return _kernels[key]


def adam(w, dw, m, v, b1, c1, b2, c2, lr_t, eps_hat, tiny, flush, saved=None):
    """One Adam step in place, in one kernel; scalars as in :func:`minivae.speed.fused.adam`.

    ``saved``: three arrays like ``w`` that receive ``w``, ``m`` and ``v`` as they were.
    """
    args = (dw, b1, c1, b2, c2, lr_t, eps_hat, tiny, bool(flush), w, m, v)
    kernel("adam", ADAM_INPUTS, ("w", "m", "v"), ADAM, saved is not None)(*args, *(saved or ()))


def sgd(w, dw, v, lr, momentum, saved=None):
    """One step of gradient descent with momentum in place, in one kernel (``momentum = 0``: ``v`` is unused).

    ``saved``: arrays like ``w`` that receive ``w`` (and ``v``, with momentum) as they were.
    """
    if momentum == 0:
        run = kernel("sgd", SGD_INPUTS, ("w",), SGD_PLAIN, saved is not None)
        run(dw, lr, momentum, w, *(saved or ()))
    else:
        run = kernel("sgd_momentum", SGD_INPUTS, ("w", "v"), SGD_MOMENTUM, saved is not None)
        run(dw, lr, momentum, w, v, *(saved or ()))
