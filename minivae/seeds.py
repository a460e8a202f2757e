"""Claims about trained models, across seeds: a figure with the spread of training in its standard error.

A standard error from evaluating one trained model says how sure we are of
*that model's* figure. A claim about a configuration ("the beta-binomial beats
the histograms", "IWAE training gives a higher log p(x)") is about every model
that training could have produced, so its error must also hold the spread
between seeds. This module trains a configuration once per seed (or takes the
models), evaluates each on the same examples, and reports

* :meth:`SeedRuns.estimate`: the mean over seeds of each model's mean figure;
* :func:`compare`: the difference between two configurations, or between one
  and a baseline that has a figure per example (per-pixel histograms, say),

each with a standard error from two parts that add:

``se^2 = var_s(m_s) / S  +  var_i(d_i) / N``

where ``m_s`` is seed ``s``'s mean over the ``N`` examples (its spread holds
the seed-to-seed variation and each model's evaluation noise), and ``d_i``
is example ``i``'s figure averaged over seeds (its spread is that of the
examples drawn). With a handful of seeds the first part is itself uncertain:
two or three seeds show the size of the spread, not its exact value, so
claims are made only where the effect is several standard errors wide.

Training the same configuration again gives the same model (a seed fixes a
run), so :func:`trained` can keep models in a folder keyed by the
configuration, the training options, the data and the seed, and notebooks
that need the same model share one.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .backend import to_numpy
from .families import build
from .model import VAE


@dataclass
class Estimate:
    """A figure across seeds: ``mean ± se`` from ``seeds`` trained models (``per_seed``: each one's mean).

    A difference between two configurations (:func:`compare`) lists both
    configurations' seeds, and ``groups`` holds how many each had.
    """

    mean: float
    se: float
    per_seed: np.ndarray
    seeds: tuple
    groups: tuple = ()

    def __str__(self):
        if len(set(self.groups)) == 1 and len(self.groups) > 1:
            return f"{self.mean:.2f} ± {self.se:.2f} ({self.groups[0]} seeds each)"
        if self.groups:
            return f"{self.mean:.2f} ± {self.se:.2f} ({' and '.join(map(str, self.groups))} seeds)"
        return f"{self.mean:.2f} ± {self.se:.2f} ({len(self.seeds)} seeds)"

    def exceeds(self, value: float = 0.0, sigmas: float = 4.0) -> bool:
        """True when the estimate lies more than ``sigmas`` standard errors above ``value``."""
        return self.mean - value > sigmas * self.se


@dataclass
class SeedRuns:
    """Per-example figures of one configuration's trained models: ``values`` is (S, N), one row per seed."""

    values: np.ndarray
    seeds: tuple
    models: list

    def estimate(self) -> Estimate:
        """The mean figure over seeds and examples, with a standard error holding both spreads."""
        return _estimate(self.values, self.seeds)


def across_seeds(train: Callable[[int], VAE], measure: Callable[[VAE], Any], seeds: Sequence[int]) -> SeedRuns:
    """Train ``train(seed)`` for each seed and ``measure(model)`` each on the same examples.

    ``measure`` returns a figure per example, shape (N,) (for instance
    ``lambda m: m.log_likelihood(x_test, 1000)``), or (R, N) replicates of one
    (averaged). Returns :class:`SeedRuns`.
    """
    seeds = tuple(seeds)
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ValueError(f"a spread across seeds needs at least two different seeds; got {seeds!r}")
    models, rows = [], []  # type: tuple[list[VAE], list[np.ndarray]]
    for seed in seeds:
        model = train(seed)
        values = np.asarray(measure(model), dtype=np.float64)
        values = values.mean(axis=0) if values.ndim == 2 else values
        if values.ndim != 1 or (rows and values.shape != rows[0].shape) or not np.isfinite(values).all():
            raise ValueError("measure must return one finite figure per example, (N,) or (R, N), the same N for "
                             f"every seed; got shape {values.shape}")
        models.append(model)
        rows.append(values)
    return SeedRuns(np.stack(rows), seeds, models)


def compare(a: SeedRuns, b: SeedRuns | Any) -> Estimate:
    """``a - b`` across seeds, paired over the examples: ``b`` is :class:`SeedRuns` or a baseline's (N,) figures."""
    if not isinstance(b, SeedRuns):
        baseline = np.asarray(b, dtype=np.float64)
        if baseline.shape != a.values.shape[1:]:
            raise ValueError(f"the baseline needs one figure per example, {a.values.shape[1]}; got {baseline.shape}")
        return _estimate(a.values - baseline[None, :], a.seeds)
    if b.values.shape[1] != a.values.shape[1]:
        raise ValueError("the two configurations were measured on different numbers of examples")
    per_seed = a.values.mean(axis=1) - b.values.mean()  # a's seeds, each against b's mean
    estimate = _combine(a.values.mean(axis=0) - b.values.mean(axis=0), [a.values, b.values], per_seed,
                        a.seeds + b.seeds)
    estimate.groups = (len(a.seeds), len(b.seeds))
    return estimate


def _estimate(values, seeds):
    return _combine(values.mean(axis=0), [values], values.mean(axis=1), tuple(seeds))


def _combine(per_example, runs, per_seed, seeds):
    """The mean of ``per_example`` with ``se^2`` = each run's seed-mean variance / S, + the examples' variance / N."""
    N = len(per_example)
    seed_var = sum(v.mean(axis=1).var(ddof=1) / len(v) for v in runs)
    se = math.sqrt(seed_var + (per_example.var(ddof=1) / N if N > 1 else 0.0))
    return Estimate(float(per_example.mean()), se, per_seed, seeds)


def trained(config: Mapping[str, Any], x: Any, seed: int, cache: str | os.PathLike[str] | Literal[False] | None = None,
            **fit_options: Any) -> VAE:
    """A model of ``config`` (a :class:`~minivae.model.VAE`'s arguments; ``family`` names another family, see
    :mod:`minivae.families`) with ``seed``, fitted to ``x`` with ``fit_options``; kept in the folder ``cache``.

    ``cache`` defaults to ``$MINIVAE_MODEL_CACHE`` when that is set (the test
    suite sets it, so that notebooks which train the same model share one);
    ``cache=False`` always trains. The file is named by a hash of the
    configuration, the options (arrays by their bytes), the data and the seed,
    so a second call with the same four loads the model instead of training it
    again (the same model it would have trained, on the same machine and
    backend: a seed fixes a run); any change to one of them trains afresh.
    """
    options = {"progress": False, **fit_options}
    if cache is None:
        cache = os.environ.get("MINIVAE_MODEL_CACHE") or None
    if cache is None or cache is False:
        return build(config, seed=seed).fit(x, **options)
    key = fingerprint({"config": config, "fit": {k: v for k, v in options.items() if k != "progress"},
                       "seed": seed, "data": x})
    path = Path(cache) / f"vae-{key[:24]}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with _held(path.with_suffix(".lock")):  # a second process that wants this model waits for it, then loads it
        if path.exists():
            return VAE.load(path)
        model = build(config, seed=seed).fit(x, **options)
        if model.stopped_by_ is None:  # a run stopped early is not the configuration's model
            model.save(path)  # atomic: a reader never sees half a file
    return model


@contextlib.contextmanager
def _held(lock_path):
    """An exclusive lock on ``lock_path`` between processes, where the system has ``fcntl`` (else no lock)."""
    try:
        import fcntl
    except ImportError:  # Windows: two processes may both train a model; the atomic save keeps the file whole
        yield
        return
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fingerprint(value: Any) -> str:
    """A SHA-256 hex digest of nested dicts, lists, tuples, arrays and plain values; arrays by dtype, shape and bytes."""
    digest = hashlib.sha256()

    def feed(v):
        if isinstance(v, dict):
            digest.update(b"{")
            for k in sorted(v, key=str):
                feed(str(k))
                feed(v[k])
            digest.update(b"}")
        elif isinstance(v, (list, tuple)):
            digest.update(b"[")
            for item in v:
                feed(item)
            digest.update(b"]")
        elif hasattr(v, "__array__") and not isinstance(v, (str, bytes)):
            a = np.ascontiguousarray(to_numpy(v))
            digest.update(f"array {a.dtype.str} {a.shape}".encode())
            digest.update(a.tobytes())
        else:
            digest.update(f"{type(v).__name__} {v!r};".encode())

    feed(value)
    return digest.hexdigest()
