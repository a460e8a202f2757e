"""Negative log-likelihoods and the Gaussian KL, each with its gradient.

Every function returns ``(value, grads...)`` where ``value`` has shape ``(N,)``
(one number per example, summed over pixels or latent dimensions, in nats) and
each gradient is the derivative of ``value.sum()`` with respect to the named
input, with that input's shape. Densities are complete, constants included,
so likelihoods are comparable across models.
"""

from __future__ import annotations

import functools
import math
from types import ModuleType

import numpy as np

from .backend import Array, elementwise, get_array_module

LOG_2PI = math.log(2 * math.pi)


def bernoulli_nll(logits: Array, x: Array) -> tuple[Array, Array]:
    """``-log p(x | logits)`` for independent Bernoulli pixels.

    Parameters
    ----------
    logits : (N, D) array, the decoder's pre-sigmoid outputs ``l``.
    x : (N, D) array of targets in [0, 1].

    Returns
    -------
    nll : (N,) array
    dlogits : (N, D) array

    Notes
    -----
    With ``p = sigmoid(l)``, ``-log p(x|l) = -x log p - (1 - x) log(1 - p)``,
    which simplifies to ``softplus(l) - x * l`` (binary cross-entropy from
    logits). It is evaluated as ``max(l, 0) + log1p(exp(-|l|)) - x * l``, which
    never overflows, so it is finite for any finite logit without clipping.
    ``d/dl [softplus(l) - x l] = sigmoid(l) - x``.
    """
    nll, dlogits = bernoulli_terms(logits, x)
    return nll.sum(axis=1), dlogits


@elementwise
def bernoulli_terms(xp: ModuleType, logits: Array, x: Array) -> tuple[Array, Array]:
    """:func:`bernoulli_nll` per pixel, before the sum: ``(nll (N, D), dlogits (N, D))``; one kernel on CuPy."""
    s = xp.exp(-xp.abs(logits))  # exp(-|l|), in (0, 1]: safe for |l| up to the float range
    nll = xp.maximum(logits, 0) + xp.log1p(s) - x * logits  # softplus(l) - x l
    # sigmoid(l) = 1 / (1 + s) for l >= 0 and e^l / (1 + s) for l < 0; the
    # numerator is exp(min(l, 0)) for both signs, so no branch is needed
    dlogits = xp.exp(xp.minimum(logits, 0)) / (1 + s) - x  # d/dl = sigmoid(l) - x
    return nll, dlogits


def binomial_nll(logits: Array, x: Array, n: int, log_binom: Array | None = None) -> tuple[Array, Array]:
    """``-log p(k | logits)`` for independent Binomial(n, sigmoid(l)) counts ``k = n x``.

    Parameters
    ----------
    logits : (N, D) array, the decoder's outputs ``l``.
    x : (N, D) array of proportions ``k / n`` (the counts divided by ``n``).
    n : int, the number of trials.
    log_binom : (N,) array, optional
        ``sum_d log C(n, k_d)`` per example, if already known (it depends
        only on the data); computed when omitted.

    Returns
    -------
    nll : (N,) array
    dlogits : (N, D) array

    Notes
    -----
    ``log p(k|l) = log C(n, k) + k log p + (n - k) log(1 - p)`` with
    ``p = sigmoid(l)``, and ``k log p + (n - k) log(1 - p) = k l - n softplus(l)``,
    so ``-log p = n [softplus(l) - x l] - log C(n, k)``: ``n`` times the
    Bernoulli cross-entropy, less the log binomial coefficient, which is what
    makes it a probability of the counts. ``d/dl = n sigmoid(l) - k``.
    """
    nll, dlogits = bernoulli_nll(logits, x)
    nll *= n
    dlogits *= n  # d/dl = n (sigmoid(l) - x) = n sigmoid(l) - k
    if log_binom is None:
        log_binom = log_binomial_coefficients(x, n)
    return nll - log_binom, dlogits


@functools.lru_cache(maxsize=8)
def log_binomial_table(n: int) -> np.ndarray:
    """``log C(n, k)`` for ``k = 0..n``, a host float64 array of ``n + 1`` entries, read-only: every training
    step reads it, so it is made once per ``n``."""
    table = np.array([math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) for k in range(n + 1)])
    table.flags.writeable = False
    return table


def log_binomial_coefficients(x: Array, n: int) -> Array:
    """``sum_d log C(n, n x_d)`` per example, shape (N,), for proportions ``x`` of ``n`` trials."""
    xp = get_array_module(x)
    table = xp.asarray(log_binomial_table(n))
    k = xp.rint(x * n).astype(xp.int64)
    return table[k].sum(axis=1)


def categorical_nll(logits: Array, k: Array) -> tuple[Array, Array]:
    """``-log p(k | logits)`` for independent categorical pixels over ``L`` levels.

    Parameters
    ----------
    logits : (N, D, L) array, one unnormalised log-probability per level of each pixel.
    k : (N, D) integer array, each pixel's level in ``0..L-1``.

    Returns
    -------
    nll : (N,) array
    dlogits : (N, D, L) array

    Notes
    -----
    ``p(k_d = j | l) = softmax(l_d)_j = exp(l_dj) / sum_i exp(l_di)``, so
    ``-log p(k_d) = logsumexp(l_d) - l_{d, k_d}``, evaluated with the largest
    logit taken out first so that no ``exp`` overflows.
    ``d/dl_dj = softmax(l_d)_j - [j = k_d]``: the predicted probabilities less
    the one-hot of the level seen. Unlike the binomial, the levels' masses are
    free: a pixel can be almost surely 0 or 16 with nothing in between.
    """
    xp = get_array_module(logits)
    top = logits.max(axis=2, keepdims=True)  # (N, D, 1)
    e = xp.exp(logits - top)  # (N, D, L), in (0, 1]
    total = e.sum(axis=2, keepdims=True)
    onehot = xp.arange(logits.shape[2]) == k[:, :, None]  # (N, D, L), True at the level seen
    seen = (logits * onehot).sum(axis=2)  # l_{d, k_d}, (N, D)
    nll = (top[:, :, 0] + xp.log(total[:, :, 0]) - seen).sum(axis=1)  # logsumexp(l_d) - l_{d, k_d}
    dlogits = e / total - onehot  # d/dl = softmax(l) - onehot(k)
    return nll, dlogits.astype(logits.dtype)


LOG_CONCENTRATION_MAX = 12.0  # the beta-binomial's log alpha and log beta are clipped to +-this


def beta_binomial_nll(out: Array, x: Array, n: int, log_binom: Array | None = None) -> tuple[Array, Array]:
    """``-log p(k | alpha, beta)`` for independent beta-binomial counts ``k = n x`` of ``n`` trials.

    Parameters
    ----------
    out : (N, D, 2) array, ``log alpha`` and ``log beta`` of each pixel.
    x : (N, D) array of proportions ``k / n``.
    n : int, the number of trials.
    log_binom : (N,) array, optional, ``sum_d log C(n, k_d)`` (see :func:`binomial_nll`).

    Returns
    -------
    nll : (N,) array
    dout : (N, D, 2) array

    Notes
    -----
    The beta-binomial draws ``p ~ Beta(alpha, beta)``, then ``k ~ Binomial(n, p)``:

        p(k) = C(n, k) B(k + alpha, n - k + beta) / B(alpha, beta).

    Its variance ``n p (1 - p) (alpha + beta + n) / (alpha + beta + 1)`` is
    larger than the binomial's, so a pixel that is 0 in one image and 16 in
    the next, for the same ``z``, is not a catastrophe. For whole ``n`` the
    Beta functions' Gamma ratios are finite products,
    ``Gamma(a + m) / Gamma(a) = prod_{j<m} (a + j)``, so

        log p(k) = log C(n, k) + sum_{j<k} log(alpha + j)
                   + sum_{j<n-k} log(beta + j) - sum_{j<n} log(alpha + beta + j),

    with no special function. With ``alpha = e^a`` (and ``beta = e^b``),
    ``d log(alpha + j)/da = alpha / (alpha + j)`` (1 at ``j = 0``, where
    ``log alpha = a`` exactly), so

        d log p / da = sum_{j<k} alpha/(alpha + j) - sum_{j<n} alpha/(alpha + beta + j),
        d log p / db = sum_{j<n-k} beta/(beta + j) - sum_{j<n} beta/(alpha + beta + j).

    ``a`` and ``b`` are clipped to ``+-LOG_CONCENTRATION_MAX`` (a concentration
    from 6e-6 to 1.6e5, beyond which the pmf no longer changes in float32), and
    pass no gradient beyond it. The loop over ``j`` costs ``n`` passes, which
    is cheap for the digits' 16 trials.
    """
    xp = get_array_module(out, x)
    a_raw, b_raw = out[:, :, 0], out[:, :, 1]
    a = xp.clip(a_raw, -LOG_CONCENTRATION_MAX, LOG_CONCENTRATION_MAX)
    b = xp.clip(b_raw, -LOG_CONCENTRATION_MAX, LOG_CONCENTRATION_MAX)
    alpha, beta = xp.exp(a), xp.exp(b)
    k = xp.rint(x * n)  # counts, as floats
    # j = 0: log alpha = a, log beta = b and log(alpha + beta) = logaddexp(a, b), each exactly
    log_s = xp.logaddexp(a, b)
    log_p = (k > 0) * a + (k < n) * b - log_s
    da = (k > 0) - alpha / (alpha + beta)  # alpha/alpha = 1, less d log(alpha + beta)/da
    db = (k < n) - beta / (alpha + beta)
    for j in range(1, n):
        below_k, below_rest = k > j, (n - k) > j  # j < k and j < n - k
        s_j = alpha + beta + j
        log_p += below_k * xp.log(alpha + j) + below_rest * xp.log(beta + j) - xp.log(s_j)
        da += below_k * (alpha / (alpha + j)) - alpha / s_j  # d log(alpha + j)/da = alpha / (alpha + j)
        db += below_rest * (beta / (beta + j)) - beta / s_j
    da *= a == a_raw  # clipped: no gradient
    db *= b == b_raw
    if log_binom is None:
        log_binom = log_binomial_coefficients(x, n)
    nll = -log_p.sum(axis=1) - log_binom
    dout = -xp.stack([da, db], axis=2)  # d(-log p) = -d log p
    return nll, dout.astype(out.dtype)


SERIES_BELOW = 1e-2  # |l| under which the continuous Bernoulli's normaliser, mean and sampler use their series


def continuous_bernoulli_log_norm(logits: Array) -> tuple[Array, Array]:
    """``log C(l)`` of the continuous Bernoulli and its derivative, each shaped like ``logits``.

    Notes
    -----
    The density on [0, 1] is ``p(x|l) = C(l) lambda^x (1 - lambda)^(1 - x)``
    with ``lambda = sigmoid(l)`` (Loaiza-Ganem & Cunningham, 2019). The
    normaliser ``C = 2 artanh(1 - 2 lambda) / (1 - 2 lambda)`` is, in the
    logit, ``C(l) = l / tanh(l / 2)`` (2 at ``l = 0``), evaluated as
    ``log|l| - log(1 - e^-|l|) + log(1 + e^-|l|)``, which never overflows,
    and near ``l = 0``, where that difference cancels, from its series
    ``log 2 + l^2/12 - 7 l^4/1440``. Its derivative is
    ``d log C/dl = 1/l - 1/sinh(l)`` (series ``l/6 - 7 l^3/360``).
    """
    xp = get_array_module(logits)
    a = xp.abs(logits)
    small = a < SERIES_BELOW
    safe = xp.where(small, 1.0, a).astype(logits.dtype)  # keeps log and division away from 0
    e = xp.exp(-safe)
    log_c = xp.log(safe) - xp.log(-xp.expm1(-safe)) + xp.log1p(e)
    inv_sinh = 2 * e / -xp.expm1(-2 * safe)  # 1/sinh(|l|), without overflow
    dlog_c = xp.sign(logits) * (1 / safe - inv_sinh)  # 1/l - 1/sinh(l) is odd in l
    l2 = logits * logits
    log_c = xp.where(small, math.log(2) + l2 / 12 - 7 * l2 * l2 / 1440, log_c)
    dlog_c = xp.where(small, logits / 6 - 7 * logits * l2 / 360, dlog_c)
    return log_c, dlog_c


def continuous_bernoulli_nll(logits: Array, x: Array) -> tuple[Array, Array]:
    """``-log p(x | logits)`` for independent continuous Bernoulli pixels ``x`` in [0, 1].

    Returns ``(nll (N,), dlogits (N, D))``.

    Notes
    -----
    ``-log p = softplus(l) - x l - log C(l)``: the Bernoulli cross-entropy less
    the log normaliser (see :func:`continuous_bernoulli_log_norm`), which makes
    it a density on [0, 1]. ``d/dl = sigmoid(l) - x - (1/l - 1/sinh(l))``.
    """
    nll, dlogits = bernoulli_nll(logits, x)
    log_c, dlog_c = continuous_bernoulli_log_norm(logits)
    dlogits -= dlog_c  # d/dl [-log C(l)] = -(1/l - 1/sinh(l))
    return nll - log_c.sum(axis=1), dlogits


def gaussian_nll(x: Array, mean: Array, std: float) -> tuple[Array, Array]:
    """``-log N(x; mean, std^2 I)`` with a fixed scalar standard deviation.

    Returns ``(nll (N,), dmean (N, D))``.

    Notes
    -----
    ``-log p = sum_d [ (x_d - mean_d)^2 / (2 std^2) + log std + log(2 pi) / 2 ]``;
    ``d/dmean = -(x - mean) / std^2``.
    """
    diff = x - mean
    D = x.shape[1]
    nll = 0.5 * (diff * diff).sum(axis=1) / std**2 + D * (math.log(std) + 0.5 * LOG_2PI)
    dmean = diff * (-1.0 / std**2)  # d/dmean = -(x - mean) / std^2
    return nll, dmean


def gaussian_nll_learned(x: Array, mean: Array, logvar: Array) -> tuple[Array, Array, Array]:
    """``-log N(x; mean, diag(exp(logvar)))`` with a per-pixel learned log-variance.

    Returns ``(nll (N,), dmean (N, D), dlogvar (N, D))``.

    Notes
    -----
    ``-log p = sum_d [ logvar_d + (x_d - mean_d)^2 exp(-logvar_d) + log(2 pi) ] / 2``;
    ``d/dmean = -(x - mean) exp(-logvar)``;
    ``d/dlogvar = (1 - (x - mean)^2 exp(-logvar)) / 2``.
    """
    xp = get_array_module(x, mean, logvar)
    diff = x - mean
    inv_var = xp.exp(-logvar)
    sq = diff * diff * inv_var  # squared error in units of the variance
    nll = 0.5 * (logvar + sq + LOG_2PI).sum(axis=1)
    dmean = -diff * inv_var  # d/dmean = -(x - mean) / var
    dlogvar = 0.5 * (1 - sq)  # d/dlogvar = (1 - (x - mean)^2 / var) / 2
    return nll, dmean, dlogvar


def kl_standard_normal(mu: Array, logvar: Array) -> tuple[Array, Array, Array]:
    """``KL(N(mu, diag(sigma^2)) || N(0, I))`` per example, with ``sigma^2 = exp(logvar)``.

    Returns ``(kl (N,), dmu (N, K), dlogvar (N, K))``.

    Notes
    -----
    Per latent dimension ``KL_k = (mu_k^2 + sigma_k^2 - logvar_k - 1) / 2``
    (derived in ``notebooks/01_elbo.ipynb``);
    ``dKL/dmu = mu``, ``dKL/dlogvar = (exp(logvar) - 1) / 2``.
    """
    kl_dims, dmu, dlogvar = kl_per_dimension(mu, logvar)
    return kl_dims.sum(axis=1), dmu, dlogvar


@elementwise
def kl_per_dimension(xp: ModuleType, mu: Array, logvar: Array) -> tuple[Array, Array, Array]:
    """The KL of ``kl_standard_normal`` before summing over dimensions: ``(N, K)`` each; one kernel on CuPy."""
    var = xp.exp(logvar)
    kl = 0.5 * (mu * mu + var - logvar - 1)
    dmu = mu * 1  # dKL/dmu = mu (a copy, which callers may scale in place)
    dlogvar = 0.5 * (var - 1)  # dKL/dlogvar = (sigma^2 - 1) / 2
    return kl, dmu, dlogvar


def gaussian_log_density(z: Array, mu: Array, logvar: Array) -> Array:
    """``log N(z; mu, diag(exp(logvar)))`` summed over the last axis."""
    xp = get_array_module(z, mu, logvar)
    diff = z - mu
    return -0.5 * (logvar + diff * diff * xp.exp(-logvar) + LOG_2PI).sum(axis=-1)
