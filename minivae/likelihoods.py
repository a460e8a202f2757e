"""The decoder's distributions p(x|z): one small object per likelihood, all with the same few methods.

Each object turns the decoder's output (logits, or a mean and perhaps a
log-variance) into

* ``nll(x, out, logvar=None)``: ``-log p(x|z)`` per example, in nats, with
  its gradient with respect to each decoder output (see :mod:`minivae.losses`);
* ``mean(out)``: ``E[x|z]``, what ``VAE.decode`` returns;
* ``sample(out, logvar, rng)``: one draw ``x ~ p(x|z)``, with noise from ``rng``;
* ``check(x, name)``: refuses data outside the distribution's support, and
  ``caveat(x)``: says when a number it computes is not a log-likelihood of ``x``.

A log-likelihood is only a log-probability of data that the distribution can
produce: the Bernoulli is a distribution over {0, 1}, so on grey levels its
"log-likelihood" is a cross-entropy, not the log of any probability. Choose
by the data: ``bernoulli`` for binary pixels, ``binomial`` for counts (the
bundled digits count 0 to 16 lit pixels in each 4x4 block, so ``x = k / 16``),
``continuous_bernoulli`` for intensities anywhere in [0, 1], ``gaussian`` for
real values.
"""

import numpy as np

from .backend import get_array_module, to_numpy
from .layers import sigmoid
from .losses import (SERIES_BELOW, bernoulli_nll, binomial_nll, continuous_bernoulli_nll, gaussian_nll,
                     gaussian_nll_learned)

NAMES = ("bernoulli", "binomial", "continuous_bernoulli", "gaussian")
INTEGER_TOLERANCE = 1e-3  # how far n x may stray from a whole count (float32 rounding of k / n is far smaller)
BLOCK_ROWS = 4096  # data checks walk the data in blocks of rows, so their temporaries stay small


def blocks(x):
    """Consecutive blocks of ``BLOCK_ROWS`` rows of ``x``."""
    return (x[i:i + BLOCK_ROWS] for i in range(0, x.shape[0], BLOCK_ROWS))


class Likelihood:
    """Shared parts: the data's support is [0, 1] unless a subclass says otherwise."""

    name = None
    title = None  # for messages
    unit_interval = True  # the data must lie in [0, 1]
    learned_variance = False  # a second decoder head, ``decoder.logvar``

    def check(self, x, name="x"):
        """Raise ``ValueError`` if ``x`` (already checked for shape and finiteness) is outside the support."""

    def caveat(self, x):
        """A warning's text when ``nll`` on ``x`` is not a log-probability of ``x``, else None."""
        return None

    def config(self):
        """The constructor arguments of ``VAE`` that choose this likelihood."""
        return {"likelihood": self.name}


class Bernoulli(Likelihood):
    """Independent binary pixels, ``p(x_d = 1 | z) = sigmoid(l_d)``; the decoder emits logits."""

    name = "bernoulli"
    title = "Bernoulli"

    def nll(self, x, out, logvar=None):
        nll, dout = bernoulli_nll(out, x)
        return nll, dout, None

    def mean(self, out, logvar=None):
        return sigmoid(out)

    def sample(self, out, logvar, rng):
        xp = get_array_module(out)
        u = xp.asarray(rng.random(out.shape, dtype=out.dtype))
        return (u < sigmoid(out)).astype(out.dtype)

    def caveat(self, x):
        grey = sum(int(((b != 0) & (b != 1)).sum()) for b in blocks(x))
        if grey == 0:
            return None
        share = grey / x.size
        return (f"the Bernoulli likelihood is a distribution over binary pixels, but {share:.0%} of these lie "
                "strictly between 0 and 1: its 'log-likelihood' is then a cross-entropy, not the log of a "
                "probability of this data. Binarise the data (fit(..., binarize='dynamic')), or choose "
                "likelihood='binomial' (counts k / n) or likelihood='continuous_bernoulli' (intensities)")


class Binomial(Likelihood):
    """Independent counts ``k_d = n x_d ~ Binomial(n, sigmoid(l_d))``; the decoder emits logits.

    ``x`` holds the counts divided by ``n`` (so it lies in [0, 1] like every
    other minivae input), and ``nll`` is ``-log P(k|z)``, the full log
    probability mass including ``log C(n, k)``.
    """

    name = "binomial"
    title = "binomial"

    def __init__(self, trials):
        self.trials = trials

    def nll(self, x, out, logvar=None):
        nll, dout = binomial_nll(out, x, self.trials)
        return nll, dout, None

    def mean(self, out, logvar=None):
        return sigmoid(out)  # E[k / n] = p

    def sample(self, out, logvar, rng):
        xp = get_array_module(out)
        k = rng.binomial(self.trials, to_numpy(sigmoid(out)).astype(np.float64))
        return xp.asarray((k / self.trials).astype(out.dtype))

    def check(self, x, name="x"):
        xp = get_array_module(x)
        off = 0.0
        for b in blocks(x):
            counts = b * self.trials
            off = max(off, float(xp.abs(counts - xp.rint(counts)).max()))
        if off > INTEGER_TOLERANCE:
            raise ValueError(f"the binomial likelihood with trials={self.trials} needs {name} to hold counts "
                             f"divided by {self.trials} (k / {self.trials} for whole k), but {name} * {self.trials} "
                             f"is {off:.3g} from the nearest whole number; choose the right trials, or "
                             "likelihood='continuous_bernoulli' for intensities")

    def config(self):
        return {"likelihood": self.name, "trials": self.trials}


class ContinuousBernoulli(Likelihood):
    """Independent intensities ``x_d`` in [0, 1] with density ``C(l) lambda^x (1 - lambda)^(1 - x)``.

    Loaiza-Ganem & Cunningham (2019): the Bernoulli's formula made a proper
    density on [0, 1] by its normaliser ``C(l) = l / tanh(l / 2)``. The
    decoder emits logits ``l``; ``lambda = sigmoid(l)`` is not the mean.
    """

    name = "continuous_bernoulli"
    title = "continuous Bernoulli"

    def nll(self, x, out, logvar=None):
        nll, dout = continuous_bernoulli_nll(out, x)
        return nll, dout, None

    def mean(self, out, logvar=None):
        # E[x] = 1 / (1 - e^-l) - 1/l, written so that neither sign of l overflows; series near l = 0
        xp = get_array_module(out)
        a = xp.abs(out)
        small = a < SERIES_BELOW
        safe = xp.where(small, 1.0, a).astype(out.dtype)
        q = -xp.expm1(-safe)  # 1 - e^-|l|, in (0, 1)
        mean = xp.where(out > 0, 1.0, -xp.exp(-safe)) / q - xp.sign(out) / safe
        return xp.where(small, 0.5 + out / 12 - out * out * out / 720, mean).astype(out.dtype)

    def sample(self, out, logvar, rng):
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

    def __init__(self, std):
        self.std = std

    def nll(self, x, out, logvar=None):
        nll, dout = gaussian_nll(x, out, self.std)
        return nll, dout, None

    def mean(self, out, logvar=None):
        return out

    def sample(self, out, logvar, rng):
        xp = get_array_module(out)
        return out + self.std * xp.asarray(rng.standard_normal(out.shape, dtype=out.dtype))

    def config(self):
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

    def __init__(self):
        super().__init__("learned")

    def nll(self, x, out, logvar):
        xp = get_array_module(logvar)
        floored = xp.maximum(logvar, self.MIN_LOGVAR)
        nll, dout, dlogvar = gaussian_nll_learned(x, out, floored)
        dlogvar *= logvar > self.MIN_LOGVAR  # below the floor the variance is constant
        return nll, dout, dlogvar

    def sample(self, out, logvar, rng):
        xp = get_array_module(out)
        sigma = xp.exp(0.5 * xp.maximum(logvar, self.MIN_LOGVAR))
        return out + sigma * xp.asarray(rng.standard_normal(out.shape, dtype=out.dtype))


def make(likelihood, decoder_std=1.0, trials=None):
    """The likelihood object for ``VAE``'s arguments (already checked for type)."""
    if likelihood == "bernoulli":
        return Bernoulli()
    if likelihood == "binomial":
        return Binomial(trials)
    if likelihood == "continuous_bernoulli":
        return ContinuousBernoulli()
    return LearnedGaussian() if decoder_std == "learned" else Gaussian(decoder_std)
