"""Negative log-likelihoods and the Gaussian KL, each with its gradient.

Every function returns ``(value, grads...)`` where ``value`` has shape ``(N,)``
(one number per example, summed over pixels or latent dimensions, in nats) and
each gradient is the derivative of ``value.sum()`` with respect to the named
input, with that input's shape. Densities are complete, constants included,
so likelihoods are comparable across models.
"""

import math

from .backend import get_array_module

LOG_2PI = math.log(2 * math.pi)


def bernoulli_nll(logits, x):
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
    xp = get_array_module(logits, x)
    s = xp.abs(logits)
    xp.negative(s, out=s)
    xp.exp(s, out=s)  # s = exp(-|l|), in (0, 1]: safe for |l| up to the float range
    nll = xp.maximum(logits, 0)
    p = xp.log1p(s)  # p is scratch space until it holds the gradient
    nll += p  # softplus(l) = max(l, 0) + log(1 + exp(-|l|))
    xp.multiply(x, logits, out=p)
    nll -= p  # - x l
    # sigmoid(l) = 1 / (1 + s) for l >= 0 and e^l / (1 + s) for l < 0; the
    # numerator is exp(min(l, 0)) for both signs, so no branch is needed
    xp.minimum(logits, 0, out=p)
    xp.exp(p, out=p)
    s += 1
    p /= s
    p -= x  # d/dl = sigmoid(l) - x
    return nll.sum(axis=1), p


def gaussian_nll(x, mean, std):
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


def gaussian_nll_learned(x, mean, logvar):
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


def kl_standard_normal(mu, logvar):
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


def kl_per_dimension(mu, logvar):
    """The KL of ``kl_standard_normal`` before summing over dimensions: ``(N, K)``."""
    xp = get_array_module(mu, logvar)
    var = xp.exp(logvar)
    kl = 0.5 * (mu * mu + var - logvar - 1)
    dmu = mu * 1  # dKL/dmu = mu
    dlogvar = 0.5 * (var - 1)  # dKL/dlogvar = (sigma^2 - 1) / 2
    return kl, dmu, dlogvar


def gaussian_log_density(z, mu, logvar):
    """``log N(z; mu, diag(exp(logvar)))`` summed over the last axis."""
    xp = get_array_module(z, mu, logvar)
    diff = z - mu
    return -0.5 * (logvar + diff * diff * xp.exp(-logvar) + LOG_2PI).sum(axis=-1)
