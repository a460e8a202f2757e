"""Exercises a course can assign: seeded checks that name the mistake, for the notebooks in ``notebooks/exercises``.

In a notebook::

    from minivae.exercises import check
    check("tanh_backward", tanh_backward)   # prints a line, or raises ExerciseFailed naming the mistake

Each part (a function the learner writes) is listed in :data:`PARTS` by name,
with its signature and the lesson it belongs to. ``check`` draws its cases from
a generator seeded by the part's name and ``seed``, so a result does not depend
on which cells ran before; see :mod:`minivae.exercises.checking` for how
answers are compared and mistakes recognised.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import (assembly, backward, flows, hierarchical, importance, likelihoods, objectives, planted_bug, priors, sampling,
               semisupervised, training)
from .assembly import FROM_LOSS
from .checking import TOLERANCE, ExerciseFailed, Mistake, Part, norm_error
from .checking import check as check_part
from .planted_bug import PlantedBugModel

PARTS = {part.name: part for module in (backward, sampling, likelihoods, assembly, training, importance, planted_bug,
                                        objectives, flows, priors, semisupervised, hierarchical)
         for part in module.PARTS}


def check(name: str, fn: Callable[..., Any], seed: int = 0, draws: int | None = None, quiet: bool = False) -> None:
    """Check the learner's function ``fn`` for the part ``name`` on random cases.

    Parameters
    ----------
    name : str
        A key of :data:`PARTS`, e.g. ``"dense_backward"``.
    fn : callable
        The learner's function, with the part's signature (``PARTS[name].signature``).
    seed : int
        Seeds the cases, together with ``name``; hidden tests use other seeds.
    draws : int, optional
        How many random cases (default: the part's own, a few).
    quiet : bool
        Print nothing; only raise on a wrong answer.

    Returns
    -------
    None
        The line it prints gives the largest error seen. Nothing is returned
        so that a grade cell ending with ``check(...)`` shows no value:
        nbgrader would read a number there as a partial score.

    Raises
    ------
    ExerciseFailed
        An ``AssertionError`` whose message names the output that is wrong
        and, where it is a known one, the mistake.
    """
    if name not in PARTS:
        raise KeyError(f"no exercise part named {name!r}; the parts are {', '.join(PARTS)}")
    check_part(PARTS[name], fn, seed=seed, draws=draws, quiet=quiet)


__all__ = ["FROM_LOSS", "PARTS", "TOLERANCE", "ExerciseFailed", "Mistake", "Part", "PlantedBugModel", "check", "norm_error"]
