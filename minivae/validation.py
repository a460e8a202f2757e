"""Input checks shared by the model, training and the CLI.

Each check raises ``ValueError`` naming what is wrong and what would be right.
"""

import math

import numpy as np

from .backend import to_backend


def check_choice(name, value, choices):
    """``value`` must be one of ``choices`` (strings compared case-insensitively)."""
    key = value.lower() if isinstance(value, str) else value
    if key not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, choices))}")
    return key


def check_positive(name, value, integer=False, allow_zero=False):
    """``value`` must be a positive (or non-negative) number, or integer.

    Returns it as a plain Python ``int`` or ``float`` (a NumPy scalar such as
    ``np.int64(3)`` becomes ``3``), so that whatever keeps it, a checkpoint's
    JSON included, can always write it.
    """
    kind = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    ok = isinstance(value, kind) and not isinstance(value, (bool, np.bool_))
    ok = ok and bool(value >= 0 if allow_zero else value > 0) and (integer or _finite(value))
    if not ok:
        what = "integer" if integer else "number"
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite {what} {bound}; got {value!r}")
    return int(value) if integer else float(value)


MAX_SAMPLES = 10**7  # Monte Carlo samples per example: past this an estimate takes hours, its error barely shrinks


def check_samples(name, value):
    """A Monte Carlo sample count: an integer from 1 to ``MAX_SAMPLES`` (its standard error falls as 1/sqrt of it)."""
    value = check_positive(name, value, integer=True)
    if value > MAX_SAMPLES:
        raise ValueError(f"{name}={value:,} samples per example would take hours, and the standard error falls only "
                         f"as 1/sqrt({name}); at most {MAX_SAMPLES:,} (a few thousand is usual)")
    return value


def _holds_text(x):
    """True when a nested list (or tuple) has a string in its first row's first entry."""
    while isinstance(x, (list, tuple)) and x:
        x = x[0]
    return isinstance(x, (str, bytes))


def check_integer_in(name, value, low, high=None):
    """``value`` must be an integer from ``low`` to ``high`` (None: no upper bound); returns it as an ``int``."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if not ok or value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {bounds}; got {value!r}")
    return int(value)


def _finite(number):
    try:
        return math.isfinite(number)
    except OverflowError:  # an integer beyond the float range
        return False


def check_seed(seed):
    """A seed must be a non-negative integer; returned as a plain ``int``."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, (bool, np.bool_)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    return int(seed)


def as_batch(x, xp, dtype, features, name="x", unit_interval=False, what="this model",
             rescale="rescale the data (for 8-bit pixels divide by 255) or use likelihood='gaussian'"):
    """Check and move a batch to the backend ``xp`` as a ``(N, features)`` array of ``dtype``.

    Raises ``ValueError`` for a wrong rank or feature count, an empty batch,
    NaN or inf, complex numbers, a masked array (whose mask would be lost),
    and (``unit_interval=True``) values outside [0, 1], which ``rescale`` says how to fix.
    """
    if isinstance(x, np.ma.MaskedArray):
        raise ValueError(f"{name} is a masked array, and a model cannot honour its mask; fill the masked "
                         f"entries (x.filled(value)) or drop their rows first")
    kind = getattr(getattr(x, "dtype", None), "kind", None)
    if kind == "c":  # NumPy would drop the imaginary part
        raise ValueError(f"{name} holds complex numbers; pass real data (for example x.real or abs(x))")
    if getattr(x, "requires_grad", False) and hasattr(x, "detach"):  # a tensor that autograd tracks
        raise TypeError(f"{name} is a tensor that requires grad; pass {name}.detach().cpu().numpy()")
    if kind in ("U", "S", "O") or (kind is None and _holds_text(x)):  # NumPy would parse "0.5" as a number
        raise ValueError(f"{name} holds text or Python objects; pass numbers (parse the file with "
                         "np.loadtxt or float() first)")
    try:
        a = to_backend(x, xp, dtype=dtype)
    except (TypeError, ValueError, OverflowError) as err:
        raise ValueError(f"{name} must be a numeric array of shape (N, {features}): {err}") from None
    if a.ndim != 2:
        hint = " Flatten images first, e.g. x.reshape(len(x), -1)." if a.ndim > 2 else ""
        raise ValueError(f"{name} must be 2-D with shape (N, {features}); got shape {tuple(a.shape)}.{hint}")
    if a.shape[1] != features:
        raise ValueError(
            f"{name} has {a.shape[1]} features per example but the model expects {features} "
            f"(shape (N, {features})); check the data or the model's input_dim"
        )
    if a.shape[0] == 0:
        raise ValueError(f"{name} is empty; pass at least one example")
    lo, hi = float(a.min()), float(a.max())  # NaN propagates through min and max
    if not (math.isfinite(lo) and math.isfinite(hi)):
        row = int(xp.argmin(xp.isfinite(a).all(axis=1)))  # only on failure: find where
        raise ValueError(f"{name} contains NaN or inf (first in row {row}); remove or impute those values")
    if unit_interval:
        if lo < 0 or hi > 1:
            raise ValueError(
                f"{what} needs {name} in [0, 1] but it spans [{lo:g}, {hi:g}]; {rescale}"
            )
    return a

