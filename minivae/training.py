"""The training loop: minibatches, the optimiser step, progress, history, and safe stopping."""

import math
import time

import numpy as np
from tqdm.auto import tqdm

from .evaluate import latent_diagnostics
from .optim import OPTIMIZERS
from .validation import check_choice, check_positive


class DivergedError(FloatingPointError):
    """The loss or its gradient stopped being finite; the model keeps its last good parameters."""


def fit(model, x, epochs=10, batch_size=128, lr=1e-3, optimizer="adam", validation=None,
        progress=True, binarize=None, warmup_epochs=0, free_bits=0.0, eval_batch_size=1000):
    """Train ``model`` on ``x`` by minibatch gradient descent on the negative ELBO; returns ``model``.

    Parameters
    ----------
    x : (N, D) array
        Training data (pixel intensities in [0, 1] for a Bernoulli model).
    epochs, batch_size : int
    lr : float
    optimizer : {"adam", "sgd"}
        Its state is kept on the model (``model.optimizer_``), so calling ``fit``
        again, or after :meth:`VAE.load`, continues exactly where training stopped.
    validation : (M, D) array, optional
        Its mean ELBO is recorded after every epoch.
    progress : bool
        Show a progress bar (a widget in notebooks) with the running loss.
    binarize : None or "dynamic"
        ``"dynamic"``: every time an example is used, its pixels are drawn
        afresh as ``Bernoulli(x)``.
    warmup_epochs : int
        KL warm-up: the KL weight rises linearly from ``beta / warmup_epochs``
        to ``beta`` over the first ``warmup_epochs`` epochs.
    free_bits : float
        Per latent dimension, a floor (in nats) on the batch-mean KL below which
        it exerts no pull toward the prior.

    Each epoch appends a row to ``model.history_``: ``epoch``, ``loss``,
    ``reconstruction``, ``kl``, ``kl_weight``, ``val_elbo`` (None without
    validation), ``seconds``, and the latent diagnostics ``active_units`` and
    ``kl_per_dim`` (a list), measured on the validation data, else on up to
    ``eval_batch_size`` training examples.

    A non-finite loss or gradient raises :class:`DivergedError` naming the epoch
    and step, before that step touches the parameters. Ctrl-C stops after the
    current step and returns the model, usable.
    """
    check_positive("epochs", epochs, integer=True, allow_zero=True)
    check_positive("batch_size", batch_size, integer=True)
    check_positive("warmup_epochs", warmup_epochs, integer=True, allow_zero=True)
    check_positive("free_bits", free_bits, allow_zero=True)
    check_positive("eval_batch_size", eval_batch_size, integer=True)
    if binarize is not None:
        check_choice("binarize", binarize, ("dynamic",))
    x = model._batch(x, name="x")
    if validation is not None:
        validation = model._batch(validation, name="validation")
    opt = _optimizer(model, check_choice("optimizer", optimizer, tuple(OPTIMIZERS)), lr)

    n = x.shape[0]
    steps = math.ceil(n / batch_size)
    first = len(model.history_)
    bar = tqdm(total=epochs * steps, disable=not progress, unit="batch", leave=True)
    try:
        for epoch in range(first, first + epochs):
            kl_weight = model.beta * (min(1.0, (epoch + 1) / warmup_epochs) if warmup_epochs else 1.0)
            start = time.perf_counter()
            totals = np.zeros(3)  # loss, reconstruction, kl, each summed over examples
            perm = model.rng_.permutation(n)
            for step in range(steps):
                idx = perm[step * batch_size:(step + 1) * batch_size]
                xb = x[model.xp.asarray(idx)]  # (B, D) gather on the model's device
                if binarize == "dynamic":
                    xb = _bernoulli(model, xb)
                eps = model._draw_normal((len(idx), model.latent_dim))
                loss, rec, kl = model._forward_backward(xb, eps, kl_weight, free_bits)
                if not (math.isfinite(loss) and _finite(model.flat_grads)):
                    raise DivergedError(
                        f"the loss became {loss} at epoch {epoch + 1}, step {step + 1}; the parameters are "
                        f"left as they were after the previous step. Try a smaller learning rate (lr={lr}), "
                        "or check the data for extreme values"
                    )
                opt.step(model.flat_params, model.flat_grads)
                totals += len(idx) * np.array([loss, rec, kl])
                bar.update(1)
                if step % 10 == 0 or step == steps - 1:
                    bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.3f}", refresh=False)
            seconds = time.perf_counter() - start
            row = dict(zip(("loss", "reconstruction", "kl"), (totals / n).tolist()))
            row.update(epoch=epoch + 1, kl_weight=kl_weight, seconds=seconds,
                       val_elbo=mean_elbo(model, validation, eval_batch_size) if validation is not None else None)
            probe = validation if validation is not None else x[:eval_batch_size]
            kl_dims, active, _ = latent_diagnostics(model, probe)
            row.update(active_units=active, kl_per_dim=kl_dims.tolist())
            model.history_.append(row)
    except KeyboardInterrupt:
        bar.write(f"Training interrupted during epoch {len(model.history_) + 1}; the model keeps its parameters.")
    finally:
        bar.close()
    return model


def mean_elbo(model, x, batch_size=1000):
    """Mean per-example ELBO over ``x`` in nats, computed in batches."""
    check_positive("batch_size", batch_size, integer=True)
    total = 0.0
    for i in range(0, x.shape[0], batch_size):
        total += float(model.elbo(x[i:i + batch_size]).sum())
    return total / x.shape[0]


def _optimizer(model, name, lr):
    """Reuse the model's optimiser (continuing its state) when it is of the same kind."""
    opt = model.optimizer_
    if opt is None or not isinstance(opt, OPTIMIZERS[name]):
        opt = model.optimizer_ = OPTIMIZERS[name](lr=lr)
    opt.lr = check_positive("lr", lr)
    return opt


def _bernoulli(model, probs):
    """A fresh binary draw ``x ~ Bernoulli(probs)``, from the model's host generator."""
    u = model.xp.asarray(model.rng_.random(probs.shape, dtype=model.dtype))
    return (u < probs).astype(model.dtype)


def _finite(a):
    """True when every entry is finite; one BLAS dot product instead of an elementwise pass."""
    return math.isfinite(float(a @ a))
