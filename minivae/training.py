"""The training loop: minibatches, the optimiser step, progress, history, and safe stopping.

Training never leaves a model half-updated:

* Each step is all or nothing. The optimiser saves the parameters and its
  state as it updates them (an :class:`minivae.optim.UndoRecord`), and the
  step count, the random generator and the epoch's totals are copied before
  the step; a step whose result is not finite, or that an exception
  interrupts, is undone from those copies.
* SIGINT (Ctrl-C), SIGTERM and SIGHUP never interrupt a step: while ``fit``
  runs they ask it to stop once the step in flight is complete. A second
  Ctrl-C stops as soon as that step is complete, without waiting for the
  rest of the epoch's bookkeeping.
* A stop in the middle of an epoch is remembered in ``model.partial_epoch_``
  (saved with the model), and the next ``fit`` on the same data finishes that
  epoch from the next step, so training stopped and resumed follows exactly
  the path of training that never stopped.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from tqdm.auto import tqdm

from .backend import Array, check_memory, get_array_module, to_numpy
from .evaluate import latent_diagnostics
from .optim import OPTIMIZERS, Optimizer, UndoRecord
from .speed import fused
from .speed.blas import StepThreads
from .speed.noise import NoiseAhead
from .stops import StopRequests
from .validation import check_choice, check_positive

if TYPE_CHECKING:  # names for annotations alone, not imported at run time
    from .trainable import Trainable

    Model = TypeVar("Model", bound=Trainable)  # fit returns the model it was given, of its own class

class DivergedError(FloatingPointError):
    """The loss, its gradient or the updated parameters stopped being finite.

    The step that failed is undone. When its loss or gradient was not finite,
    the parameters it started from are at fault, so the step before it (in
    the same epoch) is undone too: the model keeps the last parameters,
    optimiser state and generator state at which the loss was finite.
    """

    def __init__(self, bad: str, epoch: int, step: int, cause: str, inputs_bad: bool = False,
                 steps_undone: int = 1) -> None:
        self.bad, self.epoch, self.step, self.cause, self.inputs_bad = bad, epoch, step, cause, inputs_bad
        undone = ("that step is undone, so the model and its optimiser are as they were after the previous step"
                  if steps_undone == 1 else
                  "that step and the one before it are undone (the loss is not finite at the parameters the "
                  "previous step made), so the model and its optimiser are as they were at the last finite loss")
        super().__init__(f"{bad} at epoch {epoch}, step {step}; {undone}. {cause}")


def fit(model: Model, x: Any, epochs: int = 10, *, batch_size: int = 128, lr: float = 1e-3, optimizer: str = "adam",
        validation: Any = None, progress: bool = True, binarize: str | None = None, warmup_epochs: int = 0,
        free_bits: float = 0.0, eval_batch_size: int = 1000, objective: str = "elbo", n_samples: int = 1,
        y: Any = None) -> Model:
    """Train ``model`` on ``x`` by minibatch gradient descent on the negative ELBO; returns ``model``.

    Parameters
    ----------
    x : (N, D) array
        Training data (pixel intensities in [0, 1] for a Bernoulli model).
    epochs, batch_size : int
        ``epochs`` counts the epoch left unfinished by an earlier stop, if any.
    lr : float
    optimizer : {"adam", "sgd"}
        Its state is kept on the model (``model.optimizer_``), so calling ``fit``
        again, or after :meth:`VAE.load`, continues exactly where training stopped.
    validation : (M, D) array, optional
        Its mean ELBO is recorded after every epoch (with noise from the
        model's evaluation stream, so validating does not change training).
        For a conditional model, ``(x_val, y_val)``.
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
    objective : {"elbo", "iwae"}
        ``"iwae"`` trains on the ``n_samples``-sample importance-weighted bound
        instead (see :meth:`VAE.loss_and_grads`); its ``loss`` column is minus
        that bound, and ``reconstruction`` and ``kl`` are per-sample averages.
    n_samples : int
        Samples of ``z`` per example and step, for ``"iwae"``.
    y : (N,) integer labels
        The classes of ``x``, for a conditional model (``VAE(n_classes=...)``).

    Notes
    -----
    Each epoch appends a row to ``model.history_``: ``epoch``, ``loss``,
    ``reconstruction``, ``kl``, ``kl_weight``, ``val_elbo`` (None without
    validation), ``seconds``, and the latent diagnostics ``active_units`` and
    ``kl_per_dim`` (a list), measured on the validation data, else on up to
    ``eval_batch_size`` training examples.

    A non-finite loss, gradient or updated parameter raises
    :class:`DivergedError` naming the epoch and step, with that step undone.
    A stop signal (Ctrl-C, SIGTERM, SIGHUP) ends training after the current
    step and returns the model; ``model.stopped_by_`` then names the signal
    (it is None after a run that completed), and ``model.partial_epoch_``
    holds the place in an unfinished epoch.
    """
    epochs = check_positive("epochs", epochs, integer=True, allow_zero=True)
    if epochs > MAX_EPOCHS:
        raise ValueError(f"epochs={epochs:,} would not end in a lifetime; at most {MAX_EPOCHS:,} (stop any run early "
                         "with Ctrl-C: it saves every completed step)")
    batch_size = check_positive("batch_size", batch_size, integer=True)
    warmup_epochs = check_positive("warmup_epochs", warmup_epochs, integer=True, allow_zero=True)
    free_bits = check_positive("free_bits", free_bits, allow_zero=True)
    eval_batch_size = check_positive("eval_batch_size", eval_batch_size, integer=True)
    objective, n_samples = model.check_objective(objective, n_samples, free_bits=free_bits,
                                                 warmup_epochs=warmup_epochs)
    fused.requested()  # a MINIVAE_FAST it cannot read is refused now, not at the first update
    if binarize is not None:
        check_choice("binarize", binarize, ("dynamic",))
    x = model.checked_input(x, name="x")
    onehot = model.one_hot(y, x.shape[0])
    caveat = model.likelihood_.caveat(x) if binarize is None else None  # binarised draws are what it models
    if caveat:
        warnings.warn(caveat, UserWarning, stacklevel=3)
    validation_y = None
    if isinstance(validation, tuple) and model.n_classes is not None:
        if len(validation) != 2:
            raise ValueError(f"validation for a conditional model is a pair (x_val, y_val); got a tuple of "
                             f"{len(validation)}")
        validation, validation_y = validation
    if validation is not None:
        validation = model.checked_input(validation, name="validation")
        model.one_hot(validation_y, validation.shape[0], name="the validation labels")
    n = x.shape[0]
    labels = {"train": None if y is None else np.broadcast_to(np.asarray(y), (n,)), "validation": validation_y}
    steps = math.ceil(n / batch_size)
    place = _resume_place(model, n, batch_size)
    check_step_memory(model, min(batch_size, n), n_samples)
    threads = StepThreads(model, batch_size * n_samples)  # one BLAS thread or more, by shape (see minivae.speed.blas)
    optimizer = check_choice("optimizer", optimizer, tuple(OPTIMIZERS))
    # what a call that fails before its first step completes puts back: it leaves the model as it found it
    before = (model.optimizer_, model.partial_epoch_, model.rng_.bit_generator.state)
    opt = _optimizer(model, optimizer, lr)

    model.stopped_by_ = None
    first = len(model.history_)
    total_steps = epochs * steps - (place["step"] if place and epochs else 0)
    bar = tqdm(total=total_steps, disable=not progress, unit="batch", leave=True)
    # on a GPU, each step's noise is drawn on a helper thread during the step before (see minivae.speed.noise)
    noise = NoiseAhead(model, ahead=model.xp is not np and binarize is None)
    snapshot = StepSnapshot(model, opt, noise)
    completed, failed_early = 0, False  # steps completed in this call; whether it failed before any
    try:
        with StopRequests() as stops, threads.held():  # one BLAS limit for every step, where it is fixed
            for epoch in range(first, first + epochs):
                kl_weight = model.beta * (min(1.0, (epoch + 1) / warmup_epochs) if warmup_epochs else 1.0)
                if place is None:
                    place = {"step": 0, "perm": model.rng_.permutation(n), "totals": np.zeros(3), "seconds": 0.0}
                perm, totals = place["perm"], place["totals"]  # totals: loss, reconstruction, kl summed over examples
                perm_rows = model.xp.asarray(perm)  # the epoch's order, moved to the device once
                start = time.perf_counter() - place["seconds"]
                threads.start_epoch(steps - place["step"])
                snapshot.start_epoch()
                for step in range(place["step"], steps):
                    if stops.signal:
                        break
                    with stops.deferred():  # no signal interrupts the step
                        snapshot.take(totals)
                        try:
                            rows = perm_rows[step * batch_size:(step + 1) * batch_size]
                            following = min(batch_size, n - (step + 1) * batch_size) if step + 1 < steps else None
                            with threads.step():
                                loss, rec, kl = _step(model, opt, x, rows, kl_weight, free_bits, binarize, epoch,
                                                      step, lr, snapshot.saved, noise, following,
                                                      n_samples if objective == "iwae" else 0, onehot)
                            totals += rows.shape[0] * np.array([loss, rec, kl])
                            place["step"] = step + 1
                            completed += 1
                        except BaseException as err:
                            snapshot.restore(totals)
                            place["step"] = step
                            if isinstance(err, DivergedError) and err.inputs_bad and snapshot.restore_previous(totals):
                                place["step"] = step - 1
                                raise DivergedError(err.bad, err.epoch, err.step, err.cause, steps_undone=2) from None
                            raise
                    bar.update(1)
                    if step % 10 == 0 or step == steps - 1:  # the epoch's mean so far, not one batch's loss
                        seen = min(n, (step + 1) * batch_size)
                        bar.set_postfix(epoch=epoch + 1, mean_loss=f"{totals[0] / seen:.3f}", refresh=False)
                place["seconds"] = time.perf_counter() - start
                if place["step"] < steps:
                    break
                with threads.chosen():
                    _end_epoch(model, epoch, n, totals, kl_weight, place["seconds"], validation, x, eval_batch_size,
                               labels)
                place = None
                if stops.signal:
                    break
        model.stopped_by_ = stops.signal
    except KeyboardInterrupt:  # a second Ctrl-C, or one where no handler could be installed
        model.stopped_by_ = "SIGINT"
    except BaseException:
        failed_early = completed == 0
        raise
    finally:
        noise.close()  # a draw made ahead for a step that did not run is undone
        # the unfinished epoch, if any, is always the one after those in the history
        model.partial_epoch_ = None if place is None else {
            "epoch": len(model.history_) + 1, "n": n, "batch_size": batch_size, **place}
        if failed_early:  # such as out of memory in the first step: as if the call had not been made
            model.optimizer_, model.partial_epoch_, model.rng_.bit_generator.state = before
        bar.close()
    if model.stopped_by_:
        where = (f"in epoch {len(model.history_) + 1} after step {place['step']} of {steps}" if place
                 else f"after epoch {len(model.history_)}")
        bar.write(f"Training stopped by {model.stopped_by_} {where}; the model holds every completed step.")
    return model


MAX_EPOCHS = 10**6


def check_step_memory(model: Trainable, batch: int, n_samples: int) -> None:
    """Refuse, before anything changes, a step whose arrays could not fit in memory.

    A step keeps a few arrays of ``n_samples x batch`` rows as wide as the
    model's widest layer (activations and their gradients); their size is
    compared with the machine's memory (the GPU's on CuPy).
    """
    widths = [model.input_dim * model.likelihood_.outputs, *model.hidden_dims, 2 * model.latent_dim]
    check_memory(4 * n_samples * batch * max(widths) * np.dtype(model.dtype).itemsize, model.xp,
                 f"a step with n_samples={n_samples:,} and {batch:,} examples a batch", "lower n_samples or batch_size")


def _step(model, opt, x, rows, kl_weight, free_bits, binarize, epoch, step, lr, saved, noise, following,
          iw_samples=0, onehot=None):
    """One minibatch: forward, backward and the optimiser's update; raises DivergedError on a non-finite result.

    ``rows`` are the batch's indices into ``x``, on the model's device. ``iw_samples > 0`` steps on the
    importance-weighted bound with that many samples, else on the ELBO. The noise comes from ``noise``
    (a :class:`minivae.speed.noise.NoiseAhead`), which may start drawing the next step's, for a batch of
    ``following`` examples (None: this step ends the epoch). Returns ``(loss, rec, kl)``.

    The step reads one small array back from the device: the loss, its parts, and the sums of squares of
    the gradient and of the updated parameters, which are finite exactly when every entry is (barring
    overflow, checked entry by entry). On a GPU that is the step's one synchronisation. The update is made
    before the check is read; a step that fails it raises, and ``fit`` undoes the update from ``saved``.
    """
    xp = model.xp
    xb = x[rows]  # (B, D) gather on the model's device
    yb = None if onehot is None else onehot[rows]
    if binarize == "dynamic":
        xb = _bernoulli(model, xb)
    def noise_shape(batch):
        return (iw_samples, batch, model.noise_dim) if iw_samples else (batch, model.noise_dim)

    eps = noise.take(noise_shape(rows.shape[0]), None if following is None else noise_shape(following))
    # overflow is checked for below and reported as a DivergedError, so NumPy need not warn of it
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if iw_samples:
            stats = model.iwae_forward_backward(xb, eps, yb)
        else:
            stats = model.forward_backward(xb, eps, kl_weight, free_bits, yb)
        grads_squared = model.flat_grads @ model.flat_grads
        opt.step(model.flat_params, model.flat_grads, saved=saved)
        params_squared = model.flat_params @ model.flat_params
        checks = xp.stack([*stats, grads_squared, params_squared])  # one array, so one read
        loss, rec, kl, grads_squared, params_squared = to_numpy(checks).tolist()  # the one transfer
        bad = None
        if not (math.isfinite(loss) and _finite(grads_squared, model.flat_grads)):
            bad = f"the loss became {loss}" if not math.isfinite(loss) else "the gradient became infinite or NaN"
        elif not _finite(params_squared, model.flat_params):
            bad = "the update made some parameters infinite or NaN"
        elif not math.isfinite(grads_squared) and not all(bool(xp.isfinite(s).all()) for s in opt.state.values()):
            # finite gradients whose squares overflow (|g| > 1.8e19 in float32) make Adam's second moment infinite
            bad = "the gradient's squares overflowed the optimiser's state"
    if bad:
        raise DivergedError(bad, epoch + 1, step + 1, likely_cause(model, x, opt),
                            inputs_bad=bad.startswith(("the loss", "the gradient became")))
    return loss, rec, kl


USUAL_LR = {"Adam": (1e-5, 1e-2), "SGD": (1e-5, 1.0)}  # learning rates beyond these are rarely what was meant
DATA_SCALE = 100.0  # Gaussian data this many standard deviations from 0 are more likely unscaled than extreme


def likely_cause(model: Trainable, x: Array, opt: Optimizer) -> str:
    """What most likely made training diverge, from what it can see, and then the fix: one sentence or two.

    It looks at the data's scale against a fixed-variance Gaussian's standard deviation (the other
    likelihoods' data were checked to lie in [0, 1]) and at the learning rate against the optimiser's
    usual range, in that order; when neither stands out it says so.
    """
    std = model.decoder_std
    if model.likelihood == "gaussian" and not isinstance(std, str):  # a fixed standard deviation, not "learned"
        reach = float(model.xp.abs(x).max())
        if reach > DATA_SCALE * std:
            return (f"Likely cause: the data reach |x| = {reach:g}, {reach / std:.0f} times the "
                    f"Gaussian's standard deviation ({std:g}), so the first gradients are huge. "
                    "Scale the data (8-bit pixels: divide by 255; otherwise standardise each feature) or set "
                    "decoder_std near the data's spread")
    name = type(opt).__name__
    low, high = USUAL_LR.get(name, (0, math.inf))
    if opt.lr > high:
        return (f"Likely cause: lr={opt.lr:g} is far above {name}'s usual range ({low:g} to {high:g}). "
                "Try lr=1e-3")
    return (f"Neither the data's scale nor the learning rate (lr={opt.lr:g}) looks extreme: check the data for "
            "outliers, then try a learning rate ten times smaller")


def _end_epoch(model, epoch, n, totals, kl_weight, seconds, validation, x, eval_batch_size, labels):
    row = dict(zip(("loss", "reconstruction", "kl"), (totals / n).tolist()))
    row.update(epoch=epoch + 1, kl_weight=kl_weight, seconds=seconds,
               val_elbo=mean_elbo(model, validation, eval_batch_size, labels["validation"])
               if validation is not None else None)
    if validation is not None:
        probe, probe_y = validation, labels["validation"]
    else:
        probe, probe_y = x[:eval_batch_size], None if labels["train"] is None else labels["train"][:eval_batch_size]
    kl_dims, active, _ = latent_diagnostics(model, probe, y=probe_y)
    row.update(active_units=active, kl_per_dim=kl_dims.tolist())
    model.history_.append(row)


def _resume_place(model, n, batch_size):
    """The place in an unfinished epoch to go on from, after checking that it fits this call."""
    place = model.partial_epoch_
    if place is None:
        return None
    if (place["n"], place["batch_size"]) != (n, batch_size):
        raise ValueError(
            f"training stopped in the middle of epoch {place['epoch']} (after step {place['step']}) with "
            f"batch_size={place['batch_size']} over {place['n']} examples; call fit with that data and batch_size "
            f"to finish the epoch exactly, or set model.partial_epoch_ = None to start a fresh epoch"
        )
    return {key: place[key] for key in ("step", "perm", "totals", "seconds")}


class StepSnapshot:
    """Everything a training step changes, kept so that the step, and the one before it, can be undone.

    The optimiser saves the parameters and its state arrays into ``saved``
    as it updates them; ``take`` copies the rest (the step count, the names
    of the state arrays, the training generator and the epoch's totals)
    before the step. The previous step's copies are kept too: a loss that
    is not finite condemns the parameters it was computed at, which the
    previous step made, so :meth:`restore_previous` undoes that step as well.
    """

    def __init__(self, model: Trainable, opt: Optimizer, noise: Any) -> None:
        self.model, self.opt, self.noise = model, opt, noise
        self.frame, self.epoch_begins = self.Frame(), True
        self.previous: StepSnapshot.Frame | None = None

    class Frame:
        """One step's copies: the optimiser's undo record, and what ``take`` copies."""

        def __init__(self) -> None:
            self.saved = UndoRecord()
            self.t = 0
            self.names: set[str] = set()
            self.rng_state: dict[str, Any] = {}
            self.totals: Array = None

    @property
    def saved(self) -> UndoRecord:
        return self.frame.saved

    def start_epoch(self) -> None:
        """No step of an earlier epoch is undone: its totals are in the history already."""
        self.epoch_begins = True

    def take(self, totals: Array) -> None:
        spare = self.previous or self.Frame()  # reuse the buffers of the step two back
        last = None if self.epoch_begins or not self.frame.saved.complete else self.frame
        self.previous, self.frame, self.epoch_begins = last, spare, False
        frame = self.frame
        frame.saved.complete = False
        frame.t, frame.names = self.opt.t, set(self.opt.state)
        frame.rng_state = self.noise.state()  # before this step's noise, even if it was drawn ahead
        frame.totals = totals.copy()

    def restore(self, totals: Array, frame: StepSnapshot.Frame | None = None) -> None:
        frame = frame or self.frame
        for name in list(self.opt.state):
            if name not in frame.names:  # created by the step being undone
                del self.opt.state[name]
            elif frame.saved.complete:
                self.opt.state[name][...] = frame.saved.arrays[name]
        if frame.saved.complete:
            self.model.flat_params[...] = frame.saved.arrays["w"]
        self.opt.t = frame.t
        self.noise.cancel()  # the helper thread is done with the generator before it is wound back
        self.model.rng_.bit_generator.state = frame.rng_state
        totals[...] = frame.totals

    def restore_previous(self, totals: Array) -> bool:
        """Undo the step before the one just undone, if it was in this epoch; returns whether it was."""
        if self.previous is None:
            return False
        self.restore(totals, self.previous)
        self.previous = None
        return True


def mean_elbo(model: Trainable, x: Any, batch_size: int = 1000, y: Any = None) -> float:
    """Mean per-example ELBO over ``x`` in nats, computed in batches (``y``: a conditional model's labels)."""
    batch_size = check_positive("batch_size", batch_size, integer=True)
    if len(x) == 0:
        raise ValueError("x is empty; the mean ELBO needs at least one example")
    total = 0.0
    for i in range(0, x.shape[0], batch_size):
        total += float(model.elbo(x[i:i + batch_size], y=None if y is None else np.asarray(y)[i:i + batch_size]).sum())
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


def _finite(sum_of_squares, a):
    """True when every entry of ``a`` is finite, given ``sum_of_squares = a @ a`` (read back already).

    A finite sum of squares proves it; only when the sum overflowed (or is
    not finite) is each entry looked at.
    """
    return math.isfinite(sum_of_squares) or bool(get_array_module(a).isfinite(a).all())
