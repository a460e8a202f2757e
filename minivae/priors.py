"""Learned priors: a mixture of Gaussians and the VampPrior (Tomczak & Welling, 2018), derived by hand.

The plain VAE's prior ``p(z) = N(0, I)`` is fixed, and the KL term pulls every posterior towards it; the
codes of the data (the *aggregate posterior*, ``q(z) = mean_n q(z|x_n)``) still need not fill it, and the
regions of ``N(0, I)`` that no code reaches are where samples from the model come out as no digit. A learned
prior can follow the codes instead. Both priors here are mixtures of ``C`` diagonal Gaussians::

    p(z) = sum_c pi_c N(z; m_c, diag(exp(s_c))),     log p(z) = logsumexp_c [ log pi_c + log N(z; m_c, e^s_c) ]

- :class:`MixturePriorVAE`: the weights (``pi = softmax(prior.logits)``), means and log-variances are
  parameters of their own;
- :class:`VampPriorVAE`: the mixture is the average of the encoder's posteriors of ``C`` learned
  *pseudo-inputs* ``u_c`` (images the model makes up): ``p(z) = (1/C) sum_c q(z|u_c)``, so ``m_c, s_c =
  encoder(u_c)`` and the prior's parameters are the pseudo-inputs, trained through the encoder.

The KL term is no longer closed form. Both terms of the ELBO are estimated from the sample ``z = mu + sigma *
eps`` (``log q(z|x) = -(logvar + eps^2 + log 2 pi) / 2`` summed over dimensions, as for the flow)::

    ELBO ~= log p(x|z) - [ log q(z|x) - log p(z) ]

and the prior's log-density passes gradients to ``z`` (so to the encoder through the sampler) and to its own
parameters. With the responsibilities ``r_c(z) = pi_c N(z; m_c) / p(z)`` (which sum to 1 over ``c``)::

    d log p(z) / dz     = sum_c r_c (m_c - z) / v_c                   (v_c = exp(s_c))
    d log p(z) / dm_c   = r_c (z - m_c) / v_c
    d log p(z) / ds_c   = r_c ((z - m_c)^2 / v_c - 1) / 2
    d log p(z) / dlog pi_c = r_c,   and through the softmax, d / dlogits_c = r_c - pi_c

Each is the Gaussian's own derivative, weighted by how much of ``p(z)`` that component holds at ``z``.
:func:`mixture_log_density` and :func:`mixture_backward` compute them for M rows from the differences
``z - m_c``, an (M, C, L) array. (Expanding ``(z - m_c)^2 = z^2 - 2 z m_c + m_c^2`` would make every sum a
matrix product with no such array, but it cancels catastrophically for a narrow component far from the
origin, as the posteriors of an aggregate posterior can be: ``z`` and ``m_c`` near 10^4 with a variance
near 10^-9 lose every digit.) :meth:`LearnedPriorVAE.log_prior` takes its rows in blocks to bound that array.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .backend import Array, get_array_module, to_numpy
from .losses import LOG_2PI
from .model import VAE
from .validation import check_positive

MAX_COMPONENTS = 4096  # more than this is a typo: every step evaluates every component at every sample
MAX_BLOCK = 2**22  # numbers in one block of (rows, components, dimensions) differences that log_prior scores


def mixture_log_density(z: Array, log_weights: Array, means: Array, logvars: Array) -> tuple[Array, Array]:
    """``log p(z)`` (M,) of rows ``z`` (M, L) under the mixture, and the responsibilities ``r`` (M, C).

    ``log_weights`` (C,) are the components' normalised log-weights ``log pi_c``; ``means`` and ``logvars``
    (C, L) their diagonal Gaussians.
    """
    xp = get_array_module(z, means)
    L = z.shape[1]
    d = z[:, None, :] - means[None]  # (M, C, L): each row against each component's mean
    quad = (d * d * xp.exp(-logvars)[None]).sum(axis=2)  # sum_l (z_l - m_cl)^2 / v_cl, (M, C)
    log_joint = log_weights - 0.5 * (quad + logvars.sum(axis=1) + L * LOG_2PI)  # log pi_c + log N(z; m_c, v_c)
    top = log_joint.max(axis=1, keepdims=True)  # the log-sum-exp's shift, so that no exp overflows
    log_p = top[:, 0] + xp.log(xp.exp(log_joint - top).sum(axis=1))
    return log_p, xp.exp(log_joint - log_p[:, None])


def mixture_backward(z: Array, r: Array, means: Array, logvars: Array,
                     dlog_p: Array) -> tuple[Array, Array, Array, Array]:
    """Back through ``log p(z)``: ``dlog_p`` (M,), the loss's gradient with respect to each row's ``log p(z)``.

    Returns ``dz`` (M, L), ``dmeans`` and ``dlogvars`` (C, L) and ``dlog_weights`` (C,): the gradients with
    respect to ``z``, the components and their log-weights ``log pi_c`` (the module's description derives them).
    """
    xp = get_array_module(z, means)
    g = (r * dlog_p[:, None])[:, :, None]  # (M, C, 1): each responsibility times the gradient reaching its row
    scaled = (z[:, None, :] - means[None]) * xp.exp(-logvars)[None]  # (z - m_c) / v_c, (M, C, L)
    dz = -(g * scaled).sum(axis=1)  # d log N(z; m_c, v_c) / dz = (m_c - z) / v_c, over the components
    dmeans = (g * scaled).sum(axis=0)  # d log N / dm_c = (z - m_c) / v_c, over the rows
    # d log N / ds_c = ((z - m_c)^2 / v_c - 1) / 2, and (z - m_c)^2 / v_c = scaled^2 v_c
    dlogvars = 0.5 * (g * (scaled * scaled * xp.exp(logvars)[None] - 1)).sum(axis=0)
    return dz, dmeans, dlogvars, g[:, :, 0].sum(axis=0)  # d log p / d log pi_c = r_c


class LearnedPriorVAE(VAE):
    """A VAE whose prior is a mixture of ``n_components`` Gaussians learned with the model (a base class).

    Subclasses say where the mixture comes from (:meth:`prior_components`) and where its gradient goes; the
    step, the importance weights (through :meth:`log_prior`), the ELBO and sampling are shared here. The
    posterior is the VAE's diagonal Gaussian, and ``encode`` returns it. ``fit`` trains on the ELBO
    (``objective="elbo"``, no free bits: with a learned prior there is no per-dimension KL to floor) and the
    model is unconditional.
    """

    family = ""
    elbo_only = "free bits floors a per-dimension KL, which a mixture prior has not"

    def __init__(self, input_dim: int, n_components: int = 10, **options: Any) -> None:
        self.n_components = check_components(n_components)
        if options.get("n_classes") is not None:
            raise ValueError(f"a {type(self).__name__} is unconditional: leave n_classes out (a learned prior "
                             "of p(z|y) would be a prior per label)")
        super().__init__(input_dim, **options)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "family": self.family, "n_components": self.n_components}

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        own = {"n_components": self.n_components, "latent_dim": self.latent_dim, "input_dim": self.input_dim}
        return {**super().parameter_shapes(), **self.family_shapes(own)}

    def __repr__(self) -> str:
        return super().__repr__().replace("VAE(", f"{type(self).__name__}(n_components={self.n_components}, ", 1)

    # ------------------------------------------------------------------ the prior
    def prior_components(self) -> tuple[Array, Array, Array]:
        """The mixture as it stands: ``(log_weights (C,), means (C, L), logvars (C, L))``."""
        raise NotImplementedError

    def log_prior(self, z: Array) -> Array:
        """``log p(z)`` under the learned mixture, for ``z`` (..., L): one number per row, in blocks of rows that
        keep the (rows, C, L) differences under ``MAX_BLOCK`` numbers."""
        flat = z.reshape(-1, z.shape[-1])
        components = self.prior_components()
        rows = max(1, MAX_BLOCK // (self.n_components * self.latent_dim))
        parts = [mixture_log_density(flat[i:i + rows], *components)[0] for i in range(0, flat.shape[0], rows)]
        return (self.xp.concatenate(parts) if parts else flat[:, 0]).reshape(z.shape[:-1])

    def prior_sample(self, n: int, rng: np.random.Generator | None = None) -> Array:
        """``n`` draws ``z ~ p(z)``: a component ``c ~ pi``, then ``z = m_c + exp(s_c / 2) eps``, from ``rng``."""
        rng = self.rng_ if rng is None else rng
        log_weights, means, logvars = self.prior_components()
        weights = np.exp(to_numpy(log_weights).astype(np.float64))
        c = self.xp.asarray(rng.choice(self.n_components, size=n, p=weights / weights.sum()))
        eps = self.draw_normal((n, self.latent_dim), rng)
        return means[c] + self.xp.exp(0.5 * logvars[c]) * eps

    # ------------------------------------------------------------------ training
    def encode_with_prior(self, x: Array) -> tuple[Array, Array, tuple[Array, Array, Array]]:
        """The posterior's ``mu, logvar`` (N, L) of a checked batch and the prior's components, in one pass
        whose caches :meth:`backward_with_prior` reads."""
        mu, logvar = self.encoder_forward(x)
        return mu, logvar, self.prior_components()

    def backward_with_prior(self, dmu: Array, dlogvar: Array, dmeans: Array, dlogvars: Array,
                            dlog_weights: Array) -> None:
        """Fill the encoder's gradients from ``dmu, dlogvar`` and the prior's from its components' gradients."""
        raise NotImplementedError

    def forward_backward(self, x: Array, eps: Array, kl_weight: float | None = None, free_bits: float = 0.0,
                         onehot: Array | None = None) -> Array:
        """One pass over a checked batch on the single-sample ELBO; fills ``flat_grads``, returns ``stats``.

        ``stats`` is ``(loss, rec, kl)`` as for the VAE, with ``kl`` the sample's ``log q(z|x) - log p(z)``, an
        unbiased estimate of ``KL(q(z|x) || p(z))``.

        Notes
        -----
        ``log q(z|x) = -(logvar + eps^2 + log 2 pi) / 2`` (as ``(z - mu) / sigma = eps``) gives ``dlogvar +=
        -1/2`` directly and nothing to ``mu``; ``-log p(z)`` sends ``-1`` to each row's ``log p(z)``, which
        :func:`mixture_backward` carries to ``z`` and to the prior. All carry the KL's weight and the batch
        mean's 1/N.
        """
        xp = self.xp
        N, L = eps.shape
        w = self.beta if kl_weight is None else kl_weight
        mu, logvar, (log_weights, means, logvars) = self.encode_with_prior(x)
        z = self.sampler.forward(mu, logvar, eps)
        out, dec_logvar = self.decoder_forward(z)
        rec, dout, ddec_logvar = self.nll(x, out, dec_logvar)
        log_q = -0.5 * ((logvar + eps * eps).sum(axis=1) + L * LOG_2PI)
        log_p, r = mixture_log_density(z, log_weights, means, logvars)
        kl = log_q - log_p  # (N,)
        rec_mean, kl_mean = rec.mean(), kl.mean()
        stats = (rec_mean.astype(xp.float64) + w * kl_mean.astype(xp.float64), rec_mean, kl_mean)

        dout *= 1.0 / N
        if ddec_logvar is not None:
            ddec_logvar *= 1.0 / N
        dz = self.decoder_backward(dout, ddec_logvar)  # from log p(x|z)
        dz_prior, dmeans, dlogvars, dlog_weights = mixture_backward(z, r, means, logvars,
                                                                    xp.full(N, -w / N, dtype=z.dtype))
        dz += dz_prior  # from -log p(z)
        dmu, dlogvar = self.sampler.backward(dz)  # dz/dmu = 1, dz/dlogvar = eps sigma / 2
        dlogvar -= 0.5 * w / N  # from log q(z|x), directly
        self.backward_with_prior(dmu, dlogvar, dmeans, dlogvars, dlog_weights)
        return stats

    def elbo(self, x: Any, n_samples: int = 1, eps: Array | None = None, y: Any = None) -> Array:
        """Per-example ELBO in nats, shape (N,): both terms estimated from ``n_samples`` draws of ``q(z|x)`` (the
        KL to a mixture has no closed form), from ``eval_rng_``; ``eps`` (N, L) fixes the noise of one."""
        return self.sampled_elbo(x, n_samples, eps, y)


class MixturePriorVAE(LearnedPriorVAE):
    """A VAE with a mixture-of-Gaussians prior whose weights, means and variances are parameters.

    It adds ``prior.logits`` (C,), ``prior.means`` and ``prior.logvars`` (C, L). They start as equal weights,
    means drawn from ``N(0, I)`` (so the components start apart) and unit variances.
    """

    family = "mixture_prior"

    @classmethod
    def family_shapes(cls, config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        C, L = check_components(config.get("n_components")), config["latent_dim"]
        return {"prior.logits": (C,), "prior.means": (C, L), "prior.logvars": (C, L)}

    def initial_params(self, shapes: dict[str, tuple[int, ...]]) -> np.ndarray:
        dense = super().initial_params({k: v for k, v in shapes.items() if not k.startswith("prior.")})
        C, L = self.n_components, self.latent_dim
        prior = [np.zeros(C), self.rng_.standard_normal((C, L)), np.zeros((C, L))]
        return np.concatenate([dense, *(p.ravel() for p in prior)]).astype(self.dtype)

    def prior_components(self) -> tuple[Array, Array, Array]:
        logits = self.params["prior.logits"]
        top = logits.max()
        log_weights = logits - (top + self.xp.log(self.xp.exp(logits - top).sum()))  # log softmax
        return log_weights, self.params["prior.means"], self.params["prior.logvars"]

    def backward_with_prior(self, dmu: Array, dlogvar: Array, dmeans: Array, dlogvars: Array,
                            dlog_weights: Array) -> None:
        self.encoder_backward(dmu, dlogvar)
        # log pi = logits - logsumexp(logits): d log pi_c / d logits_j = [c = j] - pi_j
        weights = self.xp.exp(self.prior_components()[0])
        self.grads["prior.logits"][...] = dlog_weights - weights * dlog_weights.sum()
        self.grads["prior.means"][...] = dmeans
        self.grads["prior.logvars"][...] = dlogvars


class VampPriorVAE(LearnedPriorVAE):
    """A VAE with the VampPrior: ``p(z) = (1/C) sum_c q(z|u_c)`` for ``C`` learned pseudo-inputs ``u_c``.

    It adds ``prior.pseudo_inputs`` (C, D), which start uniform in [0, 1] (set them to training images with
    ``model.params["prior.pseudo_inputs"][...] = x[:C]`` to start from the data). They are read by the encoder
    alone, so they need not be valid images of the likelihood: they are free real numbers.
    """

    family = "vampprior"

    @classmethod
    def family_shapes(cls, config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        return {"prior.pseudo_inputs": (check_components(config.get("n_components")), config["input_dim"])}

    def initial_params(self, shapes: dict[str, tuple[int, ...]]) -> np.ndarray:
        dense = super().initial_params({k: v for k, v in shapes.items() if not k.startswith("prior.")})
        pseudo = self.rng_.uniform(0, 1, size=(self.n_components, self.input_dim))
        return np.concatenate([dense, pseudo.ravel()]).astype(self.dtype)

    def prior_components(self) -> tuple[Array, Array, Array]:
        means, logvars = self.encoder_forward(self.params["prior.pseudo_inputs"])
        return self.uniform_weights(), means, logvars

    def uniform_weights(self) -> Array:
        return self.xp.full(self.n_components, -math.log(self.n_components), dtype=self.dtype)

    def encode_with_prior(self, x: Array) -> tuple[Array, Array, tuple[Array, Array, Array]]:
        """One encoder pass over the batch and the pseudo-inputs stacked below it, so that one backward pass
        carries both gradients (the layers cache one forward pass)."""
        N = x.shape[0]
        mu, logvar = self.encoder_forward(self.xp.concatenate([x, self.params["prior.pseudo_inputs"]]))
        return mu[:N], logvar[:N], (self.uniform_weights(), mu[N:], logvar[N:])

    def backward_with_prior(self, dmu: Array, dlogvar: Array, dmeans: Array, dlogvars: Array,
                            dlog_weights: Array) -> None:
        # the weights are fixed at 1/C: dlog_weights goes nowhere. The components are the encoder's outputs for
        # the pseudo-inputs, so their gradients join the batch's in one pass back through the encoder.
        xp = self.xp
        dx = self.encoder_backward(xp.concatenate([dmu, dmeans]), xp.concatenate([dlogvar, dlogvars]), need_dx=True)
        assert dx is not None
        self.grads["prior.pseudo_inputs"][...] = dx[dmu.shape[0]:]


def check_components(value: Any) -> int:
    """``value`` as a number of mixture components: a whole number from 1 to ``MAX_COMPONENTS``."""
    count = check_positive("n_components", value, integer=True)
    if count > MAX_COMPONENTS:
        raise ValueError(f"n_components={count}: more than the {MAX_COMPONENTS} components a learned prior may have; "
                         f"at most {MAX_COMPONENTS} (each is evaluated at every sample)")
    return count
