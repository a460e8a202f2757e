"""Lossless compression with a trained VAE by bits-back coding over ANS (Townsend, Bird & Barber, 2019).

To send an image ``x`` with a latent-variable model one could send a ``z``
(costing ``-log p(z)`` bits) and then ``x`` given it (``-log p(x|z)``). Bits-back
coding gets back the bits spent choosing ``z``: the sender *decodes* ``z`` from
the message so far with the posterior ``q(z|x)``, which takes ``-log q(z|x)``
bits off the message, and the receiver, once it has ``x``, re-encodes that
``z`` with ``q(z|x)`` and so recovers those bits. Per image the message grows by

    -log p(x|z) - log p(z) + log q(z|x),

whose average over ``z ~ q`` is the negative ELBO: the ELBO is a code length.

Here ``z`` is discretised, one latent dimension at a time, into ``2^latent_precision``
buckets of equal mass under the prior ``N(0, 1)``, so that ``p(z)`` is uniform
over buckets and ``q(z|x)`` is its Gaussian's mass in each; the decoder reads
each bucket's centre. Pixels are whole levels ``k`` in ``0..levels-1`` (a
binomial's or beta-binomial's counts of ``n`` trials, a categorical's levels,
a Bernoulli's 0 and 1), coded with the model's ``p(x|z)``. Every
distribution is quantised to integer frequencies (:func:`minivae.ans.quantize`).
The encoder and decoder compute them the same way from the same inputs, one
image at a time, so the decoded images equal the originals bit for bit.

That needs both sides to compute the *same floats*: decode with the same
checkpoint on the same backend and kind of machine that encoded. A GPU and a
CPU, or two BLAS libraries, may round a matrix product differently, and one
changed frequency garbles the rest of the message.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np

from .ans import MAX_PRECISION, Message, cumulative, quantize
from .backend import to_numpy
from .baselines import pixel_histograms
from .validation import check_integer_in

if TYPE_CHECKING:  # names for annotations alone, not imported at run time
    from .model import VAE

NORMAL = NormalDist()
# 2^16 buckets per latent dimension: already finer than any q(z|x) these models learn, and each bucket is a
# column of every image's table (at 24 bits, building the edges alone took 43 s and coding 2.4 s an image)
MAX_LATENT_PRECISION = 16


class BitsBackCodec:
    """Code images of whole levels with a trained :class:`~minivae.VAE` whose likelihood is a pmf over them.

    Parameters
    ----------
    model : VAE with a likelihood over pixel levels: ``"binomial"``, ``"beta_binomial"``,
        ``"categorical"`` or ``"bernoulli"`` (binary pixels).
    latent_precision : int
        ``2^latent_precision`` buckets per latent dimension.
    posterior_precision, pixel_precision : int
        Bits of the integer frequencies for ``q(z|x)`` and for ``p(x|z)``.
    """

    def __init__(self, model: VAE, latent_precision: int = 10, posterior_precision: int = 24,
                 pixel_precision: int = 24) -> None:
        if not hasattr(model, "likelihood_") or not hasattr(model, "decoder_forward"):
            raise TypeError(f"BitsBackCodec codes with a trained VAE; got {type(model).__name__}")
        if model.family != "vae":  # its buckets are N(0, I)'s and its posterior the encoder's Gaussian
            raise ValueError(f"bits-back coding here codes with the plain VAE's prior N(0, I) and posterior; a "
                             f"{type(model).__name__} (family {model.family!r}) has another, so its code length "
                             "would not be its bound: code with a plain VAE")
        # 2^latent_precision buckets per latent dimension: each is a column of every image's table of q(z|x)
        latent_precision = check_integer_in("latent_precision", latent_precision, 1, MAX_LATENT_PRECISION)
        posterior_precision = check_integer_in("posterior_precision", posterior_precision, 1, MAX_PRECISION)
        pixel_precision = check_integer_in("pixel_precision", pixel_precision, 1, MAX_PRECISION)
        if model.likelihood_.levels is not None and model.likelihood_.levels > 1 << pixel_precision:
            raise ValueError(f"pixel_precision={pixel_precision} gives 2^{pixel_precision} slots, too few for every "
                             f"one of the model's {model.likelihood_.levels} levels to have one; raise it")
        if model.likelihood_.levels is None:
            raise ValueError(f"bits-back coding codes pixel levels with a pmf over them (a binomial, beta-binomial, "
                             f"categorical or Bernoulli model); this one's likelihood, {model.likelihood!r}, "
                             "is a density")
        if not posterior_precision >= latent_precision + 2:
            raise ValueError("posterior_precision must exceed latent_precision by at least 2, so that q(z|x) "
                             "can put more than the minimum frequency on a bucket")
        self.model = model
        self.levels = model.likelihood_.levels
        self.trials = self.levels - 1  # the largest level: x = k / trials
        self.latent_precision, self.posterior_precision = latent_precision, posterior_precision
        self.pixel_precision = pixel_precision
        B = 1 << latent_precision
        # bucket edges at the prior's quantiles i / B (the outer ones infinite); centres at (i + 1/2) / B
        self.edges = np.array([-math.inf] + [NORMAL.inv_cdf(i / B) for i in range(1, B)] + [math.inf])
        self.centres = np.array([NORMAL.inv_cdf((i + 0.5) / B) for i in range(B)])

    # ---------------------------------------------------------------- the three distributions
    def posterior_masses(self, x: Any) -> np.ndarray:
        """``q(z|x)``'s probability in each bucket, (L, B) floats, for one image ``x`` (D,) of counts."""
        mu, logvar = (to_numpy(a).astype(np.float64)[0] for a in self.model.encode(x[None] / self.trials))
        sigma = np.exp(logvar / 2)
        cdf = np.vectorize(NORMAL.cdf)((self.edges[None, :] - mu[:, None]) / sigma[:, None])  # (L, B + 1)
        return np.diff(cdf, axis=1)

    def posterior_freqs(self, x: Any) -> np.ndarray:
        """``q(z|x)`` as integer frequencies over the buckets: (L, B) for one image ``x`` (D,) of counts."""
        return quantize(self.posterior_masses(x), self.posterior_precision)

    def discrete_bound(self, counts: Any, replicates: int = 10, seed: int = 0) -> tuple[np.ndarray, float]:
        """Draws of the bound that bits-back coding codes at, in bits per image: (replicates, N), and a share.

        The share is that of the pixels (over all draws) to which the model gives
        less than ``2^-pixel_precision``: the integer frequencies give each at
        least that, so the coder charges them at most ``pixel_precision`` bits
        where the model would charge more, and a code length can fall below the bound.

        With ``z`` restricted to the buckets' centres ``c_b``, the model is a
        different one, ``P(x) = sum_b P(b) p(x|c_b)`` with ``P(b) = 2^-precision``
        per dimension, and its negative ELBO with the bucketed posterior
        ``Q(b|x)`` is ``E_Q[-log p(x|c_b) - log P(b) + log Q(b|x)]``: what a code
        length averages to, before the frequencies are rounded to integers. Each
        draw takes one ``b ~ Q(b|x)`` per image. It can lie below the continuous
        negative ELBO: it bounds another model's ``-log P(x)``, with another posterior.
        """
        counts = self.check_counts(counts)
        model, N = self.model, len(counts)
        rng = np.random.default_rng(seed)
        masses = np.stack([self.posterior_masses(x) for x in counts])  # (N, L, B)
        cdf = masses.cumsum(axis=2)
        rows, dims = np.arange(N)[:, None], np.arange(model.latent_dim)[None, :]
        draws, floored = np.empty((replicates, N)), 0
        for r in range(replicates):
            u = rng.random((N, model.latent_dim, 1)) * cdf[:, :, -1:]
            b = np.minimum((cdf < u).sum(axis=2), masses.shape[2] - 1)  # (N, L) inverse-cdf draws of the buckets
            out, _ = model.decoder_forward(model.xp.asarray(self.centres[b].astype(model.dtype)))
            log_p = model.likelihood_.log_pmf(out)[rows, np.arange(counts.shape[1])[None, :], counts]  # (N, D)
            floored += int((log_p < -self.pixel_precision * math.log(2)).sum())
            log_q = np.log(masses[rows, dims, b]).sum(axis=1)
            draws[r] = (-log_p.sum(axis=1) + log_q) / math.log(2) + model.latent_dim * self.latent_precision
        return draws, floored / (replicates * counts.size)

    def likelihood_freqs(self, buckets: np.ndarray) -> np.ndarray:
        """``p(x|z)`` per pixel as integer frequencies over the levels ``0..levels-1``: (D, levels)."""
        model = self.model
        z = model.xp.asarray(self.centres[buckets][None].astype(model.dtype))  # (1, L)
        out, logvar = model.decoder_forward(z)
        log_pmf = model.likelihood_.log_pmf(out)[0]  # (D, levels)
        return quantize(np.exp(log_pmf - log_pmf.max(axis=1, keepdims=True)), self.pixel_precision)

    # ---------------------------------------------------------------- one image
    def push_image(self, message: Message, x: Any) -> float:
        """Append image ``x`` (D,) of integer counts to ``message``; returns what it added, in bits.

        The figure is exact: ``-log2`` of the quantised ``p(x|z)`` and ``p(z)``, less
        ``-log2`` of the quantised ``q(z|x)`` of the ``z`` taken off the message.
        """
        q = self.posterior_freqs(x)
        # 1. take z off the message with q(z|x): these are the bits the receiver will give back
        buckets = np.array([message.pop(self.posterior_precision, cumulative(f)) for f in q])
        # 2. x given z, pixel by pixel
        px = self.likelihood_freqs(buckets)
        for f, k in zip(px, x):
            message.push(int(cumulative(f)[k]), int(f[k]), self.pixel_precision)
        # 3. z under the prior: uniform over equal-mass buckets, latent_precision bits each
        for b in buckets[::-1]:
            message.push(int(b), 1, self.latent_precision)
        pixels = -np.log2(px[np.arange(len(x)), x] / 2.0**self.pixel_precision).sum()
        back = -np.log2(q[np.arange(len(buckets)), buckets] / 2.0**self.posterior_precision).sum()
        return float(pixels + len(buckets) * self.latent_precision - back)

    def pop_image(self, message: Message) -> np.ndarray:
        """Take the last image off ``message``: the reverse of :meth:`push_image`, step by step."""
        uniform = np.arange((1 << self.latent_precision) + 1)
        buckets = np.array([message.pop(self.latent_precision, uniform) for _ in range(self.model.latent_dim)])
        px = self.likelihood_freqs(buckets)
        x = np.array([message.pop(self.pixel_precision, cumulative(f)) for f in px[::-1]])[::-1]
        q = self.posterior_freqs(x)
        for f, b in zip(q[::-1], buckets[::-1]):  # give the bits back
            message.push(int(cumulative(f)[b]), int(f[b]), self.posterior_precision)
        return x

    # ---------------------------------------------------------------- a data set
    def initial_words(self) -> int:
        """How many random 32-bit words the first image needs: popping ``z`` takes at most
        ``posterior_precision`` bits a latent dimension, and one word covers the head's renormalisation."""
        return -(-self.model.latent_dim * self.posterior_precision // 32) + 1

    def encode(self, counts: Any, seed: int = 0) -> Message:
        """Compress ``counts`` (N, D) of integers in ``0..n``; returns the :class:`~minivae.ans.Message`.

        The message starts with :meth:`initial_words` random 32-bit words (the
        *initial bits*): the first image's ``z`` is decoded from them, before
        anything else is on the message. The receiver gets them back at the end.
        Each image's code length in bits is kept in ``code_lengths_``.
        """
        counts = self.check_counts(counts)
        message = Message(np.random.default_rng(seed).integers(0, 1 << 32, self.initial_words(), dtype=np.int64))
        self.code_lengths_ = np.array([self.push_image(message, x) for x in counts])
        return message

    def decode(self, message: Message, n: int) -> np.ndarray:
        """The ``n`` images, in their original order; ``message`` is left as it started (the initial words)."""
        if not isinstance(message, Message):
            raise TypeError(f"decode takes the Message that encode returned (Message.from_bytes reads one from bytes); "
                            f"got {type(message).__name__}")
        n = check_integer_in("n", n, 0, None)
        return np.array([self.pop_image(message) for _ in range(n)][::-1])

    def check_counts(self, counts: Any) -> np.ndarray:
        counts = np.asarray(counts)
        if counts.ndim != 2 or counts.shape[1] != self.model.input_dim:
            raise ValueError(f"counts must be (N, {self.model.input_dim}); got shape {counts.shape}")
        if len(counts) == 0:
            raise ValueError("counts holds no images; give at least one to code")
        if counts.dtype.kind not in "iu" or counts.min() < 0 or counts.max() > self.trials:
            raise ValueError(f"counts must be integers in 0..{self.trials}, the model's pixel levels")
        return counts.astype(np.int64)


class PixelCodec:
    """A baseline without latents: each pixel coded independently with its own histogram from training data.

    ``p_d(k)`` is the training images' frequency of count ``k`` at pixel ``d``, with
    one pseudo-count per value (Laplace), so that no count is impossible.
    """

    def __init__(self, train_counts: Any, trials: int, precision: int = 24) -> None:
        self.probs = pixel_histograms(train_counts, trials + 1)  # (D, n + 1)
        self.freqs = quantize(self.probs, precision)
        self.starts = [cumulative(f) for f in self.freqs]
        self.precision = precision

    def encode(self, counts: Any) -> Message:
        message = Message()
        for x in np.asarray(counts, dtype=np.int64):
            for d, k in enumerate(x):
                message.push(int(self.starts[d][k]), int(self.freqs[d][k]), self.precision)
        return message

    def decode(self, message: Message, n: int) -> np.ndarray:
        D = len(self.freqs)
        out = np.zeros((n, D), dtype=np.int64)
        for i in reversed(range(n)):
            for d in reversed(range(D)):
                out[i, d] = message.pop(self.precision, self.starts[d])
        return out
