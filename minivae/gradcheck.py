"""Finite-difference gradient checks: prove a backward pass against the definition of a derivative.

Compare in float64 with centred differences ``(f(x + h) - f(x - h)) / 2h``,
whose error is O(h^2). A relative error near 1e-7 or below means the
analytic gradient is right; above about 1e-2 it is almost surely wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .backend import Array, get_array_module, to_numpy
from .validation import check_positive

if TYPE_CHECKING:  # names for annotations alone, not imported at run time
    from .model import VAE


def numerical_gradient(f: Callable[[], float], x: Array, h: float = 1e-5, order: int = 2) -> Array:
    """Centred-difference gradient of the scalar function ``f()`` with respect to ``x``.

    ``x`` is perturbed in place, one entry at a time, and restored, so ``f``
    should read ``x`` (for example a parameter array of a model). Returns an
    array shaped like ``x`` on the same backend.

    ``order=2``: ``(f(x+h) - f(x-h)) / 2h``, error ``O(h^2)``.
    ``order=4``: ``(8 (f(x+h) - f(x-h)) - (f(x+2h) - f(x-2h))) / 12h``, error
    ``O(h^4)``, which allows a larger ``h`` and so less rounding noise.

    ``x`` must be a float32 or float64 array (float64 for a check worth the
    name): an integer array cannot hold ``x + h``, and float16 rounds it away.
    Each entry is restored even when ``f`` raises or the check is interrupted.
    """
    if order not in (2, 4):
        raise ValueError(f"order must be 2 or 4; got {order!r}")
    h = check_positive("h", h)
    dtype = getattr(x, "dtype", None)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"numerical_gradient perturbs x in place, so x must be a float64 (or float32) array; "
                         f"got {dtype or type(x).__name__}. Convert it first, e.g. x = x.astype(np.float64)")
    xp = get_array_module(x)
    grad = np.zeros(x.shape, dtype=np.float64)

    def f_at(idx, old, step):
        x[idx] = old + step
        return float(f())

    for idx in np.ndindex(*x.shape):
        old = x[idx].copy()
        try:
            d1 = f_at(idx, old, h) - f_at(idx, old, -h)
            if order == 2:
                grad[idx] = d1 / (2 * h)  # df/dx ~ (f(x+h) - f(x-h)) / 2h
            else:
                d2 = f_at(idx, old, 2 * h) - f_at(idx, old, -2 * h)
                grad[idx] = (8 * d1 - d2) / (12 * h)  # cancels the h^2 error term
        finally:
            x[idx] = old
    return xp.asarray(grad)


def rel_error(a: Any, b: Any) -> float:
    """``max |a - b| / max(1e-8, |a| + |b|)``, elementwise, as in CS231n."""
    a = to_numpy(a).astype(np.float64)
    b = to_numpy(b).astype(np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


class GradCheckReport:
    """Per-parameter relative errors of an analytic gradient against finite differences."""

    def __init__(self, errors: dict[str, float]) -> None:
        self.errors = dict(errors)

    @property
    def max_error(self) -> float:
        return max(self.errors.values())

    def passed(self, tol: float = 1e-7) -> bool:
        return self.max_error <= tol

    def __str__(self):
        width = max(len(name) for name in self.errors)
        lines = [f"{'parameter':<{width}}  max relative error"]
        lines += [f"{name:<{width}}  {err:.2e}" for name, err in self.errors.items()]
        return "\n".join(lines)

    __repr__ = __str__


def check_gradients(model: VAE, x: Any, eps: Array | None, h: float = 1e-3, order: int = 4,
                    **loss_options: Any) -> GradCheckReport:
    """Compare ``model.loss_and_grads`` with finite differences for every parameter.

    Parameters
    ----------
    model : VAE in float64 (``dtype="float64"``); finite differences in
        float32 cannot resolve errors below about 1e-3.
    x : (N, D) array
    eps : (N, K) array
        The frozen noise, so the loss is a deterministic function of the parameters.
    h, order : float, int
        Step and order of the centred differences (see :func:`numerical_gradient`).
        The loss sums many terms, so its rounding noise is a few units in the
        last place of ``|loss|``; divided by ``2h`` it swamps small gradient
        entries when ``h`` is small. The fourth-order stencil's ``O(h^4)``
        truncation error lets ``h = 1e-3`` keep both errors near 1e-10.

    **loss_options
        Passed on to ``model.loss_and_grads`` (``kl_weight``, ``free_bits``).

    Returns
    -------
    GradCheckReport
    """
    if model.dtype != np.float64:
        raise ValueError(
            f"gradient checks need a float64 model, this one is {model.dtype}; "
            "build it with dtype='float64'"
        )
    _, grads = model.loss_and_grads(x, eps, **loss_options)

    def loss():
        return model.loss_and_grads(x, eps, **loss_options)[0]

    return GradCheckReport(
        {name: rel_error(grads[name], numerical_gradient(loss, p, h, order)) for name, p in model.params.items()}
    )
