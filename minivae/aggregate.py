"""The aggregate posterior, and the ELBO's KL term split into information and mismatch.

Averaged over a data set ``x_1 .. x_N``, the KL term of the ELBO (the *rate*)
is not the information the code carries about x. With the *aggregate
posterior* ``q(z) = (1/N) sum_n q(z|x_n)``, the distribution of codes over the
whole data set, it splits exactly (Hoffman & Johnson, 2016, "ELBO surgery")::

    (1/N) sum_n KL(q(z|x_n) || p(z))  =  I_q(x; z)  +  KL(q(z) || p(z))

* ``I_q(x; z) = (1/N) sum_n E_{q(z|x_n)}[log q(z|x_n) - log q(z)]``, the mutual
  information between the index of an example and its code: what the code
  says about which x it came from. It lies between 0 and ``log N``.
* ``KL(q(z) || p(z))``, how far the codes of the whole data set, taken
  together, are from the prior: the price of the prior's shape, paid however
  little the code says. Samples drawn from ``p(z)`` land where the codes are
  not when this is large.

The rate is exact (each ``KL(q(z|x_n) || p(z))`` is in closed form); the
information is estimated by drawing ``z ~ q(z|x_n)`` and evaluating ``q(z)``
exactly as the mixture of all N posteriors; the mismatch is their difference,
with the information's standard error.

A learned prior (:mod:`minivae.priors`) has no closed-form rate, and is made to
shrink the mismatch: :func:`prior_mismatch` estimates it for any model from its
own ``log_prior``, both ways: ``KL(q(z) || p(z))`` from codes, and
``KL(p(z) || q(z))`` from draws of the prior, large where the prior puts mass
that no code has (the *holes* samples fall into).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .backend import to_numpy
from .losses import LOG_2PI
from .priors import mixture_log_density
from .validation import check_positive

if TYPE_CHECKING:  # names for annotations alone, not imported at run time
    from .model import VAE

MAX_BLOCK = 2**22  # float64 numbers (32 MB) in one block of codes scored against every posterior


@dataclass(frozen=True)
class RateSplit:
    """``rate = information + mismatch`` in nats per example, with Monte Carlo standard errors.

    ``mismatch`` is ``KL(q(z) || p(z))``; ``log_n`` is the information's ceiling, ``log N``.
    """

    rate: float
    information: float
    information_se: float
    mismatch: float
    mismatch_se: float
    log_n: float


def rate_split(model: VAE, x: Any, n_samples: int = 4, batch_size: int = 64) -> RateSplit:
    """Split the average KL of ``model``'s posteriors over ``x`` into ``I_q(x; z)`` and ``KL(q(z) || p(z))``.

    ``x`` defines the aggregate posterior (use the training set: the
    information cannot exceed ``log len(x)``). ``n_samples`` codes are drawn
    per example from the model's evaluation stream. The standard error is the
    spread of the per-example estimates over ``sqrt(N)``: it holds their Monte
    Carlo noise and, besides, how much the examples differ, so it errs on the
    large side. Works on the host in float64, up to ``batch_size`` drawn codes
    at a time against all N posteriors, in blocks of at most ``MAX_BLOCK``
    numbers; the work grows as ``N^2``, so a few thousand examples take
    seconds (a random subset of a larger set gives the split for that subset).
    """
    if model.family != "vae":
        raise ValueError(f"rate_split's rate is the closed-form KL of a diagonal Gaussian posterior to N(0, I), not "
                         f"this {type(model).__name__}'s; use prior_mismatch for a model with a learned prior")
    S = check_positive("n_samples", n_samples, integer=True)
    B = check_positive("batch_size", batch_size, integer=True)
    mu, logvar = _posteriors(model, x, "rate_split")
    N, L = mu.shape
    var = np.exp(logvar)
    rate = 0.5 * (mu * mu + var - logvar - 1).sum(axis=1)  # (N,) KL(q(z|x_n) || p(z)), exact
    information = np.zeros(N)
    for _ in range(S):
        eps = to_numpy(model.draw_normal((N, L), model.eval_rng_)).astype(np.float64)
        z = mu + np.sqrt(var) * eps  # (N, L): one code per example
        own = -0.5 * ((eps * eps).sum(axis=1) + logvar.sum(axis=1) + L * LOG_2PI)  # log q(z_n | x_n)
        for start, log_mix in blocks_of_log_q(z, mu, logvar, B):  # log q(z) of each code, a block at a time
            information[start:start + len(log_mix)] += (own[start:start + len(log_mix)] - log_mix) / S
    info, se = float(information.mean()), float(information.std(ddof=1) / math.sqrt(N))
    return RateSplit(float(rate.mean()), info, se, float(rate.mean()) - info, se, math.log(N))


def blocks_of_log_q(z: np.ndarray, mu: np.ndarray, logvar: np.ndarray,
                    batch_size: int = 64) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, log q(z[start:stop]))`` for blocks of the codes ``z`` (M, L) under the aggregate posterior of the
    posteriors ``mu``, ``logvar`` (N, L): a mixture of N Gaussians of weight 1/N. A block holds at most
    ``batch_size`` codes and ``MAX_BLOCK`` numbers of (codes x posteriors x dimensions)."""
    N, L = mu.shape
    log_weights = np.full(N, -math.log(N))
    rows = max(1, min(batch_size, MAX_BLOCK // (N * L)))
    for start in range(0, len(z), rows):
        yield start, mixture_log_density(z[start:start + rows], log_weights, mu, logvar)[0]


@dataclass(frozen=True)
class Mismatch:
    """The codes against the prior, both ways, per draw (nats): ``forward`` holds ``log q(z) - log p(z)`` for
    draws of the codes ``z ~ q(z)``, whose mean estimates ``KL(q(z) || p(z))``; ``reverse`` holds ``log p(z) -
    log q(z)`` for draws ``z ~ p(z)``, whose mean estimates ``KL(p(z) || q(z))``."""

    forward: np.ndarray
    reverse: np.ndarray

    def __str__(self) -> str:
        se = lambda v: float(v.std(ddof=1) / math.sqrt(len(v)))
        return (f"KL(q(z) || p(z)) = {self.forward.mean():.3f} ± {se(self.forward):.3f}, "
                f"KL(p(z) || q(z)) = {self.reverse.mean():.3f} ± {se(self.reverse):.3f} nats")


def prior_mismatch(model: Any, x: Any, n_draws: int = 2000, batch_size: int = 64) -> Mismatch:
    """How far the codes of ``x`` are from ``model``'s prior, both ways, from ``n_draws`` draws of each.

    ``q(z)`` is the aggregate posterior of ``x`` (the training set, as for :func:`rate_split`), evaluated exactly
    as the mixture of its posteriors; ``log p(z)`` and the draws from the prior are the model's own
    (``log_prior``, ``prior_sample``), so this works for any prior. Codes are drawn from ``q(z)`` by picking an
    example at random, then a code from its posterior. The draws come from the model's evaluation stream; the
    work grows as ``n_draws`` times ``len(x)``.
    """
    M = check_positive("n_draws", n_draws, integer=True)
    B = check_positive("batch_size", batch_size, integer=True)
    mu, logvar = _posteriors(model, x, "prior_mismatch")
    N, L = mu.shape
    pick = model.eval_rng_.integers(0, N, M)
    eps = to_numpy(model.draw_normal((M, L), model.eval_rng_)).astype(np.float64)
    codes = mu[pick] + np.exp(0.5 * logvar[pick]) * eps
    drawn = to_numpy(model.prior_sample(M, model.eval_rng_)).astype(np.float64)

    def log_prior(z):
        return to_numpy(model.log_prior(model.xp.asarray(z, dtype=model.dtype))).astype(np.float64)

    log_q_codes = np.concatenate([block for _, block in blocks_of_log_q(codes, mu, logvar, B)])
    log_q_drawn = np.concatenate([block for _, block in blocks_of_log_q(drawn, mu, logvar, B)])
    return Mismatch(log_q_codes - log_prior(codes), log_prior(drawn) - log_q_drawn)


def _posteriors(model: Any, x: Any, caller: str) -> tuple[np.ndarray, np.ndarray]:
    """The posteriors of ``x`` that make the aggregate posterior: ``mu``, ``logvar`` (N, L) in float64 on the host,
    after refusing a conditional model and fewer than 2 examples."""
    if model.n_classes is not None:
        raise ValueError(f"{caller} takes an unconditional model; a conditional one's posteriors depend on labels too")
    mu, logvar = (to_numpy(a).astype(np.float64) for a in model.encode(x))
    if len(mu) < 2:
        raise ValueError("the aggregate posterior needs at least 2 examples")
    return mu, logvar
