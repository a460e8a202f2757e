"""The decoder's distributions p(x|z): one small object per likelihood, all with the same few methods.

Each object turns the decoder's output (logits, or a mean and perhaps a
log-variance) into

* ``nll(x, out, logvar=None)``: ``-log p(x|z)`` per example, in nats, with
  its gradient with respect to each decoder output (see :mod:`minivae.losses`);
* ``mean(out)``: ``E[x|z]``, what ``VAE.decode`` returns;
* ``sample(out, logvar, rng)``: one draw ``x ~ p(x|z)``, with noise from ``rng``;
* ``check(x, name)``: refuses data outside the distribution's support, and
  ``caveat(x)``: says when a number it computes is not a log-likelihood of ``x``;
* for a pmf over a grid of ``levels`` pixel values, ``counts(x)`` (the whole
  levels) and ``log_pmf(out)`` (every level's log-probability, which
  bits-back coding codes with).

A log-likelihood is only a log-probability of data that the distribution can
produce: the Bernoulli is a distribution over {0, 1}, so on grey levels its
"log-likelihood" is a cross-entropy, not the log of any probability. Choose
by the data: ``bernoulli`` for binary pixels; for pixels on a grid of levels
(the bundled digits count 0 to 16 lit pixels in each 4x4 block, so
``x = k / 16``) ``categorical`` (a free mass on each level), ``beta_binomial``
(a mean and a spread per pixel) or ``binomial`` (a mean alone, which also
fixes the spread); ``continuous_bernoulli`` for intensities anywhere in [0, 1]
that are never exactly 0 or 1; ``gaussian`` for real values. Only the first
four give log-probabilities, comparable with any other coder of the same
levels in bits.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .backend import Array, get_array_module, to_numpy
from .layers import sigmoid
from .losses import (LOG_CONCENTRATION_MAX, SERIES_BELOW, bernoulli_nll, beta_binomial_nll, binomial_nll,
                     categorical_nll, continuous_bernoulli_nll, gaussian_nll, gaussian_nll_learned, log_binomial_table)

NAMES = ("bernoulli", "binomial", "categorical", "beta_binomial", "continuous_bernoulli", "gaussian")
INTEGER_TOLERANCE = 1e-3  # how far n x may stray from a whole count (float32 rounding of k / n is far smaller)
BLOCK_ROWS = 4096  # data checks walk the data in blocks of rows, so their temporaries stay small


def blocks(x: Array) -> Iterator[Array]:
    """Consecutive blocks of ``BLOCK_ROWS`` rows of ``x``."""
    return (x[i:i + BLOCK_ROWS] for i in range(0, x.shape[0], BLOCK_ROWS))


class Likelihood:
    """Shared parts: the data's support is [0, 1] unless a subclass says otherwise.

    A likelihood is what ``VAE`` asks of ``p(x|z)``: ``nll`` (minus the log-probability of the data, with its
    gradients), ``mean`` (the decoded image) and ``sample`` (a draw), each from the decoder's outputs.
    """

    name: str
    title: str  # for messages
    unit_interval = True  # the data must lie in [0, 1]
    learned_variance = False  # a second decoder head, ``decoder.logvar``
    outputs = 1  # decoder outputs per pixel: ``decoder.out`` emits (N, D * outputs)
    levels: int | None = None  # a pmf's number of pixel values 0..levels-1, stored as k / (levels - 1); None: a density

    def nll(self, x: Array, out: Array, logvar: Array | None = None) -> tuple[Array, Array, Array | None]:
        """``-log p(x|z)`` per example (N,) from the decoder's ``out`` (and learned ``logvar``), with its gradients
        with respect to both (the second None without a learned variance)."""
        raise NotImplementedError

    def mean(self, out: Array, logvar: Array | None = None) -> Array:
        """The mean image ``E[x|z]`` (N, D)."""
        raise NotImplementedError

    def sample(self, out: Array, logvar: Array | None, rng: np.random.Generator) -> Array:
        """A draw ``x ~ p(x|z)`` (N, D), from ``rng``."""
        raise NotImplementedError

    @property
    def rescale(self) -> str:
        """How to bring data outside [0, 1] into it, for the message that refuses them."""
        if self.levels is not None and self.levels > 2:
            n = self.levels - 1
            return f"pass whole levels divided by {n} (x = k / {n} for k in 0..{n})"
        return "rescale the data (for 8-bit pixels divide by 255) or use likelihood='gaussian'"

    def check(self, x: Array, name: str = "x") -> None:
        """Raise ``ValueError`` if ``x`` (already checked for shape and finiteness) is outside the support."""

    def caveat(self, x: Array) -> str | None:
        """A warning's text when ``nll`` on ``x`` is not a log-probability of ``x``, else None."""
        return None

    def config(self) -> dict[str, Any]:
        """The constructor arguments of ``VAE`` that choose this likelihood."""
        return {"likelihood": self.name}

    def counts(self, x: Array) -> Array:
        """A pmf's data as whole levels ``k = (levels - 1) x``, int64, shaped like ``x``."""
        if self.levels is None:
            raise ValueError(f"the {self.title} likelihood is a density: its data are not whole levels")
        xp = get_array_module(x)
        return xp.rint(x * (self.levels - 1)).astype(xp.int64)

    def log_pmf(self, out: Array) -> np.ndarray:
        """``log p(x_d = k / (levels - 1) | z)`` for every level ``k``: (N, D, levels), in float64 on the host.

        What bits-back coding codes pixels with; only a likelihood over a grid of levels has one.
        """
        raise ValueError(f"the {self.title} likelihood is a density, not a probability over pixel levels; "
                         "choose a binomial, categorical, beta-binomial or Bernoulli model")


class Counts(Likelihood):
    """A pmf over ``levels`` equally spaced values ``k / (levels - 1)``: the data must lie on that grid."""

    levels: int
    fix: str  # how to choose the grid, for the message that refuses data off it

    def check(self, x: Array, name: str = "x") -> None:
        xp = get_array_module(x)
        n = self.levels - 1
        off = 0.0
        for b in blocks(x):
            counts = b * n
            off = max(off, float(xp.abs(counts - xp.rint(counts)).max()))
        if off > INTEGER_TOLERANCE:
            raise ValueError(f"the {self.title} likelihood over {self.levels} levels needs {name} to hold whole "
                             f"levels divided by {n} (k / {n} for k in 0..{n}), but {name} * {n} is {off:.3g} from "
                             f"the nearest whole number; {self.fix}")


class Bernoulli(Likelihood):
    """Independent binary pixels, ``p(x_d = 1 | z) = sigmoid(l_d)``; the decoder emits logits."""

    name = "bernoulli"
    title = "Bernoulli"
    levels = 2

    def nll(self, x: Array, out: Array, logvar: Array | None = None) -> tuple[Array, Array, Array | None]:
        nll, dout = bernoulli_nll(out, x)
        return nll, dout, None

    def mean(self, out: Array, logvar: Array | None = None) -> Array:
        return sigmoid(out)

    def sample(self, out: Array, logvar: Array | None, rng: np.random.Generator) -> Array:
        xp = get_array_module(out)
        u = xp.asarray(rng.random(out.shape, dtype=out.dtype))
        return (u < sigmoid(out)).astype(out.dtype)

    def log_pmf(self, out: Array) -> np.ndarray:
        logits = to_numpy(out).astype(np.float64)
        return -np.logaddexp(0, np.stack([logits, -logits], axis=2))  # log(1 - p), log p

    def caveat(self, x: Array) -> str | None:
        grey = sum(int(((b != 0) & (b != 1)).sum()) for b in blocks(x))
        if grey == 0:
            return None
        share = grey / x.size
        return (f"the Bernoulli likelihood is a distribution over binary pixels, but {share:.0%} of these lie "
                "strictly between 0 and 1: its 'log-likelihood' is then a cross-entropy, not the log of a "
                "probability of this data. Binarise the data (fit(..., binarize='dynamic')), or choose "
                "likelihood='categorical' or 'binomial' (whole levels k / n)")


class Binomial(Counts):
    """Independent counts ``k_d = n x_d ~ Binomial(n, sigmoid(l_d))``; the decoder emits logits.

    ``x`` holds the counts divided by ``n`` (so it lies in [0, 1] like every
    other minivae input), and ``nll`` is ``-log P(k|z)``, the full log
    probability mass including ``log C(n, k)``. One number per pixel sets both
    its mean ``n p`` and its variance ``n p (1 - p)``: a pixel that is 0 or 16
    for the same ``z`` is out of its reach, which is why the categorical and
    the beta-binomial fit the digits better.
    """

    name = "binomial"
    title = "binomial"
    fix = ("choose the right trials (the largest count), or likelihood='categorical' with levels=n + 1 "
           "for another grid")

    def __init__(self, trials: int) -> None:
        self.trials = trials
        self.levels = trials + 1

    def nll(self, x: Array, out: Array, logvar: Array | None = None) -> tuple[Array, Array, Array | None]:
        nll, dout = binomial_nll(out, x, self.trials)
        return nll, dout, None

    def mean(self, out: Array, logvar: Array | None = None) -> Array:
        return sigmoid(out)  # E[k / n] = p

    def sample(self, out: Array, logvar: Array | None, rng: np.random.Generator) -> Array:
        xp = get_array_module(out)
        k = rng.binomial(self.trials, to_numpy(sigmoid(out)).astype(np.float64))
        return xp.asarray((k / self.trials).astype(out.dtype))

    def log_pmf(self, out: Array) -> np.ndarray:
        n = self.trials
        logits = to_numpy(out).astype(np.float64)[:, :, None]
        k = np.arange(n + 1)
        # log C(n, k) + k log p + (n - k) log(1 - p)
        return log_binomial_table(n) - k * np.logaddexp(0, -logits) - (n - k) * np.logaddexp(0, logits)

    def config(self) -> dict[str, Any]:
        return {"likelihood": self.name, "trials": self.trials}


class Categorical(Counts):
    """Each pixel one of ``levels`` values, ``p(k_d = j | z) = softmax(l_d)_j``; the decoder emits ``levels`` logits a pixel.

    The most flexible pmf over a pixel's levels (the 8x8 digits' 17, 8-bit
    images' 256): nothing ties its masses together, so it can put most of a
    pixel's mass on 0 and the rest on 16. The price is ``levels`` outputs per
    pixel and no notion that level 7 is near level 8.
    """

    name = "categorical"
    title = "categorical"
    fix = "choose levels = the number of values each pixel takes (17 for the bundled digits, 256 for 8-bit images)"

    def __init__(self, levels: int) -> None:
        self.levels = levels
        self.outputs = levels

    def split(self, out: Array) -> Array:
        return out.reshape(out.shape[0], -1, self.levels)  # (N, D, L)

    def nll(self, x: Array, out: Array, logvar: Array | None = None) -> tuple[Array, Array, Array | None]:
        logits = self.split(out)
        nll, dlogits = categorical_nll(logits, self.counts(x))
        return nll, dlogits.reshape(out.shape), None

    def probs(self, out: Array) -> Array:
        xp = get_array_module(out)
        logits = self.split(out)
        e = xp.exp(logits - logits.max(axis=2, keepdims=True))
        return e / e.sum(axis=2, keepdims=True)  # softmax over levels, (N, D, L)

    def mean(self, out: Array, logvar: Array | None = None) -> Array:
        xp = get_array_module(out)
        grid = xp.arange(self.levels, dtype=out.dtype) / (self.levels - 1)
        return self.probs(out) @ grid  # E[x_d] = sum_j p_dj j / (L - 1)

    def sample(self, out: Array, logvar: Array | None, rng: np.random.Generator) -> Array:
        xp = get_array_module(out)
        cdf = self.probs(out).cumsum(axis=2)
        u = xp.asarray(rng.random(cdf.shape[:2], dtype=out.dtype))
        k = (cdf < u[:, :, None]).sum(axis=2)  # the first level whose cdf reaches u
        return (xp.minimum(k, self.levels - 1) / (self.levels - 1)).astype(out.dtype)

    def log_pmf(self, out: Array) -> np.ndarray:
        logits = self.split(to_numpy(out).astype(np.float64))
        top = logits.max(axis=2, keepdims=True)
        return logits - top - np.log(np.exp(logits - top).sum(axis=2, keepdims=True))

    def config(self) -> dict[str, Any]:
        return {"likelihood": self.name, "levels": self.levels}


class BetaBinomial(Counts):
    """Counts ``k_d ~ Binomial(n, p_d)`` with ``p_d ~ Beta(alpha_d, beta_d)``; the decoder emits ``log alpha`` and ``log beta``.

    Two numbers per pixel: the mean ``alpha / (alpha + beta)`` and how
    concentrated ``p`` is around it, so the variance is no longer tied to the
    mean as the binomial's is. As ``alpha + beta`` grows it becomes the
    binomial; near 0 it piles its mass on ``k = 0`` and ``k = n``.
    """

    name = "beta_binomial"
    title = "beta-binomial"
    outputs = 2
    fix = "choose the right trials (the largest count), or likelihood='categorical' for another grid"

    def __init__(self, trials: int) -> None:
        self.trials = trials
        self.levels = trials + 1

    def split(self, out: Array) -> Array:
        return out.reshape(out.shape[0], -1, 2)  # (N, D, [log alpha, log beta])

    def nll(self, x: Array, out: Array, logvar: Array | None = None) -> tuple[Array, Array, Array | None]:
        nll, dout = beta_binomial_nll(self.split(out), x, self.trials)
        return nll, dout.reshape(out.shape), None

    def mean(self, out: Array, logvar: Array | None = None) -> Array:
        ab = self.split(out)
        return sigmoid(ab[:, :, 0] - ab[:, :, 1])  # alpha / (alpha + beta)

    def concentrations(self, out: Array) -> tuple[np.ndarray, np.ndarray]:
        """``alpha, beta`` as host float64 arrays (N, D, 1), clipped as the loss clips their logs."""
        logs = np.clip(self.split(to_numpy(out)).astype(np.float64), -LOG_CONCENTRATION_MAX, LOG_CONCENTRATION_MAX)
        return np.exp(logs[:, :, :1]), np.exp(logs[:, :, 1:])

    def sample(self, out: Array, logvar: Array | None, rng: np.random.Generator) -> Array:
        xp = get_array_module(out)
        alpha, beta = self.concentrations(out)
        p = rng.beta(alpha[:, :, 0], beta[:, :, 0])
        return xp.asarray((rng.binomial(self.trials, p) / self.trials).astype(out.dtype))

    def log_pmf(self, out: Array) -> np.ndarray:
        n = self.trials
        alpha, beta = self.concentrations(out)  # (N, D, 1)
        j = np.arange(n)

        def rising(c):  # log Gamma(c + m) / Gamma(c) = sum_{j<m} log(c + j), for m = 0..n: (N, D, n + 1)
            steps = np.log(c + j)
            return np.concatenate([np.zeros_like(c), np.cumsum(steps, axis=2)], axis=2)

        return log_binomial_table(n) + rising(alpha) + rising(beta)[:, :, ::-1] - rising(alpha + beta)[:, :, -1:]

    def config(self) -> dict[str, Any]:
        return {"likelihood": self.name, "trials": self.trials}


class ContinuousBernoulli(Likelihood):
    """Independent intensities ``x_d`` in [0, 1] with density ``C(l) lambda^x (1 - lambda)^(1 - x)``.

    Loaiza-Ganem & Cunningham (2019): the Bernoulli's formula made a proper
    density on [0, 1] by its normaliser ``C(l) = l / tanh(l / 2)``. The
    decoder emits logits ``l``; ``lambda = sigmoid(l)`` is not the mean.
    """

    name = "continuous_bernoulli"
    title = "continuous Bernoulli"

    def caveat(self, x: Array) -> str | None:
        edge = sum(int(((b == 0) | (b == 1)).sum()) for b in blocks(x))
        if edge == 0:
            return None
        return (f"{edge / x.size:.0%} of these pixels are exactly 0 or 1, where the continuous Bernoulli's density "
                "grows without bound as the logit grows: training can raise the 'ELBO' without limit by sending "
                "those pixels' logits to +-infinity, so its figures are not a fit to this data. It is a sound choice "
                "for intensities strictly inside (0, 1); for quantised images choose a pmf over their levels "
                "(likelihood='beta_binomial', 'categorical' or 'binomial'), or binarise them and use 'bernoulli'")

    def nll(self, x: Array, out: Array, logvar: Array | None = None) -> tuple[Array, Array, Array | None]:
        nll, dout = continuous_bernoulli_nll(out, x)
        return nll, dout, None

    def mean(self, out: Array, logvar: Array | None = None) -> Array:
        # E[x] = 1 / (1 - e^-l) - 1/l, written so that neither sign of l overflows; series near l = 0
        xp = get_array_module(out)
        a = xp.abs(out)
        small = a < SERIES_BELOW
        safe = xp.where(small, 1.0, a).astype(out.dtype)
        q = -xp.expm1(-safe)  # 1 - e^-|l|, in (0, 1)
        mean = xp.where(out > 0, 1.0, -xp.exp(-safe)) / q - xp.sign(out) / safe
        return xp.where(small, 0.5 + out / 12 - out * out * out / 720, mean).astype(out.dtype)

    def sample(self, out: Array, logvar: Array | None, rng: np.random.Generator) -> Array:
        # the inverse of the CDF F(x) = (e^(l x) - 1) / (e^l - 1) at a uniform u
        xp = get_array_module(out)
        u = xp.asarray(rng.random(out.shape, dtype=out.dtype))
        a = xp.abs(out)
        small = a < SERIES_BELOW
        safe = xp.where(small, 1.0, a).astype(out.dtype)
        x_pos = 1 + xp.log(u + (1 - u) * xp.exp(-safe)) / safe  # for l > 0
        x_neg = xp.log1p(u * xp.expm1(-safe)) / -safe  # for l < 0
        x = xp.where(out > 0, x_pos, x_neg)
        return xp.clip(xp.where(small, u + out * u * (1 - u) / 2, x), 0, 1).astype(out.dtype)


class Gaussian(Likelihood):
    """``N(x; mean, std^2 I)`` with a fixed standard deviation; the decoder emits the mean."""

    name = "gaussian"
    title = "Gaussian"
    unit_interval = False

    def __init__(self, std: float) -> None:
        self.std = std

    def nll(self, x: Array, out: Array, logvar: Array | None = None) -> tuple[Array, Array, Array | None]:
        nll, dout = gaussian_nll(x, out, self.std)
        return nll, dout, None

    def mean(self, out: Array, logvar: Array | None = None) -> Array:
        return out

    def sample(self, out: Array, logvar: Array | None, rng: np.random.Generator) -> Array:
        xp = get_array_module(out)
        return out + self.std * xp.asarray(rng.standard_normal(out.shape, dtype=out.dtype))

    def config(self) -> dict[str, Any]:
        return {"likelihood": self.name, "decoder_std": self.std}


class LearnedGaussian(Gaussian):
    """``N(x; mean, diag(exp(logvar)))`` with a second decoder head for a per-pixel log-variance.

    A density can grow without bound: where a pixel is the same in every
    example (the border of a digit is always 0), the best variance is 0 and
    ``-log p`` goes to minus infinity, so training chases it and the ELBO
    swings. The log-variance is therefore floored at ``MIN_LOGVAR`` (a
    standard deviation of about 0.011, under a grey level of 8-bit images);
    below the floor it passes no gradient. For data on a grid of levels the
    honest cure is a discrete likelihood (``binomial``).
    """

    MIN_LOGVAR = -9.0
    learned_variance = True

    def __init__(self) -> None:
        pass  # no fixed standard deviation: the decoder's second head gives one per pixel

    def config(self) -> dict[str, Any]:
        return {"likelihood": self.name, "decoder_std": "learned"}

    def nll(self, x: Array, out: Array, logvar: Array | None = None) -> tuple[Array, Array, Array | None]:
        if logvar is None:
            raise ValueError("the learned-variance Gaussian needs the decoder's log-variance head's output")
        xp = get_array_module(logvar)
        floored = xp.maximum(logvar, self.MIN_LOGVAR)
        nll, dout, dlogvar = gaussian_nll_learned(x, out, floored)
        dlogvar *= logvar > self.MIN_LOGVAR  # below the floor the variance is constant
        return nll, dout, dlogvar

    def sample(self, out: Array, logvar: Array | None, rng: np.random.Generator) -> Array:
        xp = get_array_module(out)
        sigma = xp.exp(0.5 * xp.maximum(logvar, self.MIN_LOGVAR))
        return out + sigma * xp.asarray(rng.standard_normal(out.shape, dtype=out.dtype))


def decoder_outputs(likelihood: str, levels: int | None = None) -> int:
    """How many numbers per pixel the decoder emits for ``likelihood`` (a known name): a categorical's ``levels``."""
    classes = {cls.name: cls for cls in (Bernoulli, Binomial, Categorical, BetaBinomial, ContinuousBernoulli, Gaussian)}
    if likelihood == "categorical":
        if levels is None:
            raise ValueError("the categorical likelihood needs levels, the number of values a pixel takes")
        return levels
    return classes[likelihood].outputs


def make(likelihood: str, decoder_std: float | str = 1.0, trials: int | None = None,
         levels: int | None = None) -> Likelihood:
    """The likelihood object for ``VAE``'s arguments (already checked for type)."""
    if likelihood == "bernoulli":
        return Bernoulli()
    if likelihood == "continuous_bernoulli":
        return ContinuousBernoulli()
    if likelihood == "gaussian":
        return LearnedGaussian() if decoder_std == "learned" else Gaussian(float(decoder_std))
    size = levels if likelihood == "categorical" else trials
    if size is None:
        raise ValueError(f"the {likelihood} likelihood needs {'levels' if likelihood == 'categorical' else 'trials'}")
    return {"binomial": Binomial, "beta_binomial": BetaBinomial, "categorical": Categorical}[likelihood](size)
