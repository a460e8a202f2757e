"""Hand-written optimisers: SGD with momentum, and Adam.

An optimiser updates one parameter vector ``w`` in place from its gradient
``dw`` (the VAE keeps all its parameters in one vector, with per-layer views,
so one call updates the whole model). State arrays are allocated on the same
backend as ``w`` the first time ``step`` sees it.

Each update is written here in NumPy, the readable reference. With the
``fast`` extra installed (numba), NumPy arrays are updated by the compiled
loops of :mod:`minivae.speed.fused` instead, and CuPy arrays by the CUDA kernels of
:mod:`minivae.speed.gpu_kernels`, each in one pass and written to give the same bits
(``tests/test_optim.py`` checks it; the GPU's only where a GPU is present).
``MINIVAE_FAST=0`` forces the NumPy-style update on either backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from .backend import Array, get_array_module, to_backend
from .speed import fused, gpu_kernels
from .speed.chunks import for_each_chunk
from .validation import check_positive


class UndoRecord:
    """Where a step saves what it is about to change, so that the step can be undone.

    ``arrays`` maps ``"w"`` and each state name to a buffer of the
    parameters' shape (allocated once, reused every step); ``complete`` is
    True once they hold the values from before the step. The NumPy path
    copies them before updating; a compiled step writes them in its one pass.
    """

    def __init__(self) -> None:
        self.arrays: dict[str, Array] = {}
        self.complete = False

    def buffers(self, names: Sequence[str], like: Array) -> list[Array]:
        """The buffers for ``names``, allocated like ``like`` where missing or mismatched."""
        for name in names:
            buf = self.arrays.get(name)
            if buf is None or buf.shape != like.shape or buf.dtype != like.dtype:
                self.arrays[name] = get_array_module(like).empty_like(like)
        return [self.arrays[name] for name in names]

    def save(self, **arrays: Array) -> None:
        """Copy each named array into its buffer, then mark the record complete."""
        for (name, a), buf in zip(arrays.items(), self.buffers(list(arrays), next(iter(arrays.values())))):
            buf[...] = a
        self.complete = True


class Optimizer:
    """Shared state handling: ``t`` counts the steps taken, ``state`` holds named arrays.

    A subclass names its state arrays in ``state_names()`` and its
    constructor's arguments in ``hyperparameters()``; a checkpoint stores both
    and rebuilds the optimiser through the constructor, so every value is
    checked again on the way back in.
    """

    def __init__(self, lr: float) -> None:
        self.lr = check_positive("lr", lr)
        self.t = 0
        self.state: dict[str, Array] = {}

    def hyperparameters(self) -> dict[str, Any]:
        """The constructor's arguments, as plain Python values."""
        return {"lr": self.lr}

    def state_names(self) -> tuple[str, ...]:
        """The names of the state arrays that ``step`` keeps."""
        return ()

    def _buffer(self, name, like):
        if name not in self.state:
            self.state[name] = get_array_module(like).zeros_like(like)
        return self.state[name]

    def state_dict(self) -> dict[str, Any]:
        """``{"t": int, name: array, ...}``: everything needed to resume exactly."""
        return {"t": self.t, **self.state}

    def load_state_dict(self, state: Mapping[str, Any], like: Array = None) -> None:
        """Restore what :meth:`state_dict` returned, after checking it.

        ``t`` must be an integer >= 0; after any step, each array of
        ``state_names()`` must be present, finite, and (given ``like``, the
        parameter vector) of its shape and dtype. Raises ``ValueError``
        naming the first problem; the optimiser is unchanged then.
        """
        state = dict(state)
        t = state.pop("t", None)
        if not isinstance(t, (int, np.integer)) or isinstance(t, (bool, np.bool_)) or t < 0:
            raise ValueError(f"the optimiser's step count must be an integer >= 0; got {t!r}")
        expected = set(self.state_names()) if t > 0 else set()
        if not expected <= set(state) <= set(self.state_names()):
            raise ValueError(f"{type(self).__name__} after {t} steps keeps the state {sorted(expected) or 'nothing'}; "
                             f"got {sorted(state) or 'nothing'}")
        for name, a in state.items():
            if like is not None and (a.shape != like.shape or a.dtype != like.dtype):
                raise ValueError(f"optimiser state {name!r} is {a.dtype} {a.shape}; the parameters are "
                                 f"{like.dtype} {like.shape}")
            self.check_state(name, a)
        self.t, self.state = int(t), state

    def check_state(self, name: str, a: Any) -> None:
        """Raise ``ValueError`` unless the state array ``a`` is one this optimiser could have made."""
        if not bool(get_array_module(a).isfinite(a).all()):
            raise ValueError(f"optimiser state {name!r} holds NaN or inf")

    def to(self, xp: ModuleType) -> None:
        """Move the state arrays to the array module ``xp``."""
        self.state = {k: to_backend(v, xp) for k, v in self.state.items()}


class SGD(Optimizer):
    """Gradient descent with (heavy-ball) momentum.

    Notes
    -----
    ``v <- momentum * v + dw``; ``w <- w - lr * v``. With ``momentum = 0`` this
    is plain ``w <- w - lr * dw``.
    """

    def __init__(self, lr: float = 0.01, momentum: float = 0.9) -> None:
        super().__init__(lr)
        self.momentum = check_positive("momentum", momentum, allow_zero=True)

    def hyperparameters(self) -> dict[str, Any]:
        return {"lr": self.lr, "momentum": self.momentum}

    def state_names(self) -> tuple[str, ...]:
        return ("v",) if self.momentum else ()

    def step(self, w: Array, dw: Array, saved: UndoRecord | None = None) -> None:
        """Update ``w`` in place from ``dw``; an :class:`UndoRecord` ``saved`` receives what it changes."""
        v = self._buffer("v", w) if self.momentum else w  # without momentum, v is never read
        xp = get_array_module(w, dw)
        names = ("w", "v") if self.momentum else ("w",)  # what the update changes
        if xp is not np and fused.requested():  # one CUDA kernel (see minivae.speed.gpu_kernels)
            one = w.dtype.type
            buffers = None if saved is None else saved.buffers(names, w)
            gpu_kernels.sgd(w, dw, v, one(self.lr), one(self.momentum), buffers)
            if saved is not None:
                saved.complete = True
        elif fused.enabled() and xp is np:
            one = w.dtype.type
            if saved is not None:  # without momentum there is no v to save, and the kernel never reads saved_v
                saved_w, *more = saved.buffers(names, w)
                saved_v = more[0] if more else saved_w
            else:
                saved_w = saved_v = w
            fused.sgd(w, dw, v, one(self.lr), one(self.momentum), saved_w, saved_v, saved is not None)
            if saved is not None:
                saved.complete = True
        elif self.momentum == 0:
            if saved is not None:
                saved.save(w=w)
            w -= self.lr * dw  # w <- w - lr * dw
        else:
            if saved is not None:
                saved.save(w=w, v=v)
            v *= self.momentum
            v += dw  # v <- momentum * v + dw
            w -= self.lr * v  # w <- w - lr * v
        self.t += 1


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

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        super().__init__(lr)
        try:
            b1, b2 = (check_positive("each of Adam's betas", b, allow_zero=True) for b in betas)
        except (TypeError, ValueError):
            b1 = None
        if b1 is None or not (b1 < 1 and b2 < 1):
            raise ValueError(f"Adam's betas must be two numbers in [0, 1); got {betas!r}")
        self.b1, self.b2 = b1, b2
        self.eps = check_positive("eps", eps)

    def hyperparameters(self) -> dict[str, Any]:
        return {"lr": self.lr, "betas": [self.b1, self.b2], "eps": self.eps}

    def state_names(self) -> tuple[str, ...]:
        return ("m", "v")

    def check_state(self, name: str, a: Any) -> None:
        super().check_state(name, a)
        if name == "v" and bool((a < 0).any()):
            raise ValueError("Adam's second moment 'v' has negative entries; it is a running mean of squares")

    def step(self, w: Array, dw: Array, saved: UndoRecord | None = None) -> None:
        """Update ``w`` in place from ``dw``; an :class:`UndoRecord` ``saved`` receives what it changes."""
        t = self.t + 1  # counted in self.t only once the update is complete
        xp = get_array_module(w, dw)
        m, v = self._buffer("m", w), self._buffer("v", w)
        b1, b2 = self.b1, self.b2
        c2 = (1 - b2**t) ** 0.5
        lr_t = self.lr * c2 / (1 - b1**t)
        eps_hat = self.eps * c2
        flush = t % self.FLUSH_EVERY == 0
        tiny = np.finfo(w.dtype).tiny  # the smallest normal number
        one = w.dtype.type  # each scalar in the arrays' precision, as NumPy casts it below
        scalars = (one(b1), one(1 - b1), one(b2), one(1 - b2), one(lr_t), one(eps_hat), one(tiny), flush)
        if xp is not np and fused.requested():  # the same update as one CUDA kernel (see minivae.speed.gpu_kernels)
            buffers = None if saved is None else saved.buffers(("w", "m", "v"), w)
            gpu_kernels.adam(w, dw, m, v, *scalars, saved=buffers)
            if saved is not None:
                saved.complete = True
            self.t = t
            return
        if fused.enabled() and xp is np:  # the same update, compiled into one pass (see minivae.speed.fused)
            in_place = [w, m, v] if saved is None else saved.buffers(("w", "m", "v"), w)
            fused.adam(w, dw, m, v, *scalars, *in_place, saved is not None)
            if saved is not None:
                saved.complete = True
            self.t = t
            return
        if saved is not None:
            saved.save(w=w, m=m, v=v)

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
        self.t = t


OPTIMIZERS = {"adam": Adam, "sgd": SGD}
