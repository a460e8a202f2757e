"""The variational autoencoder: encoder, reparameterised sample, decoder, ELBO and its gradient."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from types import ModuleType
from typing import Any, cast

import numpy as np

from .backend import Array, check_memory, elementwise, get_array_module, name_of, resolve, to_backend
from .layers import ACTIVATIONS, Dense, GaussianSample
from .likelihoods import NAMES as LIKELIHOODS
from .likelihoods import make as make_likelihood
from .losses import LOG_2PI, gaussian_log_density, kl_per_dimension
from .optim import Optimizer
from .validation import as_batch, check_choice, check_positive, check_samples, check_seed

DTYPES = ("float32", "float64")
DECODER_STD_RANGE = (1e-6, 1e6)  # beyond these, 1 / std^2 leaves the float range of the loss
MAX_TRIALS = 65535  # 16-bit pixels; past this a binomial's table of log C(n, k) outgrows any image
MAX_LEVELS = 65536


class VAE:
    """A variational autoencoder with dense layers and hand-written backprop.

    ``x -> encoder q(z|x) = N(mu, diag(sigma^2)) -> z = mu + sigma * eps -> decoder p(x|z)``.

    Parameters
    ----------
    input_dim : int
        Features per example ``D`` (64 for the 8x8 digits, 784 for MNIST).
    hidden_dims : tuple of int
        Hidden layer sizes of the encoder; the decoder uses them reversed.
        ``()`` makes both linear.
    latent_dim : int
        Size ``K`` of the latent code ``z``.
    activation : {"relu", "tanh"}
    likelihood : {"bernoulli", "binomial", "categorical", "beta_binomial", "continuous_bernoulli", "gaussian"}
        ``p(x|z)`` (see :mod:`minivae.likelihoods`): binary pixels; whole
        levels ``k = trials * x`` or ``k = (levels - 1) x`` as a binomial, a
        categorical over the levels or a beta-binomial; intensities in
        (0, 1); or a Gaussian (from the mean). Choose by the data: only then
        is the ELBO a bound on a log-probability of it.
    trials : int, binomial and beta_binomial only
        The number of trials ``n``: 16 for the bundled digits, 255 for 8-bit images.
    levels : int, categorical only
        The number of values a pixel takes: 17 for the bundled digits, 256 for 8-bit images.
    decoder_std : float or "learned"
        Gaussian only: a fixed standard deviation in ``DECODER_STD_RANGE``,
        or ``"learned"`` for a per-pixel log-variance head ``decoder.logvar``.
    beta : float
        Weight of the KL term (``beta = 1`` is the ELBO; other values give a beta-VAE).
    dtype : {"float32", "float64"}
    backend : {"numpy", "cupy", "auto"} or None
        ``None`` reads ``MINIVAE_BACKEND`` (default NumPy).
    seed : int or None
        Seeds the model's random generators; ``None`` draws a fresh seed, kept
        in ``seed`` so that the run can be repeated.
    n_classes : int or None
        A *conditional* VAE (Kingma et al. 2014; Sohn et al. 2015): a label
        ``y`` in ``0..n_classes-1``, one-hot, is appended to the encoder's
        input ``x`` and to the decoder's input ``z``, so the model is of
        ``p(x|y)``. Every method that reads ``x`` or ``z`` then takes ``y``.

    Attributes
    ----------
    params : dict
        Name -> array, in forward order (``encoder.0.W`` ... ``decoder.out.b``).
        All are views into one flat vector, so an optimiser updates them in one pass.
    grads : dict
        The same names -> their gradients, views into ``flat_grads``, which a backward pass fills.
    xp : module
        The array module (NumPy or CuPy) holding the parameters.
    rng_ : numpy.random.Generator
        Training's randomness: initial weights, shuffling, the noise of each
        step, dynamic binarisation. A seed fixes the whole training run.
    eval_rng_ : numpy.random.Generator
        Evaluation's randomness (``elbo``, ``sample``, ``log_likelihood``,
        validation during ``fit``), an independent stream, so evaluating a
        model never changes how it trains.
    history_ : list of dict
        One row per trained epoch (see :meth:`fit`).
    stopped_by_ : str or None
        The signal (``"SIGINT"``, ``"SIGTERM"``, ``"SIGHUP"``) that stopped the
        last call of :meth:`fit`, or None if it ran to the end.
    partial_epoch_ : dict or None
        Where an unfinished epoch stands (its order of examples, the next
        step, running totals), for :meth:`fit` to go on from; saved with the model.
    """

    family = "vae"  # the name minivae.families builds it by; each family's class sets its own
    elbo_only = ""  # a family that trains on its ELBO alone (no IWAE step, no free bits) says why here

    def __init__(self, input_dim: int, hidden_dims: int | Sequence[int] = (400,), latent_dim: int = 20,
                 activation: str = "relu", likelihood: str = "bernoulli", decoder_std: float | str = 1.0,
                 beta: float = 1.0, dtype: str = "float32", backend: str | None = None, seed: int | None = 0,
                 trials: int | None = None, n_classes: int | None = None, levels: int | None = None) -> None:
        # Every setting is checked and kept as a plain Python value, so a checkpoint can always be written.
        self.input_dim = check_positive("input_dim", input_dim, integer=True)
        sizes = (hidden_dims,) if isinstance(hidden_dims, (int, np.integer)) else hidden_dims
        if isinstance(sizes, str):
            raise ValueError(f"hidden_dims must be a sequence of integers like (400, 200); got {hidden_dims!r}")
        self.hidden_dims = tuple(check_positive("each hidden size", h, integer=True) for h in sizes)
        self.latent_dim = check_positive("latent_dim", latent_dim, integer=True)
        self.activation = check_choice("activation", activation, ("relu", "tanh"))
        self.likelihood = check_choice("likelihood", likelihood, LIKELIHOODS)
        self.decoder_std = _check_decoder_std(decoder_std)
        self.trials, self.levels = _check_grid(self.likelihood, trials, levels)
        if n_classes is not None:
            n_classes = check_positive("n_classes", n_classes, integer=True)
            if n_classes < 2:
                raise ValueError(f"a conditional model needs n_classes >= 2 labels; got {n_classes}")
        self.n_classes = n_classes
        self.likelihood_ = make_likelihood(self.likelihood, self.decoder_std, self.trials, self.levels)
        self.beta = check_positive("beta", beta, allow_zero=True)
        self.dtype = _check_dtype(dtype)
        self.seed = int(cast(int, np.random.SeedSequence().entropy)) if seed is None else check_seed(seed)
        self.rng_ = np.random.default_rng(self.seed)
        self.eval_rng_ = np.random.default_rng(np.random.SeedSequence(self.seed).spawn(1)[0])
        self.history_: list[dict[str, Any]] = []
        self.optimizer_: Optimizer | None = None
        self.partial_epoch_: dict[str, Any] | None = None
        self.stopped_by_: str | None = None
        shapes = self.parameter_shapes()
        _check_size(shapes, self.dtype)
        flat = self.initial_params(shapes)
        self.bind(resolve(backend).asarray(flat))

    # ------------------------------------------------------------------ structure
    @property
    def learned_variance(self) -> bool:
        return self.likelihood == "gaussian" and self.decoder_std == "learned"

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, as plain Python values."""
        return {
            "input_dim": self.input_dim, "hidden_dims": list(self.hidden_dims),
            "latent_dim": self.latent_dim, "activation": self.activation,
            "likelihood": self.likelihood, "decoder_std": self.decoder_std, "beta": self.beta,
            "dtype": self.dtype.name, "seed": self.seed, "trials": self.trials, "n_classes": self.n_classes,
            "levels": self.levels,
        }

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every parameter, in the order they lie in ``flat_params``."""
        return param_shapes(self.input_dim, self.hidden_dims, self.latent_dim, self.learned_variance, self.n_classes or 0,
                            self.likelihood_.outputs)

    @classmethod
    def family_shapes(cls, config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """Name -> shape of the parameters a family adds to the VAE's, from a checkpoint's ``config`` (its VAE part
        already checked), each of its own settings checked: none for the VAE. A checkpoint sizes its parameters
        with them before it builds anything."""
        return {}

    def initial_params(self, shapes: dict[str, tuple[int, ...]]) -> np.ndarray:
        """The starting parameter vector (on the host) for ``shapes``, drawn from ``rng_``."""
        return _init_params(shapes, self.rng_, self.dtype)

    def bind(self, flat: Array) -> None:
        """Make ``flat`` the parameter vector: slice it into per-layer views and build the layers."""
        xp = get_array_module(flat)
        self.xp = xp
        self.backend = name_of(xp)
        self.flat_params = flat
        self.flat_grads = xp.zeros_like(flat)
        self.params, self.grads = {}, {}
        start = 0
        for name, shape in self.parameter_shapes().items():
            stop = start + int(np.prod(shape))
            self.params[name] = flat[start:stop].reshape(shape)
            self.grads[name] = self.flat_grads[start:stop].reshape(shape)
            start = stop

        def dense(prefix):
            p, g = self.params, self.grads
            return Dense(p[prefix + ".W"], p[prefix + ".b"], g[prefix + ".W"], g[prefix + ".b"])

        act = ACTIVATIONS[self.activation]
        n = len(self.hidden_dims)
        self._encoder = [(dense(f"encoder.{i}"), act()) for i in range(n)]
        self._mu_head = dense("encoder.mu")
        self._logvar_head = dense("encoder.logvar")
        self.sampler = GaussianSample()
        self._decoder = [(dense(f"decoder.{i}"), act()) for i in range(n)]
        self._out = dense("decoder.out")
        self._dec_logvar = dense("decoder.logvar") if self.learned_variance else None

    def to(self, backend_name: str) -> VAE:
        """Move the model (parameters and optimiser state) to ``"numpy"`` or ``"cupy"``; returns self."""
        xp = resolve(backend_name)
        self.bind(to_backend(self.flat_params, xp))
        if self.optimizer_ is not None:
            self.optimizer_.to(xp)
        return self

    @property
    def noise_dim(self) -> int:
        """Standard normals per draw from the posterior: ``latent_dim`` (a family with more latent layers, more)."""
        return self.latent_dim

    @property
    def n_params(self) -> int:
        return int(self.flat_params.size)

    def __repr__(self):
        return (f"VAE(input_dim={self.input_dim}, hidden_dims={self.hidden_dims}, "
                f"latent_dim={self.latent_dim}, likelihood={self.likelihood!r}, "
                f"backend={self.backend!r}, params={self.n_params:,})")

    # ------------------------------------------------------------------ forward pieces
    # encoder_forward, decoder_forward, nll, forward_backward, iwae_forward_backward, draw_normal and host_normal
    # are the building blocks that the training loop and minivae.evaluate share. They take arrays already checked
    # (checked_input) and on the model's device, and check nothing themselves; the public methods below
    # (encode, decode, loss_and_grads, ...) check their inputs first.
    def encoder_forward(self, x: Array, onehot: Array | None = None) -> tuple[Array, Array]:
        """``x`` (N, D) (and a conditional model's one-hot labels (N, C)) -> ``mu``, ``logvar`` (N, K)."""
        h = x if onehot is None else self.xp.concatenate([x, onehot], axis=1)  # (N, D + C)
        for dense, act in self._encoder:
            h = act.forward(dense.forward(h))  # (N, H_i)
        return self._mu_head.forward(h), self._logvar_head.forward(h)

    def decoder_forward(self, z: Array, onehot: Array | None = None) -> tuple[Array, Array | None]:
        """``z`` (N, K) (and one-hot labels) -> decoder output (N, D * outputs) and the learned logvar (N, D) or None.

        The output is what the likelihood reads: a logit or mean per pixel,
        ``levels`` logits per pixel (categorical), or ``log alpha, log beta``
        per pixel (beta-binomial).
        """
        h = z if onehot is None else self.xp.concatenate([z, onehot], axis=1)  # (N, K + C)
        for dense, act in self._decoder:
            h = act.forward(dense.forward(h))  # (N, H_i)
        out = self._out.forward(h)
        logvar = None if self._dec_logvar is None else self._dec_logvar.forward(h)
        return out, logvar

    def nll(self, x: Array, out: Array, dec_logvar: Array | None) -> tuple[Array, Array, Array | None]:
        """``-log p(x|z)`` per example and its gradients w.r.t. the decoder's outputs."""
        return self.likelihood_.nll(x, out, dec_logvar)

    # ------------------------------------------------------------------ backward pieces
    def decoder_backward(self, dout: Array, ddec_logvar: Array | None) -> Array:
        """dL/d(decoder outputs) -> dL/dz, filling the decoder's gradients."""
        dh = self._out.backward(dout)
        if self._dec_logvar is not None:
            dh += self._dec_logvar.backward(ddec_logvar)  # both heads read the same h
        for dense, act in reversed(self._decoder):
            dh = dense.backward(act.backward(dh))
        return dh[:, :self.latent_dim]  # a conditional model's label inputs need no gradient

    def encoder_backward(self, dmu: Array, dlogvar: Array, need_dx: bool = False) -> Array | None:
        """dL/dmu, dL/dlogvar -> the encoder's gradients; with ``need_dx``, also returns dL/dx (N, D + C).

        Training a VAE never needs dL/dx; a prior built from the encoder's posteriors of learned inputs
        (:class:`minivae.priors.VampPriorVAE`) does.
        """
        deep = bool(self._encoder)
        dh = self._mu_head.backward(dmu, need_dx=deep or need_dx)
        dh_logvar = self._logvar_head.backward(dlogvar, need_dx=deep or need_dx)
        if dh is None or dh_logvar is None:
            return None
        dh += dh_logvar  # both heads read the same h
        for i in reversed(range(len(self._encoder))):
            dense, act = self._encoder[i]
            dh = dense.backward(act.backward(dh), need_dx=i > 0 or need_dx)
        return dh if need_dx else None

    def forward_backward(self, x: Array, eps: Array, kl_weight: float | None = None, free_bits: float = 0.0,
                         onehot: Array | None = None) -> Array:
        """One pass over a checked batch: fills ``flat_grads`` and returns ``stats``, three 0-d device arrays.

        ``stats`` is ``(loss, rec, kl)``: ``loss = mean_n [ -log p(x_n|z_n) ] +
        kl_weight * KL``, where KL is the batch mean of ``KL(q(z|x_n) || p(z))``;
        with ``free_bits > 0`` each latent dimension's batch-mean KL counts as
        at least ``free_bits`` nats (and passes no gradient while below that
        floor). ``rec`` and ``kl`` are the plain batch means, for reporting.
        They stay on the device, so that a training step can read them together
        with its other checks in one transfer (on a GPU, one synchronisation).
        ``loss`` is computed in float64, ``rec`` and ``kl`` in the model's dtype.
        """
        xp = self.xp
        N = x.shape[0]
        w = self.beta if kl_weight is None else kl_weight

        # forward: x -> (mu, logvar) -> z -> p(x|z)
        mu, logvar = self.encoder_forward(x, onehot)  # (N, K) each
        z = self.sampler.forward(mu, logvar, eps)  # (N, K)
        out, dec_logvar = self.decoder_forward(z, onehot)  # (N, D)
        rec, dout, ddec_logvar = self.nll(x, out, dec_logvar)  # (N,), (N, D)
        kl_dims, dmu_kl, dlogvar_kl = kl_per_dimension(mu, logvar)  # (N, K) each
        kl_mean = kl_dims.sum(axis=1).mean()
        if free_bits > 0:
            kl_batch = kl_dims.mean(axis=0)  # (K,) batch-mean KL per dimension
            above = kl_batch > free_bits  # below the floor: constant, no gradient
            kl_term = xp.maximum(kl_batch, free_bits).sum()
            dmu_kl *= above
            dlogvar_kl *= above
        else:
            kl_term = kl_mean
        rec_mean = rec.mean()
        # the loss in float64 from the parts, so that it is exactly rec + w * kl_term once read back
        stats = (rec_mean.astype(xp.float64) + w * kl_term.astype(xp.float64), rec_mean, kl_mean)

        # backward: every term is a batch mean, so each per-example gradient carries 1/N
        dout *= 1.0 / N
        if ddec_logvar is not None:
            ddec_logvar *= 1.0 / N
        dz = self.decoder_backward(dout, ddec_logvar)  # (N, K)
        dmu, dlogvar = self.sampler.backward(dz)  # through z = mu + sigma * eps
        dmu, dlogvar = plus_kl_gradient(dmu, dlogvar, dmu_kl, dlogvar_kl, w / N)
        self.encoder_backward(dmu, dlogvar)
        return stats

    def iwae_forward_backward(self, x: Array, eps: Array, onehot: Array | None = None) -> Array:
        """The K-sample importance-weighted bound (Burda et al., 2016) over a checked batch; fills ``flat_grads``.

        ``eps`` is (K, N, L). Returns ``stats`` as :meth:`forward_backward` does,
        three 0-d device arrays ``(loss, rec, kl)``: ``loss`` is minus the
        batch mean of ``log (1/K) sum_k w_k`` with
        ``log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x)``; ``rec`` and ``kl``
        are the sample means of ``-log p(x|z_k)`` and ``log q(z_k|x) - log p(z_k)``,
        for reporting. At K = 1 the loss is the ELBO with its KL estimated by
        the same sample (in expectation, the ELBO with the exact KL).

        Notes
        -----
        ``d/dtheta log (1/K) sum_k w_k = sum_k wt_k d/dtheta log w_k`` with the
        normalised weights ``wt_k = w_k / sum_j w_j``: each sample's ELBO-like
        gradient, weighted by how well it explains ``x``. Per sample, with
        ``z = mu + sigma * eps``:

        - ``-log p(z) = (z^2 + log 2 pi) / 2`` gives ``dz += z``;
        - ``log q(z|x) = -(logvar + eps^2 + log 2 pi) / 2`` (as ``(z - mu) / sigma = eps``)
          depends on ``mu`` not at all and on ``logvar`` directly with ``-1/2``.
        """
        xp = self.xp
        K, N, L = eps.shape
        mu, logvar = self.encoder_forward(x, onehot)  # (N, L) each
        z = self.sampler.forward(mu[None], logvar[None], eps)  # (K, N, L)
        labels = None if onehot is None else xp.concatenate([onehot] * K)
        out, dec_logvar = self.decoder_forward(z.reshape(K * N, L), labels)  # row k N + n is example n
        rec, dout, ddec_logvar = self.nll(xp.concatenate([x] * K), out, dec_logvar)  # (K N,), (K N, D)
        rec = rec.reshape(K, N)
        log_pz = -0.5 * ((z * z).sum(axis=2) + L * LOG_2PI)  # (K, N)
        log_qz = -0.5 * ((logvar[None] + eps * eps).sum(axis=2) + L * LOG_2PI)  # (K, N)
        log_w = -rec + log_pz - log_qz
        m = log_w.max(axis=0)  # (N,) shift for the log-sum-exp
        w = xp.exp(log_w - m)
        total = w.sum(axis=0)
        bound = m + xp.log(total) - math.log(K)  # log (1/K) sum_k w_k, (N,)
        stats = (-bound.mean(), rec.mean(), (log_qz - log_pz).mean())

        # backward: d loss / d(-log w_kn) = wt_kn / N, the normalised weight and the batch mean
        g = w / total / N  # (K, N)
        gz = g.reshape(K * N, 1)
        dout *= gz
        if ddec_logvar is not None:
            ddec_logvar *= gz
        dz = self.decoder_backward(dout, ddec_logvar).reshape(K, N, L)
        dz += g[:, :, None] * z  # d(-log p(z))/dz = z
        dmu, dlogvar = self.sampler.backward(dz)  # dz/dmu = 1, dz/dlogvar = eps sigma / 2
        dlogvar -= 0.5 * g[:, :, None]  # d(log q)/dlogvar = -1/2, directly
        self.encoder_backward(dmu.sum(axis=0), dlogvar.sum(axis=0))  # the K samples share one encoder pass
        return stats

    def log_weights(self, x: Array, eps: Array, onehot: Array | None = None) -> Array:
        """``log p(x|z) + log p(z) - log q(z|x)`` for ``z = mu + sigma * eps``, ``eps`` (B, c, L): (B, c).

        The importance weights of :func:`minivae.evaluate.log_likelihood`, ``c`` samples for each of the ``B``
        examples of a checked batch ``x``.
        """
        mu, logvar = self.encoder_forward(x, onehot)  # (B, L)
        z = mu[:, None, :] + self.xp.exp(0.5 * logvar)[:, None, :] * eps  # (B, c, L)
        return self.log_joint(x, z, onehot) - gaussian_log_density(z, mu[:, None, :], logvar[:, None, :])

    def log_joint(self, x: Array, z: Array, onehot: Array | None = None) -> Array:
        """``log p(x|z) + log p(z)`` for ``c`` latent points ``z`` (B, c, L) of each of the ``B`` examples of ``x``:
        (B, c), the part of every importance weight that does not depend on the posterior."""
        xp = self.xp
        B, c, L = z.shape
        labels = None if onehot is None else xp.repeat(onehot, c, axis=0)  # row b*c + j is example b
        out, dec_logvar = self.decoder_forward(z.reshape(B * c, L), labels)
        log_px_z = -self.nll(xp.repeat(x, c, axis=0), out, dec_logvar)[0].reshape(B, c)
        return log_px_z + self.log_prior(z)

    def log_prior(self, z: Array) -> Array:
        """``log p(z)`` of latent points ``z`` (..., L), one per row: the standard normal's, ``-(z^2 + log 2 pi) / 2``
        summed over the dimensions. A family with a learned prior (:mod:`minivae.priors`) overrides it."""
        return -0.5 * ((z * z).sum(axis=-1) + z.shape[-1] * LOG_2PI)

    def prior_sample(self, n: int, rng: np.random.Generator | None = None) -> Array:
        """``n`` draws ``z ~ p(z)`` (n, L) on the model's device, from ``rng`` (default ``rng_``): standard normal."""
        return self.draw_normal((n, self.latent_dim), rng)

    # ------------------------------------------------------------------ checked inputs
    def checked_input(self, x: Any, name: str = "x") -> Array:
        """``x`` as an (N, D) array on the model's device and in its dtype, after checking it fits the likelihood."""
        a = as_batch(x, self.xp, self.dtype, self.input_dim, name=name, unit_interval=self.likelihood_.unit_interval,
                     what=f"the {self.likelihood_.title} likelihood", rescale=self.likelihood_.rescale)
        self.likelihood_.check(a, name)
        return a

    def one_hot(self, y: Any, n: int, name: str = "y") -> Array | None:
        """Check labels for ``n`` examples and return them one-hot, (n, C) on the model's device; None if unconditional.

        ``y`` is a sequence of ``n`` integers in ``0..n_classes-1``, or one integer for all ``n``.
        """
        if self.n_classes is None:
            if y is not None:
                raise ValueError(f"{name} is a conditional model's labels; this model has no n_classes")
            return None
        if y is None:
            raise ValueError(f"this model is conditional on {self.n_classes} classes: pass {name}, the labels")
        if isinstance(y, np.ma.MaskedArray) and np.ma.is_masked(y):
            raise ValueError(f"{name} is a masked array with {int(np.ma.count_masked(y))} masked labels, and a model "
                             "cannot honour its mask; drop those examples (or fill the labels) first")
        labels = np.asarray(y)
        if labels.ndim == 0:
            labels = np.full(n, labels)
        ok = labels.dtype.kind in "iu" or (labels.dtype.kind == "f" and np.all(np.isfinite(labels))
                                           and np.array_equal(labels, np.round(labels)))
        if labels.shape != (n,) or not ok:
            raise ValueError(f"{name} must be {n} whole-number labels in 0..{self.n_classes - 1} (or one for all); "
                             f"got {labels.dtype} of shape {labels.shape}")
        if n and not 0 <= labels.min() <= labels.max() < self.n_classes:
            raise ValueError(f"{name} must be labels in 0..{self.n_classes - 1}, this model's classes; "
                             f"got labels from {labels.min()} to {labels.max()}")
        onehot = np.zeros((n, self.n_classes), dtype=self.dtype)  # n x C, never a C x C identity
        onehot[np.arange(n), labels.astype(np.int64)] = 1
        return self.xp.asarray(onehot)

    def _latents(self, z, name="z"):
        return as_batch(z, self.xp, self.dtype, self.latent_dim, name=name)

    def checked_noise(self, eps: Any, n: int, rng: np.random.Generator | None = None) -> Array:
        """Check an injected noise array, or draw ``eps ~ N(0, I)`` of shape (n, ``noise_dim``) from ``rng``
        (default ``rng_``)."""
        if eps is None:
            return self.draw_normal((n, self.noise_dim), rng)
        eps = as_batch(eps, self.xp, self.dtype, self.noise_dim, name="eps")
        if eps.shape[0] != n:
            raise ValueError(f"eps has {eps.shape[0]} rows but x has {n}; pass eps of shape ({n}, {self.noise_dim})")
        return eps

    def draw_normal(self, shape: tuple[int, ...], rng: np.random.Generator | None = None) -> Array:
        """Standard normal noise of ``shape`` on the model's device, from ``rng`` (default: training's ``rng_``).

        It is drawn on the host from the seeded generator and then moved, so
        NumPy and CuPy runs with the same seed see the same ``eps``.
        """
        return self.xp.asarray(self.host_normal(shape, rng))

    def host_normal(self, shape: tuple[int, ...], rng: np.random.Generator | None = None) -> np.ndarray:
        """:meth:`draw_normal`'s draw, left on the host as a NumPy array (``minivae.speed.noise`` draws it ahead)."""
        rng = self.rng_ if rng is None else rng
        return rng.standard_normal(shape, dtype=self.dtype)

    # ------------------------------------------------------------------ public API
    def loss_and_grads(self, x: Array, eps: Array | None = None, kl_weight: float | None = None, free_bits: float = 0.0,
                       objective: str = "elbo", n_samples: int = 1, y: Any = None) -> tuple[float, dict[str, Array]]:
        """The training loss and its gradient with respect to every parameter.

        Parameters
        ----------
        x : (N, D) array
        eps : (N, K) array, optional
            Freezes the noise of ``z = mu + sigma * eps`` (for gradient checks);
            drawn from the model's generator when omitted. For ``"iwae"``,
            ``(n_samples, N, K)``.
        kl_weight : float, optional
            Weight of the KL term, a finite number >= 0 (default ``beta``;
            KL warm-up lowers it).
        free_bits : float
            Per-dimension floor on the batch-mean KL, >= 0 (see :meth:`fit`).
        objective : {"elbo", "iwae"}
            ``"iwae"``: minus the ``n_samples``-sample importance-weighted bound
            (Burda et al., 2016), tighter than the ELBO as ``n_samples`` grows;
            ``kl_weight``, ``free_bits`` and ``beta != 1`` do not apply to it.
        n_samples : int
            Samples of ``z`` per example for ``"iwae"``.
        y : (N,) labels, for a conditional model (see ``n_classes``).

        Returns
        -------
        loss : float
            Batch mean of the negative ELBO in nats, KL weighted by ``beta``
            (or of minus the importance-weighted bound).
        grads : dict
            Same keys and shapes as ``params``; fresh copies.
        """
        if kl_weight is not None:
            kl_weight = check_positive("kl_weight", kl_weight, allow_zero=True)
        free_bits = check_positive("free_bits", free_bits, allow_zero=True)
        objective, K = self.check_objective(objective, n_samples, kl_weight=kl_weight, free_bits=free_bits)
        x = self.checked_input(x)
        onehot = self.one_hot(y, x.shape[0])
        if objective == "iwae":
            stats = self.iwae_forward_backward(x, self._samples_eps(eps, K, x.shape[0]), onehot)
        else:
            stats = self.forward_backward(x, self.checked_noise(eps, x.shape[0]), kl_weight, free_bits, onehot)
        return float(stats[0]), {name: g.copy() for name, g in self.grads.items()}

    def check_objective(self, objective: str, n_samples: int, kl_weight: float | None = None, free_bits: float = 0.0,
                        warmup_epochs: int = 0) -> tuple[str, int]:
        """Check a training objective and its options; returns ``(objective, n_samples)``, the name in lower case."""
        objective = check_choice("objective", objective, ("elbo", "iwae"))
        K = check_positive("n_samples", n_samples, integer=True)
        if self.elbo_only and (objective != "elbo" or free_bits):
            raise ValueError(f"a {type(self).__name__} trains on the ELBO alone: objective='elbo' and free_bits=0 "
                             f"({self.elbo_only})")
        if objective == "elbo" and K != 1:
            raise ValueError(f"n_samples={K} is the importance-weighted bound's; pass objective='iwae' with it")
        if objective == "iwae":
            if self.beta != 1:
                raise ValueError(f"the importance-weighted bound has no KL term for beta={self.beta} to weight; "
                                 "train it with beta=1")
            if kl_weight is not None or free_bits or warmup_epochs:
                raise ValueError("KL warm-up, kl_weight and free bits act on the ELBO's KL term; "
                                 "the importance-weighted bound has none, so use them with objective='elbo'")
        return objective, K

    def _samples_eps(self, eps, K, n):
        """Check injected noise of shape (K, n, L), or draw it from ``rng_``."""
        if eps is None:
            return self.draw_normal((K, n, self.noise_dim))
        eps = self.xp.asarray(eps, dtype=self.dtype)
        if eps.shape != (K, n, self.noise_dim) or not bool(self.xp.isfinite(eps).all()):
            raise ValueError(f"eps for the {K}-sample bound must be finite, of shape ({K}, {n}, {self.noise_dim}); "
                             f"got shape {eps.shape}")
        return eps

    def encode(self, x: Any, y: Any = None) -> tuple[Array, Array]:
        """The posterior ``q(z|x)`` (``q(z|x, y)`` for a conditional model): ``(mu, logvar)``, each (N, K)."""
        x = self.checked_input(x)
        return self.encoder_forward(x, self.one_hot(y, x.shape[0]))

    def decode(self, z: Any, y: Any = None) -> Array:
        """The mean ``E[x|z]`` of ``p(x|z)`` (or ``p(x|z, y)``), (N, D): pixel probabilities for the Bernoulli, and so on."""
        z = self._latents(z)
        out, logvar = self.decoder_forward(z, self.one_hot(y, z.shape[0]))
        return self.likelihood_.mean(out, logvar)

    def reconstruct(self, x: Any, y: Any = None) -> Array:
        """Decode the posterior mean of each input: ``decode(encode(x)[0])``."""
        mu, _ = self.encode(x, y)
        return self.decode(mu, y)

    def sample(self, n: int, mean: bool = True, y: Any = None) -> Array:
        """``n`` draws from the model, (n, D): ``z ~ p(z)`` (``N(0, I)``), then ``E[x|z]`` (``mean=True``) or ``x ~ p(x|z)``.

        The noise comes from ``eval_rng_``. Images are usually shown as means:
        a draw adds the likelihood's pixel noise. A conditional model draws
        from ``p(x|y)``: ``y`` is one label for all, or ``n`` labels.
        """
        n = check_positive("n", n, integer=True)
        check_memory(n * self.input_dim * self.likelihood_.outputs * np.dtype(self.dtype).itemsize, self.xp,
                     f"{n:,} samples", "draw them in smaller batches")
        onehot = self.one_hot(y, n)
        z = self.prior_sample(n, self.eval_rng_)
        out, logvar = self.decoder_forward(z, onehot)
        if mean:
            return self.likelihood_.mean(out, logvar)
        return self.likelihood_.sample(out, logvar, self.eval_rng_)

    def elbo(self, x: Any, n_samples: int = 1, eps: Array | None = None, y: Any = None) -> Array:
        """Per-example ELBO ``E_q[log p(x|z)] - KL(q(z|x) || p(z))`` in nats, shape (N,).

        The expectation is estimated with ``n_samples`` reparameterised draws
        from ``eval_rng_`` (the KL is exact). ``beta`` does not enter: this is
        the true bound on ``log p(x)``. ``eps`` of shape (N, K) fixes the noise
        for one sample. A conditional model bounds ``log p(x|y)``.
        """
        n_samples = check_samples("n_samples", n_samples)
        x = self.checked_input(x)
        onehot = self.one_hot(y, x.shape[0])
        mu, logvar = self.encoder_forward(x, onehot)
        kl = kl_per_dimension(mu, logvar)[0].sum(axis=1)
        rec = 0
        for s in range(n_samples):
            z = self.sampler.forward(mu, logvar, self.checked_noise(eps if s == 0 else None, x.shape[0], self.eval_rng_))
            rec = rec + self.nll(x, *self.decoder_forward(z, onehot))[0]
        return -(rec / n_samples) - kl

    def sampled_elbo(self, x: Any, n_samples: int = 1, eps: Array | None = None, y: Any = None) -> Array:
        """Per-example ELBO in nats, (N,), with both of its terms estimated: the mean of ``n_samples`` one-sample
        importance weights ``log p(x, z) - log q(z|x)`` (:meth:`log_weights`), from ``eval_rng_``; ``eps``
        (N, L) fixes the noise of the first. The ELBO of a family whose KL has no closed form."""
        n_samples = check_samples("n_samples", n_samples)
        x = self.checked_input(x)
        onehot = self.one_hot(y, x.shape[0])
        total = 0
        for s in range(n_samples):
            noise = self.checked_noise(eps if s == 0 else None, x.shape[0], self.eval_rng_)
            total = total + self.log_weights(x, noise[:, None, :], onehot)[:, 0]
        return total / n_samples

    def log_likelihood(self, x: Any, n_samples: int = 1000, y: Any = None,
                       ess: bool = False) -> Array | tuple[Array, np.ndarray]:
        """Importance-weighted estimate of ``log p(x)`` (``log p(x|y)``) per example (see :func:`minivae.evaluate.log_likelihood`).

        ``ess=True`` returns ``(log_p, ess)``, with each example's effective sample size.
        """
        from .evaluate import log_likelihood
        return log_likelihood(self, x, n_samples, y=y, ess=ess)

    def fit(self, x: Any, epochs: int = 10, *, batch_size: int = 128, lr: float = 1e-3, optimizer: str = "adam",
            validation: Any = None, progress: bool = True, binarize: str | None = None, warmup_epochs: int = 0,
            free_bits: float = 0.0, eval_batch_size: int = 1000, objective: str = "elbo", n_samples: int = 1,
            y: Any = None) -> VAE:
        """Train on ``x`` (N, D) with minibatch Adam or SGD; returns ``self``.

        The parameters are those of :func:`minivae.training.fit`, which documents each.
        """
        from .training import fit
        return fit(self, x, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, validation=validation,
                   progress=progress, binarize=binarize, warmup_epochs=warmup_epochs, free_bits=free_bits,
                   eval_batch_size=eval_batch_size, objective=objective, n_samples=n_samples, y=y)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a checkpoint (see :func:`minivae.checkpoint.save`)."""
        from .checkpoint import save
        save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], backend: str | None = None) -> VAE:
        """Read a checkpoint onto a backend (see :func:`minivae.checkpoint.load`)."""
        from .checkpoint import load
        return load(path, backend=backend)


@elementwise
def plus_kl_gradient(xp: ModuleType, dmu: Array, dlogvar: Array, dmu_kl: Array, dlogvar_kl: Array,
                     scale: float) -> tuple[Array, Array]:
    """The sampler's gradients plus ``scale`` times the KL's: the KL term also depends on ``mu`` and ``logvar`` directly.

    ``scale`` is the KL's weight over the batch size, since the loss is a batch mean. One kernel on CuPy.
    """
    return dmu + scale * dmu_kl, dlogvar + scale * dlogvar_kl


def param_shapes(input_dim: int, hidden_dims: Sequence[int], latent_dim: int, learned_variance: bool = False,
                 n_classes: int = 0, outputs: int = 1) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every parameter of a VAE with this structure, in forward order.

    The encoder is ``input_dim -> hidden_dims... -> (mu, logvar)``; the decoder
    mirrors it, ending in ``outputs`` numbers per pixel (``decoder.out``), with
    a second output head ``decoder.logvar`` when the Gaussian's variance is
    learned. A conditional model's first encoder and decoder layers read
    ``n_classes`` more inputs, the one-hot label.
    """
    shapes: dict[str, tuple[int, ...]] = {}

    def dense(prefix, fan_in, fan_out):
        shapes[f"{prefix}.W"] = (fan_in, fan_out)
        shapes[f"{prefix}.b"] = (fan_out,)

    enc = (input_dim + n_classes, *hidden_dims)
    for i, (a, b) in enumerate(zip(enc[:-1], enc[1:])):
        dense(f"encoder.{i}", a, b)
    dense("encoder.mu", enc[-1], latent_dim)
    dense("encoder.logvar", enc[-1], latent_dim)
    dec = (latent_dim + n_classes, *reversed(hidden_dims))
    for i, (a, b) in enumerate(zip(dec[:-1], dec[1:])):
        dense(f"decoder.{i}", a, b)
    dense("decoder.out", dec[-1], input_dim * outputs)
    if learned_variance:
        dense("decoder.logvar", dec[-1], input_dim)
    return shapes


def _check_grid(likelihood, trials, levels):
    """``(trials, levels)`` checked for the likelihood that takes each (the other must be None)."""
    takes_trials = likelihood in ("binomial", "beta_binomial")
    if takes_trials and trials is None:
        raise ValueError(f"likelihood={likelihood!r} needs trials=n, the number of trials per pixel "
                         "(16 for the bundled digits, 255 for 8-bit images)")
    if not takes_trials and trials is not None:
        raise ValueError(f"trials is the binomial and beta-binomial likelihoods'; this model's likelihood is "
                         f"{likelihood!r}" + (" (it takes levels=n + 1)" if likelihood == "categorical" else ""))
    if likelihood == "categorical":
        if levels is None:
            raise ValueError("likelihood='categorical' needs levels, the number of values a pixel takes "
                             "(17 for the bundled digits, 256 for 8-bit images)")
        levels = check_positive("levels", levels, integer=True)
        if not 2 <= levels <= MAX_LEVELS:
            raise ValueError(f"levels must be from 2 to {MAX_LEVELS} (the values a pixel takes); got {levels}")
    elif levels is not None:
        raise ValueError(f"levels is the categorical likelihood's; this model's likelihood is {likelihood!r}")
    if trials is not None:
        trials = check_positive("trials", trials, integer=True)
        if trials > MAX_TRIALS:
            raise ValueError(f"trials must be at most {MAX_TRIALS:,} (the likelihood's tables grow with it); "
                             f"got {trials:,}")
    return trials, levels


def _check_decoder_std(std):
    if isinstance(std, str) and std == "learned":
        return std
    lo, hi = DECODER_STD_RANGE
    try:
        value = check_positive("decoder_std", std)
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        raise ValueError(f"decoder_std must be 'learned' or a number from {lo:g} to {hi:g}; got {std!r}")
    return value


def _check_size(shapes, dtype):
    """Refuse, before allocating, a model whose training would not fit in this machine's memory."""
    n = sum(math.prod(shape) for shape in shapes.values())
    # the larger of training's parameters, gradients and Adam's two moments, and the initial
    # weights' float64 draw (the parts and their concatenation) with the copy in the model's dtype
    need = n * max(4 * dtype.itemsize, 16 + dtype.itemsize)
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): let the allocator decide
        return
    if need > have:
        raise ValueError(f"this model has {_count(n)} parameters and needs {_count(need >> 30)} GiB to train, "
                         f"more than this machine's {have / 2**30:.1f} GiB of memory; choose smaller "
                         "hidden_dims, input_dim or latent_dim")


def _count(n):
    """A count for a message: ``1,234,567``, or ``about 10^400`` past the float range."""
    return f"{n:,}" if n < 10**15 else f"about 10^{len(str(n)) - 1}"


def _check_dtype(dtype):
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = dtype
    return np.dtype(check_choice("dtype", name, DTYPES))


def _init_params(shapes, rng, dtype):
    """One flat vector: ``W`` and ``b`` uniform in ``+-1/sqrt(fan_in)`` (PyTorch's ``nn.Linear`` default)."""
    parts = []
    for name, shape in shapes.items():
        fan_in = shape[0] if name.endswith(".W") else shapes[name[:-2] + ".W"][0]
        bound = 1.0 / np.sqrt(fan_in)
        parts.append(rng.uniform(-bound, bound, size=int(np.prod(shape))))
    return np.concatenate(parts).astype(dtype)

