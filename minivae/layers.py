"""Hand-written layers: forward stores what backward needs; backward applies the chain rule.

Every layer follows one contract:

* ``forward(...)`` computes the output and overwrites ``self.cache`` with the
  arrays backward will need (never appends, so memory does not grow).
* ``backward(dout)`` takes dL/d(output) and returns dL/d(input); a layer with
  parameters also writes dL/d(parameter) into ``self.grads``.
* ``self.params`` and ``self.grads`` are dicts with the same keys.

Shapes: ``N`` examples in a batch, ``D`` input features, ``H`` output features.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from .backend import Array, elementwise, get_array_module


class Layer:
    """Base class: parameter/gradient dicts and the forward-before-backward guard."""

    def __init__(self) -> None:
        self.params: dict[str, Array] = {}
        self.grads: dict[str, Array] = {}
        self.cache: Any = None  # what forward kept for backward

    def _cached(self):
        if self.cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward() was called before forward(): "
                "run forward on a batch first, then backward with the gradient of its output"
            )
        return self.cache


class Dense(Layer):
    """Affine layer ``y = x @ W + b``.

    Parameters ``W`` of shape ``(D, H)`` and ``b`` of shape ``(H,)``.

    Notes
    -----
    With ``dy = dL/dy`` of shape ``(N, H)``:
    ``dL/dW = x^T dy``, ``dL/db = sum_n dy[n]``, ``dL/dx = dy W^T``.
    """

    def __init__(self, W: Array, b: Array, dW: Array = None, db: Array = None) -> None:
        super().__init__()
        xp = get_array_module(W, b)
        self.params = {"W": W, "b": b}
        # Gradients may be given as views into a caller's buffer (the VAE keeps
        # all of them in one vector); otherwise the layer owns them.
        self.grads = {
            "W": xp.zeros_like(W) if dW is None else dW,
            "b": xp.zeros_like(b) if db is None else db,
        }

    def forward(self, x: Array) -> Array:
        """``x`` (N, D) -> ``y`` (N, H); caches ``x``."""
        self.cache = x
        xp = get_array_module(x)
        y = xp.matmul(x, self.params["W"])  # (N, D) @ (D, H) -> (N, H)
        y += self.params["b"]  # broadcast b over the batch
        return y

    def backward(self, dy: Array, need_dx: bool = True) -> Array | None:
        """``dy`` (N, H) -> ``dx`` (N, D); fills ``grads``.

        ``need_dx=False`` skips dL/dx, which the first layer of a network
        (whose input is the data) never needs.
        """
        x = self._cached()
        xp = get_array_module(dy)
        xp.matmul(x.T, dy, out=self.grads["W"])  # dL/dW = x^T dy      (D, H)
        dy.sum(axis=0, out=self.grads["b"])  # dL/db = sum_n dy[n]  (H,)
        if not need_dx:
            return None
        return xp.matmul(dy, self.params["W"].T)  # dL/dx = dy W^T  (N, D)


class ReLU(Layer):
    """``y = max(x, 0)``; ``dy/dx = 1`` where ``x > 0``, else 0."""

    def forward(self, x: Array) -> Array:
        xp = get_array_module(x)
        y = xp.maximum(x, 0)
        self.cache = y
        return y

    def backward(self, dy: Array) -> Array:
        return relu_backward(dy, self._cached())


@elementwise
def relu_backward(xp: ModuleType, dy: Array, y: Array) -> Array:
    """dL/dx from ``dy`` and ReLU's output ``y``; one kernel on CuPy."""
    return dy * (y > 0)  # dy/dx = 1[x > 0]  (y > 0 exactly where x > 0)


class Tanh(Layer):
    """``y = tanh(x)``; ``dy/dx = 1 - y^2``."""

    def forward(self, x: Array) -> Array:
        xp = get_array_module(x)
        y = xp.tanh(x)
        self.cache = y
        return y

    def backward(self, dy: Array) -> Array:
        return tanh_backward(dy, self._cached())


@elementwise
def tanh_backward(xp: ModuleType, dy: Array, y: Array) -> Array:
    """dL/dx from ``dy`` and tanh's output ``y``; one kernel on CuPy."""
    return dy * (1 - y * y)  # dy/dx = 1 - tanh(x)^2


class Sigmoid(Layer):
    """``y = 1 / (1 + exp(-x))``; ``dy/dx = y (1 - y)``."""

    def forward(self, x: Array) -> Array:
        y = sigmoid(x)
        self.cache = y
        return y

    def backward(self, dy: Array) -> Array:
        return sigmoid_backward(dy, self._cached())


@elementwise
def sigmoid_backward(xp: ModuleType, dy: Array, y: Array) -> Array:
    """dL/dx from ``dy`` and the sigmoid's output ``y``; one kernel on CuPy."""
    return dy * y * (1 - y)  # dy/dx = sigmoid(x) (1 - sigmoid(x))


@elementwise
def sigmoid(xp: ModuleType, x: Array) -> Array:
    """Numerically stable logistic function, exact for any finite ``x``; one kernel on CuPy.

    Uses ``s = exp(-|x|)`` (never overflows): ``1 / (1 + s)`` for ``x >= 0``
    and ``e^x / (1 + s)`` for ``x < 0``, i.e. ``exp(min(x, 0)) / (1 + s)``.
    """
    return xp.exp(xp.minimum(x, 0)) / (1 + xp.exp(-xp.abs(x)))


ACTIVATIONS: dict[str, type[ReLU | Tanh | Sigmoid]] = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid}


class GaussianSample(Layer):
    """The reparameterisation trick: ``z = mu + sigma * eps`` with ``sigma = exp(logvar / 2)``.

    The noise ``eps ~ N(0, I)`` is an *input*, so the sample is a
    deterministic, differentiable function of ``mu`` and ``logvar``.

    Notes
    -----
    Backward is the chain rule written out:
    ``dz/dmu = 1``, ``dz/dsigma = eps``, ``dsigma/dlogvar = sigma / 2``, so
    ``dL/dmu = dL/dz`` and ``dL/dlogvar = dL/dz * eps * sigma / 2``.
    """

    def forward(self, mu: Array, logvar: Array, eps: Array) -> Array:
        """``mu``, ``logvar``, ``eps`` all (N, K) -> ``z`` (N, K)."""
        z, sigma = gaussian_sample(mu, logvar, eps)
        self.cache = (sigma, eps)  # the *same* eps must be used in backward
        return z

    def backward(self, dz: Array) -> tuple[Array, Array]:
        """``dz`` (N, K) -> ``(dmu, dlogvar)``, both (N, K)."""
        sigma, eps = self._cached()
        return gaussian_sample_backward(dz, sigma, eps)


@elementwise
def gaussian_sample(xp: ModuleType, mu: Array, logvar: Array, eps: Array) -> tuple[Array, Array]:
    """:class:`GaussianSample`'s forward: ``(z, sigma)``; one kernel on CuPy."""
    sigma = xp.exp(0.5 * logvar)  # sigma = exp(logvar / 2): logvar is log sigma^2
    return mu + sigma * eps, sigma


@elementwise
def gaussian_sample_backward(xp: ModuleType, dz: Array, sigma: Array, eps: Array) -> tuple[Array, Array]:
    """:class:`GaussianSample`'s backward: ``(dmu, dlogvar)`` from ``dz``; one kernel on CuPy."""
    dmu = dz * 1  # dz/dmu = 1
    dsigma = dz * eps  # dz/dsigma = eps
    dlogvar = dsigma * (sigma / 2)  # dsigma/dlogvar = sigma / 2
    return dmu, dlogvar
