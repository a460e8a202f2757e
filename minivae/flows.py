"""Planar flows (Rezende & Mohamed, 2015): a posterior that need not be a diagonal Gaussian, derived by hand.

The encoder gives a diagonal Gaussian ``q_0(z_0|x) = N(mu(x), diag(sigma(x)^2))`` as before, and ``K`` planar
maps then bend its samples::

    z_k = z_{k-1} + u_k tanh(w_k . z_{k-1} + b_k)        (one vector u_k, w_k and one number b_k per map)

A map moves each point along ``u_k`` by an amount that depends on which side of the hyperplane
``w_k . z + b_k = 0`` it lies, so a stack of them can squeeze, stretch and bend the Gaussian. Its Jacobian is
``I + u_k psi_k^T`` with ``psi_k = (1 - t_k^2) w_k`` and ``t_k = tanh(w_k . z_{k-1} + b_k)``, whose determinant
is ``1 + u_k . psi_k`` (the matrix determinant lemma), so the density of ``z_K`` follows from the change of
variables::

    log q_K(z_K|x) = log q_0(z_0|x) - sum_k log |1 + (1 - t_k^2) w_k . u_k|

The map is invertible when ``w_k . u_k >= -1``. The parameter ``u_k`` is therefore free and the map uses::

    u_hat = u + (m(w . u) - w . u) w / |w|^2,    m(a) = -1 + softplus(a) > -1,

for which ``w . u_hat = m(w . u)``: the determinant ``1 + (1 - t^2) m(w . u)`` is then positive for every
``z``, and its log needs no absolute value. (In float64, ``m(a)`` rounds to -1 below ``a`` of about -37, and
the determinant to 0 on the hyperplane; the log-determinant's term in the loss grows without bound on the way
there, so training keeps away.)

There is no closed-form KL any more: the ELBO is estimated from the sample itself::

    ELBO = E_q0[ log p(x|z_K) + log p(z_K) - log q_0(z_0|x) + sum_k log det_k ],

and :class:`FlowVAE` trains on it with every derivative written out. The flow's parameters are shared by all
examples (the encoder still gives each its own ``mu`` and ``sigma``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .backend import Array, get_array_module
from .layers import Layer
from .losses import LOG_2PI
from .model import VAE
from .validation import check_positive

MAX_FLOW_LENGTH = 64  # more maps than this is a typo: each adds 2 L + 1 parameters and a pass over the samples


def softplus(xp: Any, a: Array) -> Array:
    """``log(1 + exp(a))`` without overflow for large ``a``."""
    return xp.maximum(a, 0) + xp.log1p(xp.exp(-xp.abs(a)))


def constrained_u(u: Array, w: Array) -> tuple[Array, Array, Array]:
    """``(u_hat, w . u_hat, w . u)``: the ``u`` the map uses, for which ``w . u_hat = m(w . u) > -1``."""
    xp = get_array_module(u, w)
    a = w @ u  # w . u
    wu_hat = softplus(xp, a) - 1  # m(a)
    u_hat = u + (wu_hat - a) / (w @ w) * w
    return u_hat, wu_hat, a


class PlanarFlow(Layer):
    """One planar map ``z -> z + u_hat tanh(w . z + b)`` on rows ``z`` (M, L), with its log-determinant (M,).

    Backward takes ``dz_next`` (M, L) and ``dlogdet`` (M,), the loss's gradients with respect to the map's
    output and its log-determinant, and returns ``dz`` (M, L), filling ``grads`` for ``u``, ``w`` and ``b``.
    """

    def __init__(self, u: Array, w: Array, b: Array, du: Array, dw: Array, db: Array) -> None:
        super().__init__()
        self.params = {"u": u, "w": w, "b": b}
        self.grads = {"u": du, "w": dw, "b": db}

    def forward(self, z: Array) -> tuple[Array, Array]:
        xp = get_array_module(z)
        u, w, b = self.params["u"], self.params["w"], self.params["b"]
        u_hat, wu_hat, a = constrained_u(u, w)
        t = xp.tanh(z @ w + b[0])  # (M,)
        det = 1 + (1 - t * t) * wu_hat  # (M,), positive: (1 - t^2) in (0, 1] and wu_hat > -1
        self.cache = (z, t, det, u_hat, wu_hat, a)
        return z + t[:, None] * u_hat, xp.log(det)

    def backward(self, dz_next: Array, dlogdet: Array) -> Array:
        xp = get_array_module(dz_next)
        z, t, det, u_hat, wu_hat, a = self._cached()
        u, w = self.params["u"], self.params["w"]
        s = 1 - t * t  # tanh' at the pre-activation
        ddet = dlogdet / det  # d log det / d det = 1 / det
        # z_next = z + t u_hat: dz_next reaches z directly, u_hat through t, and t through u_hat
        du_hat = t @ dz_next  # (L,): sum over the rows of t_m dz_next_m
        dt = dz_next @ u_hat  # (M,)
        # det = 1 + s (w . u_hat) with s = 1 - t^2: d det / dt = -2 t (w . u_hat), d det / d(w . u_hat) = s
        dt = dt - 2 * t * wu_hat * ddet
        dwu_hat = (s * ddet).sum()
        dpre = dt * s  # through t = tanh(pre), pre = w . z + b
        dz = dz_next + dpre[:, None] * w
        dw = z.T @ dpre  # d pre / d w = z
        db = dpre.sum(keepdims=True)
        # w . u_hat = m(a), a = w . u: d m / d a = sigmoid(a), and d a / d u = w, d a / d w = u
        slope = 1 / (1 + xp.exp(-a))
        du = dwu_hat * slope * w
        dw = dw + dwu_hat * slope * u
        # u_hat = u + c w with c = (m(a) - a) / |w|^2:
        #   d u_hat / d u = I + w (dc/du)^T,   dc/du = (m'(a) - 1) w / |w|^2
        #   d u_hat / d w = c I + w (dc/dw)^T, dc/dw = (m'(a) - 1) u / |w|^2 - 2 (m(a) - a) w / |w|^4
        ww = w @ w
        c = (wu_hat - a) / ww
        along = du_hat @ w  # du_hat . w, the part of du_hat that reaches c
        du = du + du_hat + along * (slope - 1) / ww * w
        dw = dw + c * du_hat + along * ((slope - 1) / ww * u - 2 * (wu_hat - a) / (ww * ww) * w)
        self.grads["u"][...] = du
        self.grads["w"][...] = dw
        self.grads["b"][...] = db
        return dz


class FlowVAE(VAE):
    """A VAE whose posterior is ``q_0(z|x)`` followed by ``flow_length`` planar maps.

    The encoder, decoder, likelihoods, training loop, checkpoints and command-line figures are the
    :class:`~minivae.model.VAE`'s; the flow adds the parameters ``flow.{k}.u``, ``flow.{k}.w`` (L,) and
    ``flow.{k}.b`` (1,) for each map ``k``. With ``flow_length=0`` it is the plain VAE with its KL estimated
    from the sample instead of in closed form.

    :meth:`encode` returns ``q_0``'s ``mu`` and ``logvar``, the Gaussian before the flow;
    :meth:`posterior_sample` draws from the posterior itself. The ELBO (:meth:`elbo`) and its gradient are
    single-sample estimates of both terms, and ``fit`` trains on the ELBO (``objective="elbo"``, no free
    bits): the per-dimension KL that free bits floors has no meaning once the flow mixes the dimensions.
    """

    family = "planar_flow"
    elbo_only = "free bits floors a per-dimension KL, which the flow's mixing of the dimensions does away with"

    def __init__(self, input_dim: int, flow_length: int = 4, **options: Any) -> None:
        self.flow_length = check_flow_length(flow_length)
        super().__init__(input_dim, **options)

    @classmethod
    def family_shapes(cls, config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        return flow_shapes(config["latent_dim"], check_flow_length(config.get("flow_length")))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "family": self.family, "flow_length": self.flow_length}

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        return {**super().parameter_shapes(), **flow_shapes(self.latent_dim, self.flow_length)}

    def initial_params(self, shapes: dict[str, tuple[int, ...]]) -> np.ndarray:
        """The VAE's layers as a VAE starts them; each map's ``u`` and ``w`` uniform in ``+-1/sqrt(L)``, ``b`` 0."""
        flows = flow_shapes(self.latent_dim, self.flow_length)
        dense = super().initial_params({k: v for k, v in shapes.items() if k not in flows})
        bound = 1 / math.sqrt(self.latent_dim)
        parts = [self.rng_.uniform(-bound, bound, size=shape) if not name.endswith(".b") else np.zeros(shape)
                 for name, shape in flows.items()]
        return np.concatenate([dense, *(p.ravel() for p in parts)]).astype(self.dtype)

    def bind(self, flat: Array) -> None:
        super().bind(flat)
        p, g = self.params, self.grads
        self._flows = [PlanarFlow(*(p[f"flow.{k}.{n}"] for n in "uwb"), *(g[f"flow.{k}.{n}"] for n in "uwb"))
                       for k in range(self.flow_length)]

    def __repr__(self) -> str:
        return super().__repr__().replace("VAE(", f"FlowVAE(flow_length={self.flow_length}, ", 1)

    def flow_forward(self, z0: Array) -> tuple[Array, Array]:
        """``z_0`` (M, L) through every map: ``z_K`` (M, L) and the summed log-determinants (M,)."""
        z, logdet = z0, self.xp.zeros(z0.shape[0], dtype=z0.dtype)
        for flow in self._flows:
            z, step = flow.forward(z)
            logdet = logdet + step
        return z, logdet

    def flow_backward(self, dz: Array, dlogdet: Array) -> Array:
        """Back through every map; each map's log-determinant enters the loss with the same gradient ``dlogdet``."""
        for flow in reversed(self._flows):
            dz = flow.backward(dz, dlogdet)
        return dz

    def forward_backward(self, x: Array, eps: Array, kl_weight: float | None = None, free_bits: float = 0.0,
                         onehot: Array | None = None) -> Array:
        """One pass over a checked batch on the single-sample ELBO; fills ``flat_grads``, returns ``stats``.

        ``stats`` is ``(loss, rec, kl)`` as for the VAE, with ``kl`` the sample's
        ``log q_0(z_0|x) - sum_k log det_k - log p(z_K)``, an unbiased estimate of ``KL(q_K(z|x) || p(z))``.

        Notes
        -----
        With ``z_0 = mu + sigma * eps`` and ``log q_0(z_0|x) = -(logvar + eps^2 + log 2 pi) / 2`` (as
        ``(z_0 - mu) / sigma = eps``), the KL estimate's derivatives are: ``-log p(z_K) = (z_K^2 + log 2 pi) / 2``
        gives ``dz_K += z_K``; each ``-log det_k`` gives ``dlogdet_k = -1``; ``log q_0`` gives ``dlogvar += -1/2``
        directly and nothing to ``mu``. All carry the KL's weight and the batch mean's 1/N.
        """
        xp = self.xp
        N, L = eps.shape
        w = self.beta if kl_weight is None else kl_weight
        mu, logvar = self.encoder_forward(x, onehot)
        z0 = self.sampler.forward(mu, logvar, eps)
        z, logdet = self.flow_forward(z0)
        out, dec_logvar = self.decoder_forward(z, onehot)
        rec, dout, ddec_logvar = self.nll(x, out, dec_logvar)
        log_q0 = -0.5 * ((logvar + eps * eps).sum(axis=1) + L * LOG_2PI)
        log_pz = -0.5 * ((z * z).sum(axis=1) + L * LOG_2PI)
        kl = log_q0 - logdet - log_pz  # (N,)
        rec_mean, kl_mean = rec.mean(), kl.mean()
        stats = (rec_mean.astype(xp.float64) + w * kl_mean.astype(xp.float64), rec_mean, kl_mean)

        dout *= 1.0 / N
        if ddec_logvar is not None:
            ddec_logvar *= 1.0 / N
        dz = self.decoder_backward(dout, ddec_logvar)  # from log p(x|z_K)
        dz += (w / N) * z  # from -log p(z_K)
        dz0 = self.flow_backward(dz, xp.full(N, -w / N, dtype=z.dtype))  # from -sum_k log det_k
        dmu, dlogvar = self.sampler.backward(dz0)
        dlogvar -= 0.5 * w / N  # from log q_0(z_0|x), directly
        self.encoder_backward(dmu, dlogvar)
        return stats

    def log_weights(self, x: Array, eps: Array, onehot: Array | None = None) -> Array:
        """``log p(x|z_K) + log p(z_K) - log q_K(z_K|x)`` for ``z_0 = mu + sigma * eps``, ``eps`` (B, c, L); (B, c)."""
        B, c, L = eps.shape
        mu, logvar = self.encoder_forward(x, onehot)
        z0 = (mu[:, None, :] + self.xp.exp(0.5 * logvar)[:, None, :] * eps).reshape(B * c, L)
        z, logdet = self.flow_forward(z0)
        log_q0 = -0.5 * ((logvar[:, None, :] + eps * eps).sum(axis=2) + L * LOG_2PI)  # (B, c)
        return self.log_joint(x, z.reshape(B, c, L), onehot) - log_q0 + logdet.reshape(B, c)

    def elbo(self, x: Any, n_samples: int = 1, eps: Array | None = None, y: Any = None) -> Array:
        """Per-example ELBO in nats, shape (N,): both of its terms estimated from ``n_samples`` draws of the flow
        posterior (there is no closed-form KL), from ``eval_rng_``; ``eps`` (N, L) fixes the noise of one."""
        return self.sampled_elbo(x, n_samples, eps, y)

    def posterior_sample(self, x: Any, y: Any = None) -> Array:
        """One draw ``z_K ~ q_K(z|x)`` per row of ``x``, (N, L), from ``eval_rng_``."""
        x = self.checked_input(x)
        mu, logvar = self.encoder_forward(x, self.one_hot(y, x.shape[0]))
        eps = self.draw_normal(mu.shape, self.eval_rng_)
        return self.flow_forward(mu + self.xp.exp(0.5 * logvar) * eps)[0]


def check_flow_length(value: Any) -> int:
    """``value`` as a number of maps: a whole number from 0 to ``MAX_FLOW_LENGTH``."""
    length = check_positive("flow_length", value, integer=True, allow_zero=True)
    if length > MAX_FLOW_LENGTH:
        raise ValueError(f"flow_length={length}: more than the {MAX_FLOW_LENGTH} maps a FlowVAE may have; at most "
                         f"{MAX_FLOW_LENGTH} (each adds a pass over every sample)")
    return length


def flow_shapes(latent_dim: int, flow_length: int) -> dict[str, tuple[int, ...]]:
    """Name -> shape of each planar map's parameters, in order."""
    shapes: dict[str, tuple[int, ...]] = {}
    for k in range(flow_length):
        shapes.update({f"flow.{k}.u": (latent_dim,), f"flow.{k}.w": (latent_dim,), f"flow.{k}.b": (1,)})
    return shapes
