"""How an exercise answer is checked: seeded random cases, a norm-based error, and the mistake it matches.

A *part* is one function a learner writes. :func:`check` calls it on a few
random cases drawn from a generator seeded by the part's name (so the data do
not depend on which cells ran before, or how often), compares each answer with
the right one, and either prints that it is right or raises
:class:`ExerciseFailed` with a message that names the mistake when it is a
known one: a sign, a factor of 2, a transpose, a missing ``1/N``, or one of the
part's own catalogue (``tanh'`` written as ``1 - y``, the variance used as the
standard deviation, ...).

Answers are compared with the norm-based relative error
``||a - b|| / (||a|| + ||b||)``, which, unlike an elementwise one, does not
blow up where a gradient entry happens to be near zero. Two correct float64
computations of the same quantity agree to about 1e-15; ``TOLERANCE`` leaves
a factor of a billion for differently written but equivalent formulas, and
every mistake the parts know changes the answer by far more.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TOLERANCE = 1e-6


class ExerciseFailed(AssertionError):
    """An answer is wrong; the message says how, and names the mistake where it is a known one."""


class Wrong(Exception):
    """Raised inside a part's trial: the answer is wrong, for the reason in the message."""


def norm_error(a: Any, b: Any) -> float:
    """``||a - b|| / (||a|| + ||b||)`` over all entries, in float64; 0 when both are zero."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = np.linalg.norm(a) + np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / scale) if scale > 0 else 0.0


def close(a: Any, b: Any, tol: float = TOLERANCE) -> bool:
    """Same shape, all finite, and within ``tol`` in norm."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and bool(np.isfinite(a).all()) and norm_error(a, b) <= tol


@dataclass(frozen=True)
class Mistake:
    """A known wrong answer: what it is called, what to tell the learner, and what it returns on a case."""

    name: str
    message: str
    answer: object  # callable: case dict -> tuple of arrays, like the part's answer


@dataclass(frozen=True)
class Part:
    """One function a learner writes, and how to tell a right answer from a wrong one.

    Array parts (the usual kind) give ``make_case(rng) -> dict`` of inputs,
    ``answer(case) -> tuple`` of the right outputs (named by ``outputs``) and a
    catalogue of ``mistakes``; the learner's function is called as
    ``fn(*case[a] for a in args)``. Parts that check something other than
    returned arrays (a training loop, an estimate with a standard error) give
    ``trial(fn, rng) -> float`` instead, which raises :class:`Wrong`.
    """

    name: str
    signature: str
    args: tuple = ()
    outputs: tuple = ()
    make_case: Any = None  # callable: rng -> dict of inputs
    answer: Any = None  # callable: case dict -> tuple of the right outputs
    mistakes: tuple = ()
    batch: str | None = None  # the case key whose first axis is the batch, for the 1/N diagnosis
    batch_mean: bool = False  # the part computes a loss that is a mean over that batch (not just a sum, or no loss)
    from_loss: tuple = ()  # a whole model's gradients, nearest the loss first: a failure reports every one
    terms: str = ""  # the quantities, besides args and outputs, that the part's explanations may name
    trial: Any = None  # callable: (fn, rng) -> float, raising Wrong
    draws: int = 3
    lesson: str = ""  # the exercise notebook it belongs to
    points: int = 1
    extra: dict = field(default_factory=dict)

    def run_once(self, fn: Callable[..., Any], rng: np.random.Generator) -> float:
        """One random case: the largest error over the outputs, or :class:`Wrong`."""
        if self.trial is not None:
            return self.trial(fn, rng)
        case = self.make_case(rng)
        got = call(fn, self, case)
        again = call(fn, self, case)
        if not all(np.array_equal(a, b, equal_nan=True) for a, b in zip(got, again)):
            raise Wrong("it returned different answers for the same inputs: it draws fresh random numbers. "
                        "Use the inputs it is given (in backward, the eps of the forward pass), never new draws")
        right = self.answer(case)
        if self.from_loss:
            return self.report_all(case, got, right)
        worst = 0.0
        for i, name in enumerate(self.outputs):
            if close(got[i], right[i]):
                worst = max(worst, norm_error(got[i], right[i]))
                continue
            raise Wrong(f"{name} is wrong: " + diagnose(self, case, i, got[i], right[i]))
        return worst

    def report_all(self, case: dict[str, Any], got: tuple[np.ndarray, ...], right: tuple[np.ndarray, ...]) -> float:
        """A whole model's gradients: every one right or wrong, and the wrong one nearest the loss named first.

        Backprop computes the gradients from the loss backwards, so one mistake
        makes its own gradient wrong and every gradient computed from it; the
        wrong gradient nearest the loss is where to look first.
        """
        index = {name: i for i, name in enumerate(self.outputs)}
        lines, first = [], None
        for name in self.from_loss:
            i = index[name]
            if got[i].shape != right[i].shape:
                verdict = f"wrong: shape {got[i].shape}, should be {right[i].shape}"
            else:
                ok = "right" if close(got[i], right[i]) else "wrong"
                verdict = f"{ok}: relative error {norm_error(got[i], right[i]):.1e}"
            if verdict.startswith("wrong") and first is None:
                first = name
            lines.append(f"  {name:<{max(map(len, self.outputs))}}  {verdict}")
        if first is None:
            return max(norm_error(g, r) for g, r in zip(got, right))
        i = index[first]
        raise Wrong(f"{first} is wrong, the wrong gradient nearest the loss (look there first; the ones after it in "
                    f"backprop may be wrong only because of it): {diagnose(self, case, i, got[i], right[i])}\n"
                    "Every gradient, from the loss back to the input:\n" + "\n".join(lines))


def call(fn: Callable[..., Any], part: Part, case: dict[str, Any]) -> tuple[np.ndarray, ...]:
    """Call the learner's function on a fresh copy of the case; its outputs as a tuple of float64 arrays."""
    inputs = {k: copy(v) for k, v in case.items()}
    out = fn(*(inputs[a] for a in part.args))
    for a in part.args:
        if not same(inputs[a], case[a]):
            raise Wrong(f"it changed its input {a!r} in place; compute new arrays instead of writing into the inputs")
    if isinstance(out, dict):
        missing = [name for name in part.outputs if name not in out]
        if missing:
            raise Wrong(f"its dictionary lacks {', '.join(map(repr, missing))}")
        out = tuple(out[name] for name in part.outputs)
    elif len(part.outputs) == 1:
        out = (out,)
    elif not isinstance(out, (tuple, list)) or len(out) != len(part.outputs):
        raise Wrong(f"it should return {len(part.outputs)} things, ({', '.join(part.outputs)}); "
                    f"got {type(out).__name__}")
    try:
        return tuple(np.asarray(o, dtype=np.float64) for o in out)
    except (TypeError, ValueError) as e:
        raise Wrong(f"it should return arrays of numbers; got {[type(o).__name__ for o in out]} ({e})") from None


def copy(value: Any) -> Any:
    """A copy of an input: arrays and dicts of arrays are copied, anything else is passed as it is."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, dict):
        return {k: copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy(v) for v in value]
    return value


def same(a: Any, b: Any) -> bool:
    if isinstance(b, dict):
        return isinstance(a, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in b)
    if isinstance(b, list):
        return isinstance(a, list) and len(a) == len(b) and all(same(u, v) for u, v in zip(a, b))
    if isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    return True


def diagnose(part: Part, case: dict[str, Any], i: int, got: np.ndarray, right: np.ndarray) -> str:
    """What is wrong with output ``i``: a mistake from the part's catalogue, else a common one, else the size."""
    if got.shape == right.shape and not np.isfinite(got).all():
        return "it has nan or inf entries where the right answer is finite. " + part.extra.get(
            "nonfinite", "Look for an exp that overflows, a log of 0, or a division by 0")
    for mistake in part.mistakes:
        wrong = np.asarray(mistake.answer(case)[i], dtype=np.float64)
        if not close(wrong, right) and close(got, wrong):
            return mistake.message
    if got.shape != right.shape:
        if right.ndim == 2 and right.shape[0] != right.shape[1] and got.shape == right.shape[::-1]:
            return f"its shape is {got.shape}, the transpose of {right.shape}: a matrix is transposed (check x.T @ dy against dy @ x.T)"
        n = case[part.batch].shape[0] if part.batch else None
        if n and got.shape == (n, *right.shape):
            return f"its shape is {got.shape}, not {right.shape}: sum over the batch (axis 0), since every example contributes"
        return f"its shape is {got.shape}; it should be {right.shape}"
    scale = float(np.vdot(got, right) / np.vdot(right, right)) if np.vdot(right, right) > 0 else 0.0
    if scale and close(got, scale * right):
        return factor_message(scale, case[part.batch].shape[0] if part.batch else None, part.batch_mean)
    return f"its relative error is {norm_error(got, right):.2g} (right answers are within {TOLERANCE:g})"


def factor_message(scale: float, n: int | None = None, batch_mean: bool = False) -> str:
    """Name a constant factor between an answer and the right one (``batch_mean``: the part averages n examples)."""
    def near(c):
        return abs(scale - c) <= 1e-6 * abs(c)

    if near(-1):
        return "it has the wrong sign: every entry is minus the right one"
    if near(2) or near(0.5):
        return f"it is off by a factor of 2 (it is {scale:g} times the right answer): look for a 2 or a 1/2 in the derivative"
    if n and n > 1 and (near(n) or near(1 / n)):
        what = "a missing 1/N" if near(n) else "an extra 1/N"
        if batch_mean:
            why = "the loss is a batch mean, so each example's term carries 1/N exactly once"
        elif near(n):
            why = "this part divides by nothing: it adds the examples' contributions as they are"
        else:
            why = ("this part computes no mean: its upstream gradient already carries whatever 1/N an average "
                   "put there, so add the examples' contributions without dividing again")
        return f"it is {scale:g} times the right answer, {what} (N = {n} examples): {why}"
    if near(-2) or near(-0.5):
        return f"it has the wrong sign and is off by a factor of 2 ({scale:g} times the right answer)"
    return f"it is a constant {scale:.4g} times the right answer: a constant factor is wrong"


def stream(name: str, seed: int) -> np.random.Generator:
    """The generator a check draws from: seeded by the part's name and ``seed``, independent of everything else."""
    return np.random.default_rng([zlib.crc32(name.encode()), seed])


def check(part: Part, fn: Callable[..., Any], seed: int = 0, draws: int | None = None, quiet: bool = False) -> float:
    """Check ``fn`` on ``draws`` random cases of ``part``; print a line, or raise :class:`ExerciseFailed`."""
    draws = part.draws if draws is None else draws
    rng = stream(part.name, seed)
    worst = 0.0
    for k in range(draws):
        try:
            worst = max(worst, part.run_once(fn, rng))
        except NotImplementedError:
            raise ExerciseFailed(f"{part.name}: not written yet (it raises NotImplementedError)") from None
        except Wrong as wrong:
            first, newline, rest = str(wrong).partition("\n")  # the case number ends the first line, before any table
            message = f"{part.name}: {first} (random case {k + 1} of {draws}){newline}{rest}"
            if not quiet:
                print(message)
            raise ExerciseFailed(message) from None
    if not quiet:
        print(f"{part.name}: right on {draws} random case{'s' * (draws != 1)} (largest error {worst:.1e})")
    return worst
