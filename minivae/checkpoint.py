"""Checkpoints: one ``.npz`` per model, written atomically and read without pickles.

A checkpoint holds the configuration (JSON text), the parameter vector, the
optimiser's state, the random generator's state and the training history, so
training resumed from it follows exactly the path it would have followed
without the break.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .archive import read_npz
from .backend import to_backend, to_numpy
from .likelihoods import NAMES as LIKELIHOODS
from .likelihoods import decoder_outputs
from .optim import OPTIMIZERS
from .stops import signals_held
from .tempfiles import make_temporary, remove_abandoned
from .validation import check_choice, check_positive

if TYPE_CHECKING:  # names for annotations alone, not imported at run time
    from .model import VAE

FORMAT = "minivae-checkpoint"
VERSION = 2  # 2 added the evaluation generator and the place in an unfinished epoch
HISTORY_NUMBERS = ("loss", "reconstruction", "kl", "kl_weight", "seconds")


def save(model: VAE, path: str | os.PathLike[str]) -> None:
    """Write ``model`` to ``path`` (an ``.npz`` file).

    The data goes to a temporary file in the same folder, is flushed to disk,
    and only then renamed over ``path``: an interrupted save leaves any
    existing checkpoint intact and no partial file behind. A save killed
    outright (``kill -9``, a power cut) cannot remove its temporary file; the
    next save into that folder does. A stop signal (Ctrl-C, SIGTERM, SIGHUP)
    that arrives during the save is delivered once the file is in place
    (:func:`minivae.stops.signals_held`). The file gets the permissions of the one
    it replaces, or else those the umask gives a new file.
    """
    path = Path(path)
    arrays = {
        "format": np.array(FORMAT), "version": np.array(VERSION),
        "config": _json(model.get_config()),
        "params": to_numpy(model.flat_params),
        "rng_state": _json(model.rng_.bit_generator.state),
        "eval_rng_state": _json(model.eval_rng_.bit_generator.state),
        "history": _json(model.history_),
    }
    opt = model.optimizer_
    if opt is not None:
        arrays["optimizer"] = _json({"name": type(opt).__name__.lower(), "t": opt.t, **opt.hyperparameters()})
        arrays.update({f"optimizer.{k}": to_numpy(v) for k, v in opt.state.items()})
    place = model.partial_epoch_
    if place is not None:
        arrays["partial_epoch"] = _json({k: v for k, v in place.items() if k != "perm"} | {
            "totals": [float(v) for v in place["totals"]]})
        arrays["partial_epoch.perm"] = np.asarray(place["perm"], dtype=np.int64)

    path.parent.mkdir(parents=True, exist_ok=True)
    with signals_held():  # a Ctrl-C or SIGTERM that comes now takes effect once the file is complete
        fd, tmp = make_temporary(path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                if hasattr(os, "fchmod"):
                    os.fchmod(f.fileno(), _mode_for(path))
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)  # atomic on POSIX and Windows
        except BaseException:
            os.remove(tmp)
            raise
    remove_abandoned(path.parent)


def _json(value):
    return np.array(json.dumps(value))


def _mode_for(path):
    """The permission bits for a new checkpoint at ``path``."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        return 0o666 & ~_umask()


def _umask():
    try:  # Linux says it without changing it
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere the only way to read the umask is to set it, and set it back
    os.umask(mask)
    return mask


def load(path: str | os.PathLike[str], backend: str | None = None) -> VAE:
    """Read a checkpoint written by :func:`save` onto ``backend`` (``"numpy"``, ``"cupy"``, ...).

    Every part is checked before the model is built: sizes against the file
    (so a small file can never make minivae allocate much more memory than its
    own size), the parameters against the configuration, and every number
    against the range it must lie in. Raises ``FileNotFoundError`` when there
    is no file, and ``ValueError`` saying what is wrong for any other problem:
    a truncated or non-``.npz`` file, one not written by minivae, one whose
    parts do not fit together, or one holding object arrays (minivae never
    unpickles).
    """
    from .families import family_class
    from .model import param_shapes

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    arrays = read_npz(path, what="checkpoint")
    if "format" not in arrays or _text(arrays, "format", path) != FORMAT:
        raise ValueError(f"{path} is an .npz file but not a minivae checkpoint (no '{FORMAT}' marker)")
    try:
        version = arrays["version"]
        if version.shape != () or version.dtype.kind not in "iu" or not 1 <= int(version):
            raise ValueError(f"its format version is not a positive integer: {version!r}")
        if int(version) > VERSION:
            raise ValueError(f"it was written by a newer minivae (format {int(version)}); upgrade minivae")
        config = _json_member(arrays, "config", path)
        if not isinstance(config, dict):
            raise ValueError("its configuration is not a JSON object")
        params = arrays["params"]
        family = config.pop("family", "vae")
        if not isinstance(family, str):
            raise ValueError(f"its model family is not a name: {family!r}")
        cls = family_class(family)
        shapes = param_shapes(check_positive("input_dim", config.get("input_dim"), integer=True),
                              tuple(check_positive("each hidden size", h, integer=True)
                                    for h in _list(config.get("hidden_dims"), "hidden_dims")),
                              check_positive("latent_dim", config.get("latent_dim"), integer=True),
                              config.get("likelihood") == "gaussian" and config.get("decoder_std") == "learned",
                              0 if config.get("n_classes") is None else
                              check_positive("n_classes", config.get("n_classes"), integer=True),
                              _outputs_per_pixel(config))
        shapes.update(cls.family_shapes(config))
        n_params = sum(math.prod(shape) for shape in shapes.values())
        if params.shape != (n_params,) or params.dtype.name != config.get("dtype"):
            raise ValueError(f"its parameters ({params.dtype}, {params.shape}) do not fit its configuration "
                             f"({config.get('dtype')}, ({n_params},))")
        if not np.isfinite(params).all():
            raise ValueError("its parameters hold NaN or inf")
        model = cls(**config, backend=backend)
        model.flat_params[...] = to_backend(params, model.xp)
        _set_generator(model.rng_, _json_member(arrays, "rng_state", path), "rng_state")
        if "eval_rng_state" in arrays:  # format 1 had one generator; its models start evaluation afresh
            _set_generator(model.eval_rng_, _json_member(arrays, "eval_rng_state", path), "eval_rng_state")
        model.history_ = _history(_json_member(arrays, "history", path), model.latent_dim)
        if "optimizer" in arrays:
            model.optimizer_ = _optimizer(_json_member(arrays, "optimizer", path), arrays, params, model.xp)
        elif any(key.startswith("optimizer.") for key in arrays):
            raise ValueError("it holds optimiser state but no optimiser")
        if "partial_epoch" in arrays:
            model.partial_epoch_ = _partial_epoch(_json_member(arrays, "partial_epoch", path), arrays,
                                                  len(model.history_))
    except (KeyError, TypeError, ValueError) as err:
        missing = f"it has no {err} member" if isinstance(err, KeyError) else str(err)
        raise ValueError(f"{path} is a mismatched or damaged checkpoint: {missing}") from None
    return model


def _text(arrays, key, path):
    a = arrays[key]
    if a.shape != () or a.dtype.kind != "U":
        raise ValueError(f"{path}: its {key!r} member should be a text string; it is {a.dtype} {a.shape}")
    return str(a)


def _json_member(arrays, key, path):
    try:
        return json.loads(_text(arrays, key, path))
    except (json.JSONDecodeError, RecursionError) as err:
        raise ValueError(f"its {key!r} member is not valid JSON ({type(err).__name__})") from None


def _outputs_per_pixel(config):
    """How many numbers per pixel the configuration's decoder emits (a categorical's ``levels``), checked."""
    from .model import MAX_LEVELS

    likelihood = check_choice("likelihood", config.get("likelihood"), LIKELIHOODS)
    levels = config.get("levels")
    if likelihood == "categorical":
        levels = check_positive("levels", levels, integer=True)
        if levels > MAX_LEVELS:
            raise ValueError(f"its categorical likelihood has {levels:,} levels, more than {MAX_LEVELS:,}")
    return decoder_outputs(likelihood, levels)


def _list(value, what):
    if not isinstance(value, list):
        raise ValueError(f"{what} should be a list; got {value!r}")
    return value


def _number(value, what, integer=False):
    """``value`` checked to be an integer, or a finite number (NaN, inf and overflowing integers are damage)."""
    kind = int if integer else (int, float)
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if ok and not integer:
        try:
            ok = math.isfinite(float(value))
        except OverflowError:
            ok = False
    if not ok:
        shown = f"an integer of {len(str(value))} digits" if isinstance(value, int) else repr(value)
        raise ValueError(f"{what} should be {'an integer' if integer else 'a finite number'}; got {shown}")
    return value


def _set_generator(rng, state, what):
    if not isinstance(state, dict) or state.get("bit_generator") != type(rng.bit_generator).__name__:
        raise ValueError(f"{what} is not the state of a {type(rng.bit_generator).__name__} generator")
    try:
        rng.bit_generator.state = state
    except (TypeError, ValueError, KeyError, OverflowError) as err:
        raise ValueError(f"{what} is not a valid generator state ({err})") from None


def _history(rows, latent_dim):
    """The training history, checked row by row: the CLI writes and plots it."""
    for i, row in enumerate(_list(rows, "history")):
        what = f"history row {i + 1}"
        if not isinstance(row, dict) or row.get("epoch") != i + 1:
            raise ValueError(f"{what} should be a record of epoch {i + 1}; got {str(row)[:80]!r}")
        for key in HISTORY_NUMBERS:
            _number(row.get(key), f"{what}'s {key}")
        if row.get("val_elbo") is not None:
            _number(row["val_elbo"], f"{what}'s val_elbo")
        if "active_units" in row or "kl_per_dim" in row:
            _number(row.get("active_units"), f"{what}'s active_units", integer=True)
            kl = _list(row.get("kl_per_dim"), f"{what}'s kl_per_dim")
            if len(kl) != latent_dim:
                raise ValueError(f"{what}'s kl_per_dim has {len(kl)} entries for {latent_dim} latent dimensions")
            for v in kl:
                _number(v, f"{what}'s kl_per_dim")
    return rows


def _optimizer(spec, arrays, params, xp):
    """Rebuild the optimiser through its constructor, so every hyperparameter is checked again."""
    if not isinstance(spec, dict) or spec.get("name") not in OPTIMIZERS:
        raise ValueError(f"its optimiser should be one of {', '.join(OPTIMIZERS)}; got {str(spec)[:80]!r}")
    spec = dict(spec)
    name, t = spec.pop("name"), spec.pop("t", None)
    if name == "adam" and "b1" in spec:  # format 1 stored Adam's betas one by one
        spec["betas"] = (spec.pop("b1"), spec.pop("b2", None))
    opt = OPTIMIZERS[name](**spec)
    opt.load_state_dict({"t": t, **{key.split(".", 1)[1]: a for key, a in arrays.items()
                                    if key.startswith("optimizer.")}}, like=params)
    opt.to(xp)
    return opt


def _partial_epoch(place, arrays, epochs_done):
    """The place in an unfinished epoch: a permutation of the data, a step within it, and the running totals."""
    if not isinstance(place, dict):
        raise ValueError("partial_epoch is not a JSON object")
    n = check_positive("partial_epoch's n", place.get("n"), integer=True)
    batch_size = check_positive("partial_epoch's batch_size", place.get("batch_size"), integer=True)
    step = check_positive("partial_epoch's step", place.get("step"), integer=True, allow_zero=True)
    totals = _list(place.get("totals"), "partial_epoch's totals")
    perm = arrays["partial_epoch.perm"]
    if place.get("epoch") != epochs_done + 1:
        raise ValueError(f"the unfinished epoch should be epoch {epochs_done + 1}; got {place.get('epoch')!r}")
    if perm.shape != (n,) or perm.dtype.kind not in "iu" or not np.array_equal(np.sort(perm), np.arange(n)):
        raise ValueError(f"partial_epoch's order of examples is not a permutation of its n = {n} examples")
    if step > -(-n // batch_size) or len(totals) != 3:  # whole-number arithmetic: n may be any size here
        raise ValueError("partial_epoch's step or totals do not fit its data")
    return {"epoch": place["epoch"], "n": n, "batch_size": batch_size, "step": step, "perm": perm.astype(np.int64),
            "totals": np.array([_number(v, "partial_epoch's totals") for v in totals], dtype=np.float64),
            "seconds": float(_number(place.get("seconds"), "partial_epoch's seconds"))}
