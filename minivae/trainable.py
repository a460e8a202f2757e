"""What a model must offer to be trained by ``fit`` and scored by ``minivae.evaluate``: the protocol every family meets.

A family (:mod:`minivae.families`) is a class with the members below. :class:`~minivae.model.VAE` has them, and
:class:`~minivae.flows.FlowVAE` changes only what its posterior changes: the step (``forward_backward``), the
importance weights (``log_weights``) and the ELBO (``elbo``). The type checker holds every family to this list
where ``fit`` and ``log_likelihood`` are called with it.

In words, a model is:

- **a parameter vector** ``flat_params`` with its gradient ``flat_grads`` (the optimiser updates the one from
  the other in a single pass), and the per-layer views of both, ``params`` and ``grads``;
- **a training step**: ``forward_backward(x, eps, kl_weight, free_bits, onehot)`` fills ``flat_grads`` with
  the gradient of the batch's loss and returns ``(loss, reconstruction, kl)`` on the device, from noise
  ``eps`` of shape ``(N, noise_dim)`` that the loop draws (``draw_normal``, ``host_normal``) from ``rng_``
  (``noise_dim`` is the standard normals one draw of the posterior takes: ``latent_dim``, or both layers' sizes
  for :class:`~minivae.hierarchical.HierarchicalVAE`);
  ``iwae_forward_backward`` does the same for the importance-weighted bound, and ``check_objective`` refuses
  what the model cannot train on;
- **a bound and a likelihood**: ``elbo(x)`` per example, and ``log_weights(x, eps)``, the log importance
  weights ``log p(x, z) - log q(z|x)`` of noise ``eps`` (B, K, noise_dim), from which
  :func:`minivae.evaluate.log_likelihood` estimates ``log p(x)``;
- **its inputs checked** (``checked_input``, ``one_hot``) and its latent statistics (``encoder_forward``, the
  posterior's base Gaussian, for the active units);
- **its state**: the generators ``rng_`` and ``eval_rng_``, ``history_``, ``optimizer_``,
  ``partial_epoch_`` and ``stopped_by_``, which checkpoints save with the configuration ``get_config()``.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .backend import Array

if TYPE_CHECKING:  # names for annotations alone, not imported at run time
    from .likelihoods import Likelihood
    from .optim import Optimizer


class Trainable(Protocol):
    """The members ``fit``, ``minivae.evaluate`` and checkpoints use (see the module's description)."""

    xp: ModuleType
    dtype: Any
    input_dim: int
    hidden_dims: tuple[int, ...]
    latent_dim: int
    n_classes: int | None
    beta: float
    likelihood: str
    decoder_std: float | str
    likelihood_: Likelihood
    params: dict[str, Array]
    grads: dict[str, Array]
    flat_params: Array
    flat_grads: Array
    rng_: np.random.Generator
    eval_rng_: np.random.Generator
    history_: list[dict[str, Any]]
    optimizer_: Optimizer | None
    partial_epoch_: dict[str, Any] | None
    stopped_by_: str | None

    @property
    def noise_dim(self) -> int: ...

    def get_config(self) -> dict[str, Any]: ...

    def checked_input(self, x: Any, name: str = "x") -> Array: ...

    def one_hot(self, y: Any, n: int, name: str = "y") -> Array | None: ...

    def check_objective(self, objective: str, n_samples: int, kl_weight: float | None = None,
                        free_bits: float = 0.0, warmup_epochs: int = 0) -> tuple[str, int]: ...

    def draw_normal(self, shape: tuple[int, ...], rng: np.random.Generator | None = None) -> Array: ...

    def host_normal(self, shape: tuple[int, ...], rng: np.random.Generator | None = None) -> np.ndarray: ...

    def encoder_forward(self, x: Array, onehot: Array | None = None) -> tuple[Array, Array]: ...

    def forward_backward(self, x: Array, eps: Array, kl_weight: float | None = None, free_bits: float = 0.0,
                         onehot: Array | None = None) -> Array: ...

    def iwae_forward_backward(self, x: Array, eps: Array, onehot: Array | None = None) -> Array: ...

    def log_weights(self, x: Array, eps: Array, onehot: Array | None = None) -> Array: ...

    def elbo(self, x: Any, n_samples: int = 1, eps: Array | None = None, y: Any = None) -> Array: ...
