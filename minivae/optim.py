"""Hand-written optimisers: SGD with momentum, and Adam.

An optimiser updates one parameter vector ``w`` in place from its gradient
``dw`` (the VAE keeps all its parameters in one vector, with per-layer views,
so one call updates the whole model). State arrays are allocated on the same
backend as ``w`` the first time ``step`` sees it.
"""

import numpy as np

from .backend import get_array_module, to_backend
from .parallel import for_each_chunk
from .validation import check_positive


class Optimizer:
    """Shared state handling: ``state`` holds a step count and named arrays."""

    def __init__(self, lr):
        self.lr = check_positive("lr", lr)
        self.t = 0
        self.state = {}

    def _buffer(self, name, like):
        if name not in self.state:
            self.state[name] = get_array_module(like).zeros_like(like)
        return self.state[name]

    def state_dict(self):
        """``{"t": int, name: array, ...}``: everything needed to resume exactly."""
        return {"t": self.t, **self.state}

    def load_state_dict(self, state):
        state = dict(state)
        self.t = int(state.pop("t"))
        self.state = state

    def to(self, xp):
        """Move the state arrays to the array module ``xp``."""
        self.state = {k: to_backend(v, xp) for k, v in self.state.items()}


class SGD(Optimizer):
    """Gradient descent with (heavy-ball) momentum.

    Notes
    -----
    ``v <- momentum * v + dw``; ``w <- w - lr * v``. With ``momentum = 0`` this
    is plain ``w <- w - lr * dw``.
    """

    def __init__(self, lr=0.01, momentum=0.9):
        super().__init__(lr)
        self.momentum = check_positive("momentum", momentum, allow_zero=True)

    def step(self, w, dw):
        self.t += 1
        if self.momentum == 0:
            w -= self.lr * dw
            return
        v = self._buffer("v", w)
        v *= self.momentum
        v += dw  # v <- momentum * v + dw
        w -= self.lr * v  # w <- w - lr * v


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015).

    Notes
    -----
    ``m <- b1 m + (1 - b1) dw``; ``v <- b2 v + (1 - b2) dw^2``;
    ``w <- w - lr_t m / (sqrt(v) + eps_hat)`` with the bias corrections folded
    into ``lr_t = lr sqrt(1 - b2^t) / (1 - b1^t)`` and
    ``eps_hat = eps sqrt(1 - b2^t)``, which is algebraically the textbook
    ``lr m_hat / (sqrt(v_hat) + eps)``.

    A ReLU unit that never fires gets exactly-zero gradients, so its ``m``
    shrinks by ``b1`` every step until it is subnormal (below about 1e-38 in
    float32), where x86 arithmetic is tens of times slower, and it never
    reaches zero: ``0.9`` times the smallest subnormal rounds back to itself.
    Every ``FLUSH_EVERY`` steps such values of ``m`` and ``v`` are set to zero;
    the update they would have made is below ``lr * 1e-38 / eps``.
    """

    FLUSH_EVERY = 16

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(lr)
        self.b1, self.b2 = betas
        if not (0 <= self.b1 < 1 and 0 <= self.b2 < 1):
            raise ValueError(f"Adam betas must lie in [0, 1); got {betas!r}")
        self.eps = check_positive("eps", eps)

    def step(self, w, dw):
        self.t += 1
        xp = get_array_module(w, dw)
        m, v = self._buffer("m", w), self._buffer("v", w)
        b1, b2 = self.b1, self.b2
        c2 = (1 - b2**self.t) ** 0.5
        lr_t = self.lr * c2 / (1 - b1**self.t)
        eps_hat = self.eps * c2
        flush = self.t % self.FLUSH_EVERY == 0
        tiny = np.finfo(w.dtype).tiny  # the smallest normal number

        def update(s, t):
            # One chunk, with t as scratch: every line below re-reads arrays that are still in cache.
            g, mc, vc, wc = dw[s], m[s], v[s], w[s]
            mc *= b1
            xp.multiply(g, 1 - b1, out=t)
            mc += t  # m <- b1 m + (1 - b1) dw
            vc *= b2
            xp.multiply(g, g, out=t)
            t *= 1 - b2
            vc += t  # v <- b2 v + (1 - b2) dw^2
            xp.sqrt(vc, out=t)
            t += eps_hat
            xp.divide(mc, t, out=t)
            t *= lr_t
            wc -= t  # w <- w - lr_t m / (sqrt(v) + eps_hat)
            if flush:  # keep m and v out of the slow subnormal range (see the class notes)
                mc[xp.abs(mc) < tiny] = 0
                vc[vc < tiny] = 0

        for_each_chunk(w.size, update, xp, w.dtype)


OPTIMIZERS = {"adam": Adam, "sgd": SGD}
