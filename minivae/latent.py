"""Latent-space tools: interpolation, arithmetic and denoising."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from .backend import Array, to_numpy

if TYPE_CHECKING:  # names for annotations alone, not imported at run time
    from .model import VAE


def interpolate(model: VAE, x_a: Any, x_b: Any, steps: int = 10) -> Array:
    """Decode ``steps`` points on the line from ``E[z|x_a]`` to ``E[z|x_b]``; returns (steps, D).

    ``x_a`` and ``x_b`` are single examples, shape (D,) or (1, D).
    """
    mu = model.encode(np.stack([np.ravel(to_numpy(x_a)), np.ravel(to_numpy(x_b))]))[0]
    t = model.xp.asarray(np.linspace(0, 1, steps, dtype=model.dtype)[:, None])  # (steps, 1)
    z = (1 - t) * mu[0] + t * mu[1]  # z(t) = (1 - t) mu_a + t mu_b
    return model.decode(z)


def latent_mean(model: VAE, x: Any) -> Array:
    """The average posterior mean ``E[z|x]`` over a set of examples: a class's centre in latent space."""
    return model.encode(x)[0].mean(axis=0)


def latent_arithmetic(model: VAE, x: Any, plus: Iterable[Any] = (), minus: Iterable[Any] = ()) -> Array:
    """Decode ``E[z|x] + sum(means of plus) - sum(means of minus)`` for each row of ``x``.

    ``plus`` and ``minus`` are sequences of example sets; each contributes its
    :func:`latent_mean`. For example ``latent_arithmetic(m, sevens, plus=[ones], minus=[sevens_all])``.
    """
    z = model.encode(x)[0]
    for group in plus:
        z = z + latent_mean(model, group)
    for group in minus:
        z = z - latent_mean(model, group)
    return model.decode(z)


def denoise(model: VAE, x_noisy: Any) -> Array:
    """Project noisy inputs onto what the model can generate: ``decode(E[z|x_noisy])``."""
    return model.reconstruct(x_noisy)
