"""Semi-supervised learning with the M2 model (Kingma, Rezende, Mohamed & Welling, 2014), derived by hand.

The generative model has a class ``y`` besides the code ``z``: ``p(y) = 1/C``, ``p(z) = N(0, I)`` and
``p(x | y, z)``, the conditional VAE's decoder. Inference has a classifier ``q(y|x)`` (a softmax network of
its own) and the conditional encoder ``q(z | x, y)``. Where the label is known, the bound is the conditional
VAE's plus the prior's ``log p(y)``::

    log p(x, y) >= L(x, y) = E_q(z|x,y)[ log p(x|y,z) ] - KL(q(z|x,y) || p(z)) + log p(y)

Where it is missing, ``y`` is a latent variable too, summed out exactly over the ``C`` classes::

    log p(x) >= U(x) = sum_y q(y|x) L(x, y) + H(q(y|x)),     H(q) = -sum_y q(y|x) log q(y|x)

The classifier gets gradient from ``U`` alone, which does not need it to be right, so the labelled examples
add ``alpha`` times the classification loss ``-log q(y|x)``. Training minimises, per example,
``-L(x, y) - alpha log q(y|x)`` (labelled) or ``-U(x)`` (unlabelled). Its derivatives:

- through ``L``: the conditional VAE's, each class's row weighted by ``q(y|x)`` (unlabelled) or 1 for the
  known label; the reparameterised ``z = mu + sigma * eps`` as always (``dz/dmu = 1``, ``dz/dsigma = eps``);
- to the classifier's logits ``a`` (``q = softmax(a)``), for an unlabelled example: ``dU/dq_y = L(x, y) -
  log q_y - 1`` and, through the softmax, ``dU/da_k = q_k (g_k - sum_y q_y g_y)`` with ``g = dU/dq`` (the
  ``-1`` cancels: the softmax's outputs sum to 1); for a labelled one, ``d(-log q_y)/da = q - onehot(y)``.

Labels are given as usual (``y``, integers in ``0..C-1``), with ``-1`` for a missing label; ``y=None``
means every label is missing. :meth:`SemiSupervisedVAE.classify` gives ``q(y|x)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .backend import Array
from .layers import ACTIVATIONS, Dense
from .losses import gaussian_log_density, kl_per_dimension
from .model import VAE
from .validation import check_positive, check_samples

MISSING = -1  # the label of an example whose class is not known


class SemiSupervisedVAE(VAE):
    """The M2 model: a conditional VAE of ``p(x|y, z)`` whose label is a latent variable where it is missing.

    ``encode``, ``decode`` and ``sample`` take known labels, as a conditional VAE's do; ``fit``, ``elbo``,
    ``loss_and_grads`` and ``log_likelihood`` take labels with ``-1`` where one is missing: their figures are
    then of ``log p(x)`` for those examples and of ``log p(x, y)`` for the labelled ones. Every step decodes
    each example once per class (the labelled ones too, with weight 0 on the other classes: simple, and the
    labelled examples are few), so a step costs about ``C`` times a VAE's. The classifier ``q(y|x)`` has the
    encoder's hidden sizes and activation; the other settings are the VAE's.

    Parameters
    ----------
    input_dim, n_classes : int
        As for :class:`~minivae.model.VAE`; ``n_classes`` is required (``C`` classes).
    alpha : float
        The weight of the labelled examples' classification loss ``-log q(y|x)``, >= 0 (Kingma et al. used
        ``0.1 N`` for ``N`` training examples, in a loss summed over the data set; this loss is a batch mean).
    """

    family = "semi_supervised"
    elbo_only = "its step sums the class out of each example's bound, with one sample of z per class"

    def __init__(self, input_dim: int, n_classes: int | None = None, alpha: float = 1.0, **options: Any) -> None:
        if n_classes is None:
            raise ValueError("a SemiSupervisedVAE needs n_classes, the number of classes its labels come from")
        self.alpha = check_positive("alpha", alpha, allow_zero=True)
        super().__init__(input_dim, n_classes=n_classes, **options)

    @classmethod
    def family_shapes(cls, config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {}
        sizes = (config["input_dim"], *config["hidden_dims"])
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            shapes.update({f"classifier.{i}.W": (a, b), f"classifier.{i}.b": (b,)})
        n_classes = config["n_classes"]
        if n_classes is None:
            raise ValueError("its configuration has no n_classes, which a semi-supervised model needs")
        return {**shapes, "classifier.out.W": (sizes[-1], n_classes), "classifier.out.b": (n_classes,)}

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "family": self.family, "alpha": self.alpha}

    @property
    def classes(self) -> int:
        """``C``, the number of classes (``n_classes``, which this family always has)."""
        return int(self.n_classes or 0)

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        own = {"input_dim": self.input_dim, "hidden_dims": self.hidden_dims, "n_classes": self.n_classes}
        return {**super().parameter_shapes(), **self.family_shapes(own)}

    def bind(self, flat: Array) -> None:
        super().bind(flat)
        p, g = self.params, self.grads
        dense = lambda name: Dense(p[name + ".W"], p[name + ".b"], g[name + ".W"], g[name + ".b"])
        self._classifier = [(dense(f"classifier.{i}"), ACTIVATIONS[self.activation]()) for i in range(len(self.hidden_dims))]
        self._class_out = dense("classifier.out")

    def __repr__(self) -> str:
        return super().__repr__().replace("VAE(", f"SemiSupervisedVAE(alpha={self.alpha:g}, ", 1)

    # ------------------------------------------------------------------ labels, some missing
    def one_hot(self, y: Any, n: int, name: str = "y") -> Array:
        """Labels as one-hot rows (n, C), a missing label (``-1``) as a row of zeros; ``y=None``: all missing."""
        C = self.classes
        if y is None:
            return self.xp.zeros((n, C), dtype=self.dtype)
        labels = np.asarray(y)
        missing = (labels == MISSING) if labels.dtype.kind in "iuf" else np.zeros(labels.shape, dtype=bool)
        onehot = super().one_hot(np.where(missing, 0, labels), n, name)
        assert onehot is not None
        return onehot * self.xp.asarray(~np.broadcast_to(missing, (n,)), dtype=self.dtype)[:, None]

    def known_one_hot(self, y: Any, n: int, name: str = "y") -> Array:
        """:meth:`one_hot` for the methods that need every label: a missing one is refused."""
        if y is None or np.any(np.asarray(y) == MISSING):
            raise ValueError(f"{name} must hold every label here (integers in 0..{self.classes - 1}, no -1); "
                             f"use classify(x) for the classes of unlabelled examples")
        return self.one_hot(y, n, name)

    def encode(self, x: Any, y: Any = None) -> tuple[Array, Array]:
        """``q(z | x, y)``: ``(mu, logvar)`` (N, L), for known labels ``y``."""
        x = self.checked_input(x)
        return self.encoder_forward(x, self.known_one_hot(y, x.shape[0]))

    def decode(self, z: Any, y: Any = None) -> Array:
        z = self._latents(z)
        self.known_one_hot(y, z.shape[0])
        return super().decode(z, y)

    def sample(self, n: int, mean: bool = True, y: Any = None) -> Array:
        """``n`` draws of ``p(x|y)`` for known labels ``y`` (one for all, or ``n``); for ``p(x)``, draw the
        labels from ``p(y) = 1/C`` first."""
        self.known_one_hot(y, check_positive("n", n, integer=True))
        return super().sample(n, mean, y)

    # ------------------------------------------------------------------ the classifier q(y|x)
    def classifier_forward(self, x: Array) -> Array:
        """A checked batch ``x`` (N, D) -> the classifier's logits (N, C)."""
        h = x
        for dense, act in self._classifier:
            h = act.forward(dense.forward(h))
        return self._class_out.forward(h)

    def classifier_backward(self, dlogits: Array) -> None:
        """dL/dlogits (N, C) -> the classifier's gradients."""
        deep = bool(self._classifier)
        dh = self._class_out.backward(dlogits, need_dx=deep)
        for i in reversed(range(len(self._classifier))):
            dense, act = self._classifier[i]
            dh = dense.backward(act.backward(dh), need_dx=i > 0)

    def log_classes(self, x: Array) -> Array:
        """``log q(y|x)`` (N, C) of a checked batch: the log-softmax of the classifier's logits."""
        logits = self.classifier_forward(x)
        top = logits.max(axis=1, keepdims=True)
        return logits - top - self.xp.log(self.xp.exp(logits - top).sum(axis=1, keepdims=True))

    def classify(self, x: Any) -> Array:
        """``q(y|x)``, (N, C): the probability of each class for each row of ``x``."""
        return self.xp.exp(self.log_classes(self.checked_input(x)))

    # ------------------------------------------------------------------ the bound and its gradient
    def class_rows(self, x: Array, eps: Array) -> tuple[Array, Array, Array]:
        """Every example once per class: ``x`` (N C, D), the one-hot classes (N C, C) and the noise (N C, L);
        row ``n C + c`` is example ``n`` with class ``c``, and all of an example's rows share its noise."""
        xp, C = self.xp, self.classes
        N = x.shape[0]
        classes = xp.tile(xp.eye(C, dtype=self.dtype), (N, 1))
        return xp.repeat(x, C, axis=0), classes, xp.repeat(eps, C, axis=0)

    def forward_backward(self, x: Array, eps: Array, kl_weight: float | None = None, free_bits: float = 0.0,
                         onehot: Array | None = None) -> Array:
        """One pass over a checked batch; fills ``flat_grads`` and returns ``stats`` ``(loss, rec, kl)``.

        ``onehot`` (N, C) holds each labelled example's class and a row of zeros for each unlabelled one. The
        loss is the batch mean of ``-L(x, y) - alpha log q(y|x)`` and ``-U(x)`` (see the module), with the KL
        weighted by ``kl_weight``; ``rec`` and ``kl`` are their parts averaged with the same class weights.
        """
        xp, C = self.xp, self.classes
        N = x.shape[0]
        w = self.beta if kl_weight is None else kl_weight
        onehot = xp.zeros((N, C), dtype=x.dtype) if onehot is None else onehot
        known = onehot.sum(axis=1, keepdims=True) > 0  # (N, 1)
        log_q = self.log_classes(x)  # (N, C), log q(y|x)
        q = xp.exp(log_q)
        weight = xp.where(known, onehot, q)  # each class's share of an example's bound: 1 for a known label

        rows_x, rows_y, rows_eps = self.class_rows(x, eps)
        mu, logvar = self.encoder_forward(rows_x, rows_y)  # (N C, L)
        z = self.sampler.forward(mu, logvar, rows_eps)
        out, dec_logvar = self.decoder_forward(z, rows_y)
        rec, dout, ddec_logvar = self.nll(rows_x, out, dec_logvar)  # (N C,)
        kl_dims, dmu_kl, dlogvar_kl = kl_per_dimension(mu, logvar)
        kl = kl_dims.sum(axis=1)
        bound = (-(rec + w * kl)).reshape(N, C) - math.log(C)  # L(x, y) with the KL weighted, log p(y) = -log C
        entropy_term = (q * log_q).sum(axis=1)  # -H(q(y|x))
        classification = -(onehot * log_q).sum(axis=1)  # -log q(y|x) of a known label, 0 for a missing one
        per_example = -(weight * bound).sum(axis=1) + xp.where(known[:, 0], self.alpha * classification,
                                                                entropy_term)
        stats = (per_example.mean().astype(xp.float64), (weight * rec.reshape(N, C)).sum(axis=1).mean(),
                 (weight * kl.reshape(N, C)).sum(axis=1).mean())

        # the VAE part: every row's terms carry its class weight and the batch mean's 1/N
        g = (weight / N).reshape(N * C, 1)
        dout *= g
        if ddec_logvar is not None:
            ddec_logvar *= g
        dz = self.decoder_backward(dout, ddec_logvar)
        dmu, dlogvar = self.sampler.backward(dz)  # dz/dmu = 1, dz/dlogvar = eps sigma / 2
        self.encoder_backward(dmu + w * g * dmu_kl, dlogvar + w * g * dlogvar_kl)  # and the KL's own, directly
        # the classifier: an unlabelled example's -U through q = softmax(a), g_y = d(-U)/dq_y = -L(x, y) + log q_y
        # (+ 1, which cancels); a labelled one's alpha (-log q_y): alpha (q - onehot)
        grad_q = -bound + log_q
        unlabelled = q * (grad_q - (q * grad_q).sum(axis=1, keepdims=True))
        self.classifier_backward(xp.where(known, self.alpha * (q - onehot), unlabelled) / N)
        return stats

    def log_weights(self, x: Array, eps: Array, onehot: Array | None = None) -> Array:
        """Importance weights (B, c) of ``log p(x)`` (unlabelled rows of ``onehot``) or ``log p(x, y)``.

        For noise ``eps_j`` each class ``y`` has its own ``z = mu(x, y) + sigma(x, y) eps_j``, and
        ``w_j = sum_y p(y) p(x|y,z) p(z) / q(z|x,y)``: the class summed exactly, so ``E[w_j] = sum_y p(x, y) =
        p(x)``. A labelled row keeps its own class's term alone, whose mean is ``p(x, y)``.
        """
        xp, C = self.xp, self.classes
        B, c, L = eps.shape
        onehot = xp.zeros((B, C), dtype=x.dtype) if onehot is None else onehot
        classes = xp.tile(xp.eye(C, dtype=self.dtype), (B, 1))  # row b C + y is example b with class y
        rows_x = xp.repeat(x, C, axis=0)
        mu, logvar = self.encoder_forward(rows_x, classes)  # (B C, L)
        z = mu[:, None, :] + xp.exp(0.5 * logvar)[:, None, :] * xp.repeat(eps, C, axis=0)  # (B C, c, L)
        log_w = self.log_joint(rows_x, z, classes) - gaussian_log_density(z, mu[:, None, :], logvar[:, None, :])
        log_w = log_w.reshape(B, C, c) - math.log(C)  # + log p(y)
        top = log_w.max(axis=1, keepdims=True)
        summed = top[:, 0] + xp.log(xp.exp(log_w - top).sum(axis=1))  # log sum_y, (B, c)
        own = (onehot[:, :, None] * log_w).sum(axis=1)  # the known class's term
        return xp.where(onehot.sum(axis=1, keepdims=True) > 0, own, summed)

    def elbo(self, x: Any, n_samples: int = 1, eps: Array | None = None, y: Any = None) -> Array:
        """Per-example bound in nats, (N,): ``U(x)`` on ``log p(x)`` where the label is missing (``y`` None or
        ``-1``), ``L(x, y)`` on ``log p(x, y)`` where it is given; ``n_samples`` draws from ``eval_rng_``."""
        n_samples = check_samples("n_samples", n_samples)
        x = self.checked_input(x)
        N, C = x.shape[0], self.classes
        onehot = self.one_hot(y, N)
        known = onehot.sum(axis=1, keepdims=True) > 0
        log_q = self.log_classes(x)
        q = self.xp.exp(log_q)
        total = 0
        for s in range(n_samples):
            noise = self.checked_noise(eps if s == 0 else None, N, self.eval_rng_)
            rows_x, rows_y, rows_eps = self.class_rows(x, noise)
            mu, logvar = self.encoder_forward(rows_x, rows_y)
            z = self.sampler.forward(mu, logvar, rows_eps)
            rec = self.nll(rows_x, *self.decoder_forward(z, rows_y))[0]
            kl = kl_per_dimension(mu, logvar)[0].sum(axis=1)
            total = total + (-(rec + kl)).reshape(N, C) - math.log(C)
        bound = total / n_samples
        unlabelled = (q * (bound - log_q)).sum(axis=1)  # sum_y q (L - log q) = sum_y q L + H(q)
        return self.xp.where(known[:, 0], (onehot * bound).sum(axis=1), unlabelled)
