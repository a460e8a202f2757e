"""Exercise 7, find the planted bug: a small VAE whose backward pass may hold one wrong derivative.

:class:`PlantedBugModel` is the model of exercise 4 (see :mod:`minivae.exercises.assembly`)
with ``loss()`` and ``grads()``; for most seeds one derivative is spoiled the way real
backward passes go wrong (a sign, a stray factor of 2, a batch mean taken twice or not at
all, a bias averaged over the batch instead of summed). The bug sits either in one
parameter's gradient or in an inner signal of the backward pass (``dlogits``, ``dz``,
``dlogvar``, a ``tanh'``), and then every gradient computed from that signal is wrong too,
and the largest error may show far upstream of the bug. A gradient check finds where to look:
the wrong gradient nearest the loss, in the order backprop computes them (:data:`FROM_LOSS`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .assembly import FROM_LOSS, NAMES, SITES, reference, shapes
from .checking import Part, Wrong, norm_error

LESSON = "07_find_the_bug"
NO_BUG = 0.15  # the share of models whose gradients are all right


def spoil(kind: str, g: np.ndarray, n: int) -> np.ndarray:
    """What one bug does to one gradient ``g`` of a batch of ``n``."""
    return {"sign": -g, "factor 2": 2 * g, "missing 1/N": g * n, "1/N twice": g / n,
            "bias averaged": g / n}[kind]


INNER = 0.5  # the share of bugs planted in an inner signal rather than in one parameter's gradient


class PlantedBugModel:
    """A float64 VAE on a small batch, with ``params``, ``loss()`` and ``grads()``; maybe one gradient is wrong.

    ``loss()`` reads ``params`` each time it is called, so perturbing an entry
    in place and calling it again is a finite difference.
    """

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng([seed, 7])
        n, d, h, k = (int(v) for v in rng.choice(np.arange(2, 7), size=4, replace=False))
        self.params = {name: rng.standard_normal(shape) * (0.5 if name.endswith(".W") else 0.3)
                       for name, shape in shapes(d, h, k).items()}
        self.x = (rng.random((n, d)) < 0.4).astype(np.float64)
        self.x[np.arange(n), rng.integers(d, size=n)] = 1  # a pixel on in every image: no gradient is exactly 0
        self.eps = rng.standard_normal((n, k))
        n = self.x.shape[0]
        if rng.random() < NO_BUG:
            self.__bug = None
        elif rng.random() < INNER:
            site = SITES[int(rng.integers(len(SITES)))]
            kinds = ["sign", "factor 2"] + ["missing 1/N", "1/N twice"] * (site == "dlogits")
            self.__bug = site, kinds[int(rng.integers(len(kinds)))]
        else:
            name = NAMES[int(rng.integers(len(NAMES)))]
            kinds = ["sign", "factor 2", "missing 1/N", "1/N twice"] + ["bias averaged"] * name.endswith(".b")
            self.__bug = name, kinds[int(rng.integers(len(kinds)))]
        self.__first = next(iter(self.wrong()), None)

    def loss(self) -> float:
        """The batch-mean negative ELBO at the current ``params`` (the noise ``eps`` is frozen)."""
        return reference(self.params, self.x, self.eps)[0]

    def grads(self) -> dict[str, np.ndarray]:
        """Name -> gradient of ``loss()``, from the (possibly buggy) backward pass."""
        n = self.x.shape[0]
        if self.__bug is None or self.__bug[0] in NAMES:
            grads = reference(self.params, self.x, self.eps)[1]
            if self.__bug is not None:
                name, kind = self.__bug
                grads[name] = spoil(kind, grads[name], n)
            return grads
        site, kind = self.__bug
        return reference(self.params, self.x, self.eps,
                         spoil=lambda at, value: spoil(kind, value, n) if at == site else value)[1]

    def planted(self) -> str | None:
        """The wrong gradient nearest the loss (where to look), or None. For the checker; finding it is the exercise."""
        return self.__first

    def wrong(self) -> list[str]:
        """Every wrong gradient's name, nearest the loss first. For the checker's messages."""
        right, got = reference(self.params, self.x, self.eps)[1], self.grads()
        return [name for name in FROM_LOSS if norm_error(got[name], right[name]) > 1e-6]


def copy_params(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: p.copy() for name, p in params.items()}


def finite_differences_trial(fn: Callable[..., Any], rng: np.random.Generator) -> float:
    model = PlantedBugModel(int(rng.integers(2**31)))
    before = copy_params(model.params)
    got = fn(model.loss, model.params)
    for name, p in model.params.items():
        if not np.array_equal(p, before[name]):
            raise Wrong(f"it left {name!r} changed: restore each entry after perturbing it (x[i] = old), "
                        "or later checks read a different model")
    if not isinstance(got, dict) or set(got) != set(NAMES):
        raise Wrong(f"it should return a dict with one array per parameter ({len(NAMES)} of them)")
    exact = reference(model.params, model.x, model.eps)[1]
    worst = 0.0
    for name in NAMES:
        g = np.asarray(got[name], dtype=np.float64)
        if g.shape != exact[name].shape:
            raise Wrong(f"the array for {name!r} has shape {g.shape}; the parameter's is {exact[name].shape}")
        err = norm_error(g, exact[name]) if np.isfinite(g).all() else np.inf
        if err > 1e-6:
            hint = ("an error near h (about 1e-5) is a one-sided difference's: use centred differences "
                    "(f(x + h) - f(x - h)) / 2h" if 1e-7 < err < 1e-2 else
                    "divide the difference of the two losses by 2h, and perturb one entry at a time")
            raise Wrong(f"its estimate for {name!r} is off by {err:.2g} in norm; {hint}")
        worst = max(worst, err)
    return worst


def find_bug_trial(fn: Callable[..., Any], rng: np.random.Generator) -> float:
    model = PlantedBugModel(int(rng.integers(2**31)))
    want, got = model.planted(), fn(model)
    if got != want:
        if want is None:
            raise Wrong(f"it named {got!r}, but this model's gradients are all right: a check in float64 with "
                        "centred differences gives errors near 1e-8 for a right gradient, so set the threshold "
                        "well above that (say 1e-5)")
        wrong = model.wrong()
        if got in wrong:
            raise Wrong(f"it named {got!r}, which is wrong, but so is every gradient computed from the bug: here "
                        f"{', '.join(wrong)}. Check them in the order backprop computes them (FROM_LOSS) and name "
                        f"the first wrong one, {wrong[0]!r} here: the bug is there or just before it")
        raise Wrong(f"it named {got!r}; compare every parameter's gradient with finite differences, and return "
                    "the first one, from the loss backwards, whose relative error is large (or None when none is)")
    return 0.0


FINITE_DIFFERENCES = Part(name="finite_differences", signature="finite_differences(loss, params) -> {name: array}",
                          lesson=LESSON, trial=finite_differences_trial, draws=2)
FIND_BUG = Part(name="find_bug", signature="find_bug(model) -> name or None", lesson=LESSON,
                trial=find_bug_trial, draws=6, points=2)

PARTS = (FINITE_DIFFERENCES, FIND_BUG)
