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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .backend import to_numpy
from .losses import LOG_2PI
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
    if model.n_classes is not None:
        raise ValueError("rate_split takes an unconditional model; a conditional one's posteriors depend on labels too")
    S = check_positive("n_samples", n_samples, integer=True)
    B = check_positive("batch_size", batch_size, integer=True)
    mu, logvar = (to_numpy(a).astype(np.float64) for a in model.encode(x))  # (N, L) each
    N, L = mu.shape
    if N < 2:
        raise ValueError("the aggregate posterior needs at least 2 examples")
    var = np.exp(logvar)
    rate = 0.5 * (mu * mu + var - logvar - 1).sum(axis=1)  # (N,) KL(q(z|x_n) || p(z)), exact
    information = np.zeros(N)
    for _ in range(S):
        eps = to_numpy(model.draw_normal((N, L), model.eval_rng_)).astype(np.float64)
        z = mu + np.sqrt(var) * eps  # (N, L): one code per example
        own = -0.5 * ((eps * eps).sum(axis=1) + logvar.sum(axis=1) + L * LOG_2PI)  # log q(z_n | x_n)
        rows = max(1, min(B, MAX_BLOCK // (N * L)))
        for start in range(0, N, rows):
            diff = z[start:start + rows, None, :] - mu[None]  # (b, N, L): each code against every posterior
            log_q = -0.5 * ((diff * diff / var[None]).sum(axis=2) + logvar.sum(axis=1) + L * LOG_2PI)  # (b, N)
            top = log_q.max(axis=1, keepdims=True)
            log_mix = top[:, 0] + np.log(np.exp(log_q - top).sum(axis=1)) - math.log(N)  # log q(z_b)
            information[start:start + rows] += (own[start:start + rows] - log_mix) / S
    info, se = float(information.mean()), float(information.std(ddof=1) / math.sqrt(N))
    return RateSplit(float(rate.mean()), info, se, float(rate.mean()) - info, se, math.log(N))
