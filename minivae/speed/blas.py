"""How many threads the BLAS library may use for minivae's matrix products.

OpenBLAS's worker threads spin while they wait for the next product, so on a
machine whose cores are busy with other work they fight it for the CPU. On
the 2-core machine of ``benchmarks/README.md``, with two other busy
processes, ``python -m minivae train`` took 3.2 times as long with the
library's default threads as with one, and an MNIST-sized epoch 2 to 3 times;
on the same machine idle, the MNIST-sized epoch was 1.3 times faster with
the default threads.

The number of threads also changes the bits: OpenBLAS splits some products
(a 128x784 by 784x400 one, for instance) differently on one thread and on
two, and the sums come out in another order. So that a seed fixes a training
run whatever else the machine is doing, the choice depends only on the
problem's shape (``MINIVAE_BLAS_THREADS`` unset, or ``auto``):

- products under ``ALWAYS_ONE_BELOW`` multiply-adds (the bundled digits')
  run on one thread, which is as fast for them even on an idle machine;
- larger ones run on the library's default threads.

``MINIVAE_BLAS_THREADS=1`` runs every product on one thread (the choice for
a large model on a shared machine), ``=default`` never limits the library.
``=measure`` trades the bits for speed under load: each epoch starts by
timing ``TRIAL_STEPS`` steps on one thread and as many on the library's
default, alternately, and runs the rest of the epoch on whichever was faster
on average, going back to one thread if the default turns out slower later
in the epoch (see :class:`StepThreads`); the same seed can then give other
bits on a busier machine. Evaluation (the importance-weighted
log-likelihood) follows the shape rule in every mode but ``1`` and
``default``. Limits are set with ``threadpoolctl``, the library
scikit-learn uses for this, only while minivae computes, and never on a GPU.
``benchmarks/bench_load.py`` measures the main job and an MNIST-sized epoch,
idle and under load.
"""

import contextlib
import os
import statistics
import time

import numpy as np
from threadpoolctl import ThreadpoolController

ALWAYS_ONE_BELOW = 10**7  # multiply-adds in the largest product of a step
TRIAL_STEPS = 4  # steps timed with each setting at the start of an epoch
UNTIMED_STEPS = 1  # steps of each setting run before those, untimed: a run's first step pays one-off costs
_controller = None


def controller():
    """The process's one ``ThreadpoolController`` (it inspects the loaded libraries once)."""
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller


SETTINGS = ("auto", "1", "default", "measure")


def setting():
    """``$MINIVAE_BLAS_THREADS``: ``"auto"`` (the default), ``"1"``, ``"default"`` or ``"measure"``."""
    value = os.environ.get("MINIVAE_BLAS_THREADS", "auto").strip().lower()
    if value not in SETTINGS:
        raise ValueError(f"MINIVAE_BLAS_THREADS must be auto, 1, default or measure; got {value!r}. "
                         "Unset it for auto")
    return value


def product_size(model, rows):
    """Multiply-adds in the largest matrix product of a pass over ``rows`` examples."""
    return rows * max(W.shape[0] * W.shape[1] for name, W in model.params.items() if name.endswith(".W"))


_held = 0  # one_thread contexts open: inside one, another has nothing to set


@contextlib.contextmanager
def one_thread():
    """A context in which BLAS products run on one thread. Inside another it costs nothing: setting and
    restoring the limit takes tens of microseconds, as long as a whole step of a small model's."""
    global _held
    if _held:
        yield
        return
    with controller().limit(limits=1, user_api="blas"):
        _held += 1
        try:
            yield
        finally:
            _held -= 1


def fixed_choice(model, rows):
    """The rule for a pass over ``rows`` examples: ``"one"`` thread, the library's ``"default"``, or None.

    ``"default"`` on a GPU or with ``MINIVAE_BLAS_THREADS=default``; ``"one"``
    with ``MINIVAE_BLAS_THREADS=1`` or for products under ``ALWAYS_ONE_BELOW``
    multiply-adds; for larger products ``"default"``, except with
    ``MINIVAE_BLAS_THREADS=measure``: None, where the caller decides
    (evaluation keeps the default, training measures).
    """
    mode = setting()
    if model.xp is not np or mode == "default":
        return "default"
    if mode == "1" or product_size(model, rows) < ALWAYS_ONE_BELOW:
        return "one"
    return None if mode == "measure" else "default"


def threads_for(model, rows):
    """For evaluation: one thread where :func:`fixed_choice` says so, else no limit."""
    return one_thread() if fixed_choice(model, rows) == "one" else contextlib.nullcontext()


class StepThreads:
    """The BLAS threads of training steps: by the rule of :func:`fixed_choice`, or by timing.

    Timing happens only with ``MINIVAE_BLAS_THREADS=measure``, for products
    the rule leaves open: then each epoch chooses by timing a few steps of each choice.

    ``start_epoch(steps)`` begins an epoch of ``steps`` steps; each step then
    runs inside ``with choice.step():``.

    The trial compares mean step times, not medians: on a busy machine the
    library's threads are fast in most steps and stall in a few (a thread
    waits for a core while the other spins), and only the mean sees the
    stalls. They can still miss the trial, so while the library's default is
    chosen, every ``WATCH`` steps the mean of those steps is compared with
    the trial's one-thread mean, and the epoch goes on on one thread once
    the default is the slower.
    """

    WATCH = 16  # steps between checks of a chosen default

    def __init__(self, model, batch_size):
        self.fixed = fixed_choice(model, batch_size)  # None: measure each epoch
        self.choice, self.trials, self.recent, self.untimed = "one", [], [], 0
        self.times: dict[str, list[float]] = {"one": [], "default": []}

    def start_epoch(self, steps):
        self.times, self.recent = {"one": [], "default": []}, []
        enough = steps >= 4 * (TRIAL_STEPS + UNTIMED_STEPS)  # the trial must be a small part of the epoch
        self.trials = ["one", "default"] * (TRIAL_STEPS + UNTIMED_STEPS) if self.fixed is None and enough else []
        self.untimed = 2 * UNTIMED_STEPS if self.trials else 0
        self.choice = self.fixed or "one"

    def chosen(self):
        """A context with this epoch's choice (for the work between steps, such as validation)."""
        return one_thread() if self.choice == "one" else contextlib.nullcontext()

    def held(self):
        """A context for the whole of training: one thread throughout where the rule fixes it, so that each
        :meth:`step` sets nothing; else nothing, and each step sets its own."""
        return one_thread() if self.fixed == "one" else contextlib.nullcontext()

    @contextlib.contextmanager
    def step(self):
        trial = bool(self.trials)
        mode = self.trials.pop(0) if trial else self.choice
        start = time.perf_counter()
        with one_thread() if mode == "one" else contextlib.nullcontext():
            yield
        if self.fixed is not None:
            return
        seconds = time.perf_counter() - start
        if trial:
            if self.untimed:  # such as loading the compiled update, or the allocator's first buffers
                self.untimed -= 1
            else:
                self.times[mode].append(seconds)
            if not self.trials:
                self.choice = min(self.times, key=lambda k: statistics.fmean(self.times[k]))
        elif mode == "default" and self.times["one"]:
            self.recent.append(seconds)
            if len(self.recent) == self.WATCH:
                if statistics.fmean(self.recent) > statistics.fmean(self.times["one"]):
                    self.choice = "one"  # for the rest of the epoch
                self.recent = []
