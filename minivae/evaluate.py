"""Beyond the ELBO: the importance-weighted log-likelihood, an exact linear-Gaussian check, diagnostics.

The importance-weighted estimate (Burda, Grosse & Salakhutdinov, 2016)

    log p(x) >= L_K = E[ log (1/K) sum_k p(x, z_k) / q(z_k|x) ],   z_k ~ q(z|x),

equals the ELBO at K = 1 and rises to log p(x) as K grows.

For a linear decoder with a fixed Gaussian noise, ``x = z W + b + std * n``
with ``z ~ N(0, I)``, the marginal is Gaussian, ``x ~ N(b, W^T W + std^2 I)``
(``W`` of shape (K, D), rows as examples), so log p(x) is known exactly and
every bound can be checked against it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .backend import Array, to_numpy
from .losses import LOG_2PI, kl_per_dimension
from .speed.blas import threads_for
from .validation import check_positive, check_samples

if TYPE_CHECKING:  # names for annotations alone, not imported at run time
    from .model import VAE
    from .trainable import Trainable


def log_likelihood(model: Trainable, x: Any, n_samples: int = 1000, max_rows: int = 16384, y: Any = None,
                   ess: bool = False) -> Array | tuple[Array, np.ndarray]:
    """Per-example importance-weighted estimate of ``log p(x)`` in nats, shape (N,).

    ``log (1/K) sum_k exp(log w_k)`` with ``log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x)``,
    accumulated by a streaming log-sum-exp over chunks of samples, so memory is
    bounded by ``max_rows`` decoded rows whatever ``K`` is. The samples come
    from the model's evaluation stream ``eval_rng_``. A conditional model
    estimates ``log p(x|y)`` and needs the labels ``y``.

    With ``ess=True`` it returns ``(log_p, ess)``: also each example's
    effective sample size ``(sum_k w_k)^2 / sum_k w_k^2``, from 1 (one weight
    dominates: the estimate rests on one sample and its standard error is not to
    be trusted) to K (all weights equal: q is the posterior). It is a
    diagnostic, itself noisy, and a small one warns that q misses where the
    posterior has mass; a large one does not prove that it misses nothing.
    """
    K = check_samples("n_samples", n_samples)
    check_positive("max_rows", max_rows, integer=True)
    x = model.checked_input(x)
    N = x.shape[0]
    onehot = model.one_hot(y, N)
    per_chunk = max(1, min(K, max_rows))
    rows = max(1, max_rows // per_chunk)  # examples per block
    with threads_for(model, min(N, rows) * per_chunk):
        log_p, size = _log_likelihood(model, x, K, per_chunk, rows, onehot)
    return (log_p, size) if ess else log_p


def _log_likelihood(model, x, K, per_chunk, rows, onehot):
    xp = model.xp
    N = x.shape[0]
    out, sizes = [], []
    for i in range(0, N, rows):
        xb = x[i:i + rows]  # (B, D)
        yb = None if onehot is None else onehot[i:i + rows]
        B = xb.shape[0]
        m = xp.full((B,), -xp.inf, dtype=model.dtype)  # running max of log w
        s = xp.zeros((B,), dtype=model.dtype)  # running sum of exp(log w - m)
        s2 = xp.zeros((B,), dtype=model.dtype)  # running sum of exp(2 (log w - m)), for the effective sample size
        for start in range(0, K, per_chunk):
            c = min(per_chunk, K - start)
            eps = model.draw_normal((B, c, model.noise_dim), model.eval_rng_)
            log_w = model.log_weights(xb, eps, yb)  # (B, c)
            m_new = xp.maximum(m, log_w.max(axis=1))
            shift, w = xp.exp(m - m_new), xp.exp(log_w - m_new[:, None])
            s = s * shift + w.sum(axis=1)
            s2 = s2 * shift * shift + (w * w).sum(axis=1)
            m = m_new
        out.append(m + xp.log(s) - math.log(K))  # log (1/K) sum_k w_k
        sizes.append(s * s / s2)  # (sum w)^2 / sum w^2: the max shift cancels
    return xp.concatenate(out), xp.concatenate(sizes)


def monte_carlo_mean(estimate: Callable[..., Array], x: Any, replicates: int = 10, batch_size: int = 1000,
                     y: Any = None) -> tuple[float, float]:
    """The mean over the examples of ``x`` of a per-example Monte Carlo estimate, and its standard error.

    ``estimate(xb)`` returns one estimate per example of the batch ``xb``
    (``model.elbo``, say, or ``lambda xb: model.log_likelihood(xb, 1000)``),
    with fresh noise each call; it is run ``replicates`` times (at least 2).
    Given labels ``y`` (a conditional model's), it is called as
    ``estimate(xb, y=yb)`` with the labels of the same batch.

    The examples are fixed, so the only randomness is the Monte Carlo noise.
    With ``s_n^2`` the sample variance of example ``n``'s replicates, the mean
    of all ``R`` replicates over ``N`` examples has standard error
    ``sqrt(sum_n s_n^2 / R) / N``. Returns ``(mean, standard_error)`` as floats.
    """
    return replicate_mean(monte_carlo_replicates(estimate, x, replicates, batch_size, y=y))


def monte_carlo_replicates(estimate: Callable[..., Array], x: Any, replicates: int = 10, batch_size: int = 1000,
                           y: Any = None) -> np.ndarray:
    """``replicates`` runs of ``estimate`` over every example of ``x``: an (R, N) float64 array (see :func:`monte_carlo_mean`)."""
    R = check_positive("replicates", replicates, integer=True)
    if R < 2:
        raise ValueError(f"a standard error needs at least 2 replicates; got {replicates}")
    batch_size = check_positive("batch_size", batch_size, integer=True)
    if len(x) == 0:
        raise ValueError("x is empty; a mean needs at least one example")
    if y is not None and np.shape(y) != (len(x),):
        raise ValueError(f"y must hold one label per example of x ({len(x)}); got shape {np.shape(y)}")
    parts = []
    for i in range(0, len(x), batch_size):
        given = {} if y is None else {"y": np.asarray(y)[i:i + batch_size]}  # the batch's own labels
        parts.append(np.stack([to_numpy(estimate(x[i:i + batch_size], **given)).astype(np.float64)
                               for _ in range(R)]))
    return np.concatenate(parts, axis=1)


def replicate_mean(runs: Any) -> tuple[float, float]:
    """``(mean, standard_error)`` of the examples' mean from (R, N) replicates: the Monte Carlo noise alone."""
    R, N = runs.shape
    return float(runs.mean(axis=0).sum() / N), math.sqrt(runs.var(axis=0, ddof=1).sum() / R) / N


def paired_difference(a: Any, b: Any) -> tuple[float, float]:
    """The mean over examples of ``a - b`` (each (N,), or (R, N) replicates averaged first), and its standard error.

    The standard error is the spread of the per-example differences over
    ``sqrt(N)``: it covers both which examples the test set happened to hold
    and each estimate's Monte Carlo noise, so it is the error of the claim
    "a is larger than b on data like these", not only of the evaluation.
    """
    d = np.asarray(a, dtype=np.float64)
    d = (d.mean(axis=0) if d.ndim == 2 else d) - np.asarray(b, dtype=np.float64)
    if d.size < 2:
        raise ValueError("a paired standard error needs at least 2 examples")
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size))


def bits_per_dimension(log_p: Any, dims: int) -> Any:
    """``-log p / (D log 2)``: a log-probability in nats per example as bits per dimension (lower is better)."""
    return -log_p / (dims * math.log(2))


def _linear_gaussian_parts(model):
    """``W`` (L, D), ``b`` (D,), ``std`` of a linear decoder with fixed Gaussian noise, in float64 on the host."""
    if model.hidden_dims or model.likelihood != "gaussian" or model.decoder_std == "learned":
        raise ValueError("the exact check needs a linear-Gaussian model: "
                         "VAE(..., hidden_dims=(), likelihood='gaussian', decoder_std=<a number>)")
    W = to_numpy(model.params["decoder.out.W"]).astype(np.float64)
    b = to_numpy(model.params["decoder.out.b"]).astype(np.float64)
    return W, b, float(model.decoder_std)


def exact_log_likelihood(model: VAE, x: Any) -> Array:
    """Exact ``log p(x)`` per example for a linear-Gaussian model: ``x ~ N(b, W^T W + std^2 I)``."""
    W, b, std = _linear_gaussian_parts(model)
    x = to_numpy(model.checked_input(x)).astype(np.float64)
    D = x.shape[1]
    cov = W.T @ W + std**2 * np.eye(D)  # (D, D)
    chol = np.linalg.cholesky(cov)
    r = np.linalg.solve(chol, (x - b).T)  # (D, N): whitened residuals
    log_det = 2 * np.log(np.diag(chol)).sum()
    return -0.5 * ((r * r).sum(axis=0) + log_det + D * LOG_2PI)


def linear_gaussian_elbo(model: VAE, x: Any) -> Array:
    """The ELBO of a linear-Gaussian model in closed form (no sampling), per example.

    ``E_q ||x - z W - b||^2 = ||x - mu W - b||^2 + sum_l sigma_l^2 ||W_l||^2``, so
    ``E_q[log p(x|z)] = -(that) / (2 std^2) - D log std - D log(2 pi) / 2``.
    """
    W, b, std = _linear_gaussian_parts(model)
    x = model.checked_input(x)
    mu, logvar = (to_numpy(a).astype(np.float64) for a in model.encoder_forward(x))
    x = to_numpy(x).astype(np.float64)
    D = x.shape[1]
    sq = ((x - mu @ W - b) ** 2).sum(1) + np.exp(logvar) @ (W * W).sum(1)
    rec = -sq / (2 * std**2) - D * math.log(std) - 0.5 * D * LOG_2PI
    kl = 0.5 * (mu * mu + np.exp(logvar) - logvar - 1).sum(1)
    return rec - kl


def set_optimal_encoder(model: VAE) -> VAE:
    """Set a linear-Gaussian model's encoder to the best diagonal Gaussian q(z|x) for its decoder.

    The true posterior is ``N(m(x), P^-1)`` with precision ``P = I + W W^T / std^2``
    and mean ``m(x) = (x - b) W^T P^-1 / std^2``. The diagonal ``q`` closest to
    it in ``KL(q || p(z|x))`` has that mean and variances ``1 / diag(P)``; when
    ``W W^T`` is diagonal it *is* the posterior and the ELBO equals log p(x).
    """
    W, b, std = _linear_gaussian_parts(model)
    L = W.shape[0]
    P = np.eye(L) + W @ W.T / std**2
    A = W.T @ np.linalg.inv(P) / std**2  # (D, L): m(x) = x A - b A
    values = {"encoder.mu.W": A, "encoder.mu.b": -b @ A,
              "encoder.logvar.W": np.zeros_like(A), "encoder.logvar.b": -np.log(np.diag(P))}
    for name, value in values.items():
        model.params[name][...] = model.xp.asarray(value.astype(model.dtype))
    return model


def latent_diagnostics(model: Trainable, x: Any, threshold: float = 0.01, batch_size: int = 1000,
                       y: Any = None) -> tuple[np.ndarray, int, np.ndarray]:
    """How the latent space is used, from one pass over ``x``.

    Returns ``(kl, count, variances)``: ``kl`` (L,) is the mean over ``x`` of
    ``KL(q(z_l|x) || N(0, 1))`` per latent dimension; ``variances`` (L,) is
    ``Var_x(E_q[z_l])``, and ``count`` the number of *active units*, the
    dimensions whose variance exceeds ``threshold`` (Burda et al.'s measure: a
    collapsed dimension ignores its input, so its variance is near 0). On the host.
    A conditional model needs the labels ``y``.
    """
    check_positive("batch_size", batch_size, integer=True)
    x = model.checked_input(x)
    onehot = model.one_hot(y, x.shape[0])
    kl_total, means = 0, []
    for i in range(0, x.shape[0], batch_size):
        mu, logvar = model.encoder_forward(x[i:i + batch_size], None if onehot is None else onehot[i:i + batch_size])
        kl_total = kl_total + kl_per_dimension(mu, logvar)[0].sum(axis=0)
        means.append(to_numpy(mu))
    variances = np.concatenate(means).astype(np.float64).var(axis=0)
    return to_numpy(kl_total / x.shape[0]), int((variances > threshold).sum()), variances


def kl_per_dim(model: Trainable, x: Any, batch_size: int = 1000, y: Any = None) -> np.ndarray:
    """The mean KL of each latent dimension over ``x``; shape (L,), on the host."""
    return latent_diagnostics(model, x, batch_size=batch_size, y=y)[0]


def active_units(model: Trainable, x: Any, threshold: float = 0.01, batch_size: int = 1000,
                 y: Any = None) -> tuple[int, np.ndarray]:
    """``(count, variances)`` of the latent dimensions in use (see :func:`latent_diagnostics`)."""
    _, count, variances = latent_diagnostics(model, x, threshold, batch_size, y)
    return count, variances
