"""Two stochastic layers (the hierarchical VAE of Burda, Grosse & Salakhutdinov, 2016), derived by hand.

Generation goes down from ``z2`` to ``x``; inference goes up from ``x`` to ``z2``::

    p(x, z1, z2) = p(z2) p(z1|z2) p(x|z1)     p(z2) = N(0, I),  p(z1|z2) = N(m(z2), diag(exp(r(z2))))
    q(z1, z2|x)  = q(z1|x) q(z2|z1)           q(z1|x) = N(mu1(x), ...),  q(z2|z1) = N(mu2(z1), diag(exp(s2(z1))))

The bottom layer is the plain VAE's: its encoder gives ``q(z1|x)`` and its decoder ``p(x|z1)``. Two more
Gaussian networks sit above it: the *top encoder* ``q(z2|z1)`` and the *top decoder* ``p(z1|z2)``, which is the
first layer's prior, learned. One draw of both layers, ``z1 = mu1 + sigma1 * eps1`` and then ``z2 = mu2(z1) +
sigma2(z1) * eps2``, gives the log importance weight::

    log w = log p(x|z1) + log p(z1|z2) + log p(z2) - log q(z1|x) - log q(z2|z1)

whose mean under ``q`` is the ELBO. Grouped, it is a reconstruction less two KL-like terms::

    ELBO = E[ log p(x|z1) ] - E[ log q(z1|x) - log p(z1|z2) ] - E[ log q(z2|z1) - log p(z2) ]

the first layer's against the prior that the draw of ``z2`` sets, and the second's against ``N(0, I)``. Neither
is a closed-form KL (``p(z1|z2)`` moves with the draw of ``z2``, and ``q(z2|z1)`` with the draw of ``z1``), so
both are estimated from the sample. The ``K``-sample importance-weighted bound ``log (1/K) sum_k w_k`` averages
the same weights inside the log.

**The derivatives.** The loss is ``sum_m g_m (-log w_m)`` over the rows ``m`` (examples, times samples for the
bound), with ``g_m = 1/N`` for the ELBO and the normalised weight over ``N`` for the bound. Going back from
``log w`` (``(z - mu) / sigma = eps`` turns each ``log q`` into ``-(logvar + eps^2 + log 2 pi) / 2``)::

    log p(z2)     = -(z2^2 + log 2 pi) / 2                 d/dz2 = -z2
    log p(z1|z2)  = -((z1 - m)^2 e^-r + r + log 2 pi) / 2  d/dz1 = -(z1 - m) e^-r,  d/dm = (z1 - m) e^-r,
                                                          d/dr  = ((z1 - m)^2 e^-r - 1) / 2;
                                                          m and r reach z2 through the top decoder
    -log q(z2|z1) = (s2 + eps2^2 + log 2 pi) / 2           d/ds2 = 1/2, directly (nothing to mu2)
    z2 = mu2 + exp(s2 / 2) eps2                           dz2/dmu2 = 1, dz2/ds2 = eps2 exp(s2 / 2) / 2;
                                                          mu2 and s2 reach z1 through the top encoder
    log p(x|z1)                                            the likelihood's, to z1 through the decoder
    -log q(z1|x)  = (s1 + eps1^2 + log 2 pi) / 2           d/ds1 = 1/2, directly
    z1 = mu1 + exp(s1 / 2) eps1                           as the VAE's sampler: dz1/dmu1 = 1, dz1/ds1 = eps1 sigma1 / 2

So ``z1``'s gradient arrives along three paths: through the decoder, from its prior ``p(z1|z2)`` directly, and
back from ``z2`` through the top encoder, since ``z2`` was drawn from ``z1``. :class:`HierarchicalVAE` writes
each out; :func:`conditional_prior_backward` is the prior's part on its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .backend import Array, get_array_module, to_numpy
from .layers import ACTIVATIONS, Dense, GaussianSample
from .losses import LOG_2PI, gaussian_log_density
from .model import VAE
from .validation import check_positive, check_samples

MAX_TOP_DIM = 4096  # a second layer wider than this is a typo: the first is rarely a tenth of it


def conditional_prior_backward(z1: Array, m: Array, r: Array, g: Array) -> tuple[Array, Array, Array]:
    """Back through ``-log p(z1|z2) = -log N(z1; m, diag(exp(r)))`` with each row's weight ``g`` (M,) in the loss.

    Returns ``(dz1, dm, dr)`` (M, L1): the gradients of ``sum_m g_m (-log p(z1_m|z2_m))`` with respect to the
    first layer's sample and the prior's mean and log-variance (the module's description derives them).
    """
    scaled = (z1 - m) * get_array_module(z1, m).exp(-r)  # (z1 - m) / v
    gm = g[:, None]
    return gm * scaled, -gm * scaled, -0.5 * gm * ((z1 - m) * scaled - 1)


class GaussianNetwork:
    """A dense network with a Gaussian's two heads: rows ``h`` (M, A) -> ``mu, logvar`` (M, B).

    ``layers`` are (Dense, activation) pairs; ``mu_head`` and ``logvar_head`` read the last hidden layer
    (or ``h`` itself when there is none). :meth:`backward` returns dL/dh, the input's gradient, always.
    """

    def __init__(self, layers: list[tuple[Dense, Any]], mu_head: Dense, logvar_head: Dense) -> None:
        self.layers, self.mu_head, self.logvar_head = layers, mu_head, logvar_head

    def forward(self, h: Array) -> tuple[Array, Array]:
        for dense, act in self.layers:
            h = act.forward(dense.forward(h))
        return self.mu_head.forward(h), self.logvar_head.forward(h)

    def backward(self, dmu: Array, dlogvar: Array) -> Array:
        dh = self.mu_head.backward(dmu)
        dh_logvar = self.logvar_head.backward(dlogvar)
        assert dh is not None and dh_logvar is not None  # need_dx is on: Dense returns dL/dx
        dh = dh + dh_logvar  # both heads read the same h
        for dense, act in reversed(self.layers):
            dh = dense.backward(act.backward(dh))
        return dh


def gaussian_network_shapes(prefix: str, fan_in: int, hidden_dims: Sequence[int],
                            out: int) -> dict[str, tuple[int, ...]]:
    """Name -> shape of a :class:`GaussianNetwork`'s parameters: ``prefix.{i}``, ``prefix.mu``, ``prefix.logvar``."""
    shapes: dict[str, tuple[int, ...]] = {}
    sizes = (fan_in, *hidden_dims)
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes.update({f"{prefix}.{i}.W": (a, b), f"{prefix}.{i}.b": (b,)})
    for head in ("mu", "logvar"):
        shapes.update({f"{prefix}.{head}.W": (sizes[-1], out), f"{prefix}.{head}.b": (out,)})
    return shapes


class HierarchicalVAE(VAE):
    """A VAE with two stochastic layers: ``x -> z1 -> z2`` in inference and ``z2 -> z1 -> x`` in generation.

    ``latent_dim`` is the first layer's size ``L1`` and ``top_dim`` the second's ``L2``; ``hidden_dims`` size
    the networks between ``x`` and ``z1`` (the VAE's encoder and decoder), ``top_hidden_dims`` those between
    ``z1`` and ``z2`` (``top.encoder``, for ``q(z2|z1)``, and ``top.decoder``, for ``p(z1|z2)``, with the
    sizes reversed). Each draw from the posterior takes ``L1 + L2`` standard normals (``noise_dim``): the first
    ``L1`` for ``z1``, the rest for ``z2``.

    :meth:`encode` returns ``q(z1|x)`` and :meth:`decode` reads ``z1``; :meth:`sample` draws ``z2``, then
    ``z1``, then ``x``; :meth:`active_units` counts each layer's. ``fit`` trains on the ELBO (both KL-like
    terms weighted by ``kl_weight`` or ``beta``) or on the importance-weighted bound; free bits, which floor a
    closed-form per-dimension KL, do not apply. The model is unconditional.
    """

    family = "hierarchical"

    def __init__(self, input_dim: int, top_dim: int = 10, top_hidden_dims: int | Sequence[int] = (100,),
                 **options: Any) -> None:
        if options.get("n_classes") is not None:
            raise ValueError("a HierarchicalVAE is unconditional: leave n_classes out")
        own = check_top({"top_dim": top_dim, "top_hidden_dims": top_hidden_dims})
        self.top_dim, self.top_hidden_dims = own["top_dim"], tuple(own["top_hidden_dims"])
        super().__init__(input_dim, **options)

    @classmethod
    def family_shapes(cls, config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        own = check_top(config)
        L1, L2, hidden = config["latent_dim"], own["top_dim"], own["top_hidden_dims"]
        return {**gaussian_network_shapes("top.encoder", L1, hidden, L2),
                **gaussian_network_shapes("top.decoder", L2, tuple(reversed(hidden)), L1)}

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "family": self.family, "top_dim": self.top_dim,
                "top_hidden_dims": list(self.top_hidden_dims)}

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        own = {"latent_dim": self.latent_dim, "top_dim": self.top_dim, "top_hidden_dims": self.top_hidden_dims}
        return {**super().parameter_shapes(), **self.family_shapes(own)}

    @property
    def noise_dim(self) -> int:
        return self.latent_dim + self.top_dim

    def bind(self, flat: Array) -> None:
        super().bind(flat)
        p, g = self.params, self.grads

        def network(prefix: str, depth: int) -> GaussianNetwork:
            dense = lambda name: Dense(p[name + ".W"], p[name + ".b"], g[name + ".W"], g[name + ".b"])
            layers = [(dense(f"{prefix}.{i}"), ACTIVATIONS[self.activation]()) for i in range(depth)]
            return GaussianNetwork(layers, dense(prefix + ".mu"), dense(prefix + ".logvar"))

        self.top_encoder = network("top.encoder", len(self.top_hidden_dims))  # z1 -> q(z2|z1)
        self.top_decoder = network("top.decoder", len(self.top_hidden_dims))  # z2 -> p(z1|z2)
        self.top_sampler = GaussianSample()

    def __repr__(self) -> str:
        return super().__repr__().replace(
            "VAE(", f"HierarchicalVAE(top_dim={self.top_dim}, top_hidden_dims={self.top_hidden_dims}, ", 1)

    def check_objective(self, objective: str, n_samples: int, kl_weight: float | None = None, free_bits: float = 0.0,
                        warmup_epochs: int = 0) -> tuple[str, int]:
        if free_bits:
            raise ValueError("free bits floor a closed-form KL per dimension, which neither of a HierarchicalVAE's "
                             "layers has (p(z1|z2) moves with z2); train with free_bits=0")
        return super().check_objective(objective, n_samples, kl_weight, free_bits, warmup_epochs)

    # ------------------------------------------------------------------ both layers, forward and back
    def layers_forward(self, x: Array, mu1: Array, logvar1: Array, eps: Array) -> tuple[Array, Array, Array]:
        """One draw of both layers for each row: ``x`` (M, D), ``q(z1|x)``'s ``mu1, logvar1`` (M, L1) and the
        noise ``eps`` (M, L1 + L2) -> ``(rec, kl1, kl2)`` (M,), so that ``log w = -rec - kl1 - kl2``.

        ``rec = -log p(x|z1)``, ``kl1 = log q(z1|x) - log p(z1|z2)`` and ``kl2 = log q(z2|z1) - log p(z2)``. The
        layers keep what :meth:`layers_backward` needs.
        """
        L1, L2 = self.latent_dim, self.top_dim
        eps1, eps2 = eps[:, :L1], eps[:, L1:]
        z1 = self.sampler.forward(mu1, logvar1, eps1)  # z1 = mu1 + sigma1 * eps1
        mu2, logvar2 = self.top_encoder.forward(z1)  # q(z2|z1)
        z2 = self.top_sampler.forward(mu2, logvar2, eps2)  # z2 = mu2 + sigma2 * eps2
        m, r = self.top_decoder.forward(z2)  # p(z1|z2) = N(m, diag(exp(r)))
        out, dec_logvar = self.decoder_forward(z1)
        rec, dout, ddec_logvar = self.nll(x, out, dec_logvar)
        log_q1 = -0.5 * ((logvar1 + eps1 * eps1).sum(axis=1) + L1 * LOG_2PI)
        log_q2 = -0.5 * ((logvar2 + eps2 * eps2).sum(axis=1) + L2 * LOG_2PI)
        log_p2 = -0.5 * ((z2 * z2).sum(axis=1) + L2 * LOG_2PI)
        log_p1 = gaussian_log_density(z1, m, r)
        self._layers_cache = (z1, z2, m, r, dout, ddec_logvar)
        return rec, log_q1 - log_p1, log_q2 - log_p2

    def layers_backward(self, g_rec: Array, g_kl: Array) -> tuple[Array, Array]:
        """Back from the loss ``sum_m g_rec_m rec_m + g_kl_m (kl1_m + kl2_m)`` of the last :meth:`layers_forward`
        to ``q(z1|x)``: returns ``(dmu1, dlogvar1)`` (M, L1), filling the decoder's and both top networks'
        gradients on the way (the module's description derives each line)."""
        z1, z2, m, r, dout, ddec_logvar = self._layers_cache
        dout = dout * g_rec[:, None]
        if ddec_logvar is not None:
            ddec_logvar = ddec_logvar * g_rec[:, None]
        dz1 = self.decoder_backward(dout, ddec_logvar)  # from -log p(x|z1), through the decoder
        dz1_prior, dm, dr = conditional_prior_backward(z1, m, r, g_kl)
        dz1 = dz1 + dz1_prior  # from -log p(z1|z2), directly
        dz2 = self.top_decoder.backward(dm, dr)  # the prior's mean and log-variance are functions of z2
        dz2 = dz2 + g_kl[:, None] * z2  # from -log p(z2) = (z2^2 + log 2 pi) / 2
        dmu2, dlogvar2 = self.top_sampler.backward(dz2)  # dz2/dmu2 = 1, dz2/dlogvar2 = eps2 sigma2 / 2
        dlogvar2 = dlogvar2 - 0.5 * g_kl[:, None]  # from log q(z2|z1) = -(logvar2 + eps2^2 + log 2 pi) / 2
        dz1 = dz1 + self.top_encoder.backward(dmu2, dlogvar2)  # z2 was drawn from z1: the third path
        dmu1, dlogvar1 = self.sampler.backward(dz1)  # dz1/dmu1 = 1, dz1/dlogvar1 = eps1 sigma1 / 2
        return dmu1, dlogvar1 - 0.5 * g_kl[:, None]  # from log q(z1|x), directly

    def forward_backward(self, x: Array, eps: Array, kl_weight: float | None = None, free_bits: float = 0.0,
                         onehot: Array | None = None) -> Array:
        """One pass over a checked batch on the single-sample ELBO; fills ``flat_grads``, returns ``stats``.

        ``eps`` is (N, L1 + L2). ``stats`` is ``(loss, rec, kl)`` as for the VAE, with ``kl`` the sample's
        ``kl1 + kl2``, an unbiased estimate of ``KL(q(z1, z2|x) || p(z1, z2))``, weighted in the loss by
        ``kl_weight`` (default ``beta``).
        """
        xp = self.xp
        N = x.shape[0]
        w = self.beta if kl_weight is None else kl_weight
        mu1, logvar1 = self.encoder_forward(x)
        rec, kl1, kl2 = self.layers_forward(x, mu1, logvar1, eps)
        rec_mean, kl_mean = rec.mean(), (kl1 + kl2).mean()
        stats = (rec_mean.astype(xp.float64) + w * kl_mean.astype(xp.float64), rec_mean, kl_mean)
        g = xp.full(N, 1.0 / N, dtype=x.dtype)  # each row's share of the batch mean
        dmu1, dlogvar1 = self.layers_backward(g, w * g)
        self.encoder_backward(dmu1, dlogvar1)
        return stats

    def iwae_forward_backward(self, x: Array, eps: Array, onehot: Array | None = None) -> Array:
        """The K-sample importance-weighted bound over a checked batch, ``eps`` (K, N, L1 + L2); fills
        ``flat_grads`` and returns ``(loss, rec, kl)`` as the VAE's does, ``kl`` being ``kl1 + kl2``.

        Its gradient is each sample's ELBO gradient weighted by its normalised weight ``w_k / sum_j w_j``
        (see :meth:`minivae.model.VAE.iwae_forward_backward`); the K samples share one pass of ``q(z1|x)``.
        """
        xp = self.xp
        K, N, _ = eps.shape
        mu1, logvar1 = self.encoder_forward(x)
        rows = lambda a: xp.concatenate([a] * K)  # row k N + n is example n's k-th sample
        rec, kl1, kl2 = self.layers_forward(rows(x), rows(mu1), rows(logvar1), eps.reshape(K * N, -1))
        log_w = -(rec + kl1 + kl2).reshape(K, N)
        top = log_w.max(axis=0)
        weights = xp.exp(log_w - top)
        total = weights.sum(axis=0)
        bound = top + xp.log(total) - math.log(K)
        stats = (-bound.mean(), rec.mean(), (kl1 + kl2).mean())
        g = (weights / total / N).reshape(K * N)  # d loss / d(-log w_kn)
        dmu1, dlogvar1 = self.layers_backward(g, g)
        self.encoder_backward(dmu1.reshape(K, N, -1).sum(axis=0), dlogvar1.reshape(K, N, -1).sum(axis=0))
        return stats

    def log_weights(self, x: Array, eps: Array, onehot: Array | None = None) -> Array:
        """``log p(x, z1, z2) - log q(z1, z2|x)`` for the noise ``eps`` (B, c, L1 + L2): (B, c)."""
        B, c, _ = eps.shape
        mu1, logvar1 = self.encoder_forward(x)
        rows = lambda a: self.xp.repeat(a, c, axis=0)  # row b c + j is example b's j-th sample
        rec, kl1, kl2 = self.layers_forward(rows(x), rows(mu1), rows(logvar1), eps.reshape(B * c, -1))
        return -(rec + kl1 + kl2).reshape(B, c)

    def elbo(self, x: Any, n_samples: int = 1, eps: Array | None = None, y: Any = None) -> Array:
        """Per-example ELBO in nats, (N,): both KL-like terms estimated from ``n_samples`` draws of ``q(z1, z2|x)``
        from ``eval_rng_``; ``eps`` (N, L1 + L2) fixes the noise of the first."""
        return self.sampled_elbo(x, n_samples, eps, y)

    # ------------------------------------------------------------------ the prior and the latent layers
    def log_prior(self, z: Array) -> Array:
        raise ValueError("a HierarchicalVAE's p(z1) is the integral of p(z1|z2) p(z2) over z2, which has no closed "
                         "form; its log_weights score both layers' draws instead")

    def prior_sample(self, n: int, rng: np.random.Generator | None = None) -> Array:
        """``n`` draws of ``z1`` from the model (n, L1): ``z2 ~ N(0, I)``, then ``z1 ~ p(z1|z2)``, from ``rng``."""
        z2 = self.draw_normal((n, self.top_dim), rng)
        m, r = self.top_decoder.forward(z2)
        return m + self.xp.exp(0.5 * r) * self.draw_normal((n, self.latent_dim), rng)

    def layer_means(self, x: Any, n_samples: int = 100) -> tuple[np.ndarray, np.ndarray]:
        """``E[z1|x]`` (N, L1) and ``E[z2|x]`` (N, L2) on the host, in float64: ``mu1(x)``, and the mean of
        ``mu2(z1)`` over ``n_samples`` draws ``z1 ~ q(z1|x)`` from ``eval_rng_`` (``E[z2|x] = E_q(z1|x)[mu2(z1)]``)."""
        n_samples = check_samples("n_samples", n_samples)
        x = self.checked_input(x)
        mu1, logvar1 = self.encoder_forward(x)
        total = np.zeros((x.shape[0], self.top_dim))
        for _ in range(n_samples):
            z1 = mu1 + self.xp.exp(0.5 * logvar1) * self.draw_normal(mu1.shape, self.eval_rng_)
            total = total + to_numpy(self.top_encoder.forward(z1)[0]).astype(np.float64)
        return to_numpy(mu1).astype(np.float64), total / n_samples

    def active_units(self, x: Any, threshold: float = 0.01,
                     n_samples: int = 100) -> tuple[tuple[int, np.ndarray], tuple[int, np.ndarray]]:
        """Each layer's ``(count, variances)``: ``Var_x E[z_l|x]`` per unit and how many exceed ``threshold``
        (Burda et al.'s active units), from :meth:`layer_means`."""
        threshold = check_positive("threshold", threshold)
        layers = []
        for means in self.layer_means(x, n_samples):
            variances = means.var(axis=0)
            layers.append((int((variances > threshold).sum()), variances))
        return layers[0], layers[1]


def check_top(config: dict[str, Any]) -> dict[str, Any]:
    """A configuration's ``top_dim`` (1 to ``MAX_TOP_DIM``) and ``top_hidden_dims`` (whole numbers), checked."""
    top_dim = check_positive("top_dim", config.get("top_dim"), integer=True)
    if top_dim > MAX_TOP_DIM:
        raise ValueError(f"top_dim={top_dim}: wider than the {MAX_TOP_DIM} units a second layer may have")
    hidden = config.get("top_hidden_dims")
    sizes = (hidden,) if isinstance(hidden, (int, np.integer)) else hidden
    if isinstance(sizes, str) or not isinstance(sizes, (list, tuple)):
        raise ValueError(f"top_hidden_dims must be a sequence of integers like (100,); got {hidden!r}")
    return {"top_dim": top_dim,
            "top_hidden_dims": [check_positive("each top hidden size", h, integer=True) for h in sizes]}
