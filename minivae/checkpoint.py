"""Checkpoints: one ``.npz`` per model, written atomically and read without pickles.

A checkpoint holds the configuration (JSON text), the parameter vector, the
optimiser's state, the random generator's state and the training history, so
training resumed from it follows exactly the path it would have followed
without the break.
"""

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .backend import to_backend, to_numpy
from .optim import OPTIMIZERS

FORMAT = "minivae-checkpoint"
VERSION = 1


def save(model, path):
    """Write ``model`` to ``path`` (an ``.npz`` file).

    The data goes to a temporary file in the same folder, is flushed to disk,
    and only then renamed over ``path``: an interrupted save leaves any
    existing checkpoint intact and no partial file behind.
    """
    path = Path(path)
    arrays = {
        "format": np.array(FORMAT), "version": np.array(VERSION),
        "config": np.array(json.dumps(model.get_config())),
        "params": to_numpy(model.flat_params),
        "rng_state": np.array(json.dumps(model.rng_.bit_generator.state)),
        "history": np.array(json.dumps(model.history_)),
    }
    opt = model.optimizer_
    if opt is not None:
        state = opt.state_dict()
        hyper = {k: v for k, v in vars(opt).items() if k not in ("state", "t") and not k.startswith("_")}
        arrays["optimizer"] = np.array(json.dumps({"name": type(opt).__name__.lower(), "t": state.pop("t"), **hyper}))
        arrays.update({f"optimizer.{k}": to_numpy(v) for k, v in state.items()})

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException:
        os.remove(tmp)
        raise


def load(path, backend=None):
    """Read a checkpoint written by :func:`save` onto ``backend`` (``"numpy"``, ``"cupy"``, ...).

    Raises ``ValueError`` for a truncated or non-``.npz`` file, a file not
    written by minivae, one whose parts do not fit together, or one holding
    object arrays (minivae never unpickles).
    """
    from .model import VAE

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):  # a bare .npy array, say
            raise ValueError("a single array, not an archive")
    except (ValueError, zipfile.BadZipFile, OSError, EOFError) as err:
        raise ValueError(f"{path} is not a readable checkpoint: truncated or not an .npz file ({err})") from None
    with archive:
        arrays = {}
        for key in archive.files:
            try:
                arrays[key] = archive[key]
            except ValueError:  # NumPy refuses object arrays when allow_pickle=False
                raise ValueError(f"{path} holds object arrays (pickled Python objects) in {key!r}; minivae never "
                                 "loads pickles from files. Re-save the model with minivae.") from None
            except (zipfile.BadZipFile, OSError, EOFError) as err:
                raise ValueError(f"{path} is not a readable checkpoint: truncated or damaged ({err})") from None

    if str(arrays.get("format", "")) != FORMAT:
        raise ValueError(f"{path} is an .npz file but not a minivae checkpoint (no '{FORMAT}' marker)")
    try:
        if int(arrays["version"]) > VERSION:
            raise ValueError(f"it was written by a newer minivae (format {int(arrays['version'])}); upgrade minivae")
        config = json.loads(str(arrays["config"]))
        model = VAE(**config, backend=backend)
        params = arrays["params"]
        if params.shape != (model.n_params,) or params.dtype != model.dtype:
            raise ValueError(f"its parameters ({params.dtype}, {params.shape[0] if params.ndim == 1 else params.shape}) "
                             f"do not fit its configuration ({model.dtype}, {model.n_params})")
        model.flat_params[...] = to_backend(params, model.xp)
        model.rng_.bit_generator.state = json.loads(str(arrays["rng_state"]))
        model.history_ = json.loads(str(arrays["history"]))
        if "optimizer" in arrays:
            model.optimizer_ = _optimizer(json.loads(str(arrays["optimizer"])), arrays, model)
    except (KeyError, TypeError, json.JSONDecodeError, ValueError) as err:
        raise ValueError(f"{path} is a mismatched or damaged checkpoint: {err}") from None
    return model


def _optimizer(spec, arrays, model):
    spec = dict(spec)
    name, t = spec.pop("name"), spec.pop("t")
    opt = OPTIMIZERS[name](lr=spec.pop("lr"))
    vars(opt).update(spec)
    state = {key.split(".", 1)[1]: to_backend(a, model.xp) for key, a in arrays.items() if key.startswith("optimizer.")}
    for key, a in state.items():
        if a.shape != model.flat_params.shape:
            raise ValueError(f"optimiser state {key!r} has shape {a.shape}, the parameters {model.flat_params.shape}")
    opt.load_state_dict({"t": t, **state})
    return opt
