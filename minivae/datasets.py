"""Data: the bundled 8x8 digits, MNIST and Fashion-MNIST from IDX files, binarisation and splits.

Everything returns NumPy arrays on the host: ``x`` as float32 of shape
``(N, D)`` with pixels in [0, 1], ``y`` as int64 labels. Models move data to
their own backend.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .archive import MAX_INFLATION
from .tempfiles import make_temporary, remove_abandoned
from .validation import check_choice

_DATA = Path(__file__).with_name("data")
SPLITS = ("train", "test")

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Each published file: (SHA-256, size in bytes). A download stops at that size.
SOURCES: dict[str, dict[str, Any]] = {
    "digits": {
        "mirrors": ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                    "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        "files": {
            "train-images-idx3-ubyte.gz": ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
            "train-labels-idx1-ubyte.gz": ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
            "t10k-images-idx3-ubyte.gz": ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
            "t10k-labels-idx1-ubyte.gz": ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
        },
    },
    "fashion": {
        "mirrors": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        "files": {
            "train-images-idx3-ubyte.gz": ("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", 26421880),
            "train-labels-idx1-ubyte.gz": ("a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", 29515),
            "t10k-images-idx3-ubyte.gz": ("346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", 4422102),
            "t10k-labels-idx1-ubyte.gz": ("67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5148),
        },
    },
}

# IDX type codes -> big-endian NumPy dtypes
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def load_digits(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """The bundled 8x8 digits (UCI, CC BY 4.0): ``(x, y)`` with ``x`` (N, 64) in [0, 1].

    ``split`` is ``"train"`` (1,497 images) or ``"test"`` (300), a fixed split.
    Works offline; see ``minivae/data/README.md`` for provenance.
    """
    split = check_choice("split", split, SPLITS)
    with np.load(_DATA / "digits.npz", allow_pickle=False) as f:
        x, y = f[f"x_{split}"], f[f"y_{split}"]
    return x.astype(np.float32) / 16, y.astype(np.int64)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (gzipped or raw) into a NumPy array of its stored shape and type.

    The header is read first and checked against the file before the data
    is: a gzipped file may not declare more than ``MAX_INFLATION`` times its
    own size, so memory stays in proportion to the file. Raises
    ``ValueError`` for a wrong magic number, an unknown type code, a damaged
    gzip stream, or a truncated or overlong file.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"  # gzip's magic bytes
        raw.seek(0)
        try:
            with gzip.GzipFile(fileobj=raw) if gzipped else raw as f:
                return _read_idx(f, path, size, gzipped)
        except (OSError, EOFError, zlib.error) as err:
            if not gzipped:
                raise
            raise ValueError(f"{path}: damaged gzip stream ({err}); delete it and fetch it again") from None


def _read_idx(f, path, size, gzipped):
    magic = f.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
        raise ValueError(f"{path}: not an IDX file (its magic number {magic.hex()} should start with 0000)")
    type_code, ndim = magic[2], magic[3]
    if type_code not in _IDX_TYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{type_code:02x}; expected one of "
                         + ", ".join(f"0x{c:02x}" for c in _IDX_TYPES))
    dims = f.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(dims, dtype=">u4"))
    dtype = np.dtype(_IDX_TYPES[type_code])
    expected = math.prod(shape) * dtype.itemsize
    if gzipped and expected > MAX_INFLATION * size:
        raise ValueError(f"{path}: its header promises {expected:,} bytes of data for shape {shape}, more than "
                         f"{MAX_INFLATION} times the {size:,}-byte gzip file: refused as damaged or a "
                         "decompression bomb. If the file is genuine, decompress it (gunzip) and read that")
    data = f.read(expected) if gzipped or expected <= size else b""
    extra = len(f.read(1))  # reading on to the end also checks a gzip stream's checksum
    if len(data) != expected or extra:
        held = "fewer" if len(data) != expected else "more"
        raise ValueError(f"{path}: truncated or damaged: the header promises {expected} bytes of data "
                         f"for shape {shape}, the file holds {held}")
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def default_cache_dir() -> Path:
    """``$MINIVAE_CACHE`` if set, else ``~/.cache/minivae``."""
    return Path(os.environ.get("MINIVAE_CACHE", Path.home() / ".cache" / "minivae"))


def load_mnist(root: str | os.PathLike[str] | None = None, kind: str = "digits", split: str = "train",
               download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """MNIST (``kind="digits"``) or Fashion-MNIST (``kind="fashion"``) from IDX files.

    Parameters
    ----------
    root : path, optional
        Folder holding the four IDX files, gzipped or not, under their standard
        names. Defaults to ``<cache>/mnist`` or ``<cache>/fashion`` (see
        :func:`default_cache_dir`).
    split : {"train", "test"}
    download : bool
        Fetch missing files into ``root``, verifying their SHA-256, and fetch
        again any published (``.gz``) file there whose SHA-256 is wrong.
        Nothing is fetched unless this is True.

    A published ``.gz`` file in the cache, or in ``root`` when downloading, is
    checked against its SHA-256 before it is read. Every file is checked to
    hold 28x28 images of unsigned bytes and labels 0 to 9.

    Returns
    -------
    x : (N, 784) float32 in [0, 1]
    y : (N,) int64
    """
    kind = check_choice("kind", kind, tuple(SOURCES))
    split = check_choice("split", split, SPLITS)
    root = Path(root) if root is not None else default_cache_dir() / ("mnist" if kind == "digits" else "fashion")
    in_cache = download or root == default_cache_dir() / ("mnist" if kind == "digits" else "fashion")
    paths = []
    for stem in MNIST_FILES[split]:
        path = _find(root, stem)
        if path is not None and in_cache and path.name.endswith(".gz"):
            path = _verified(kind, path, download)
        if path is None and download:
            path = _download(kind, stem + ".gz", root)
        if path is None:
            raise FileNotFoundError(
                f"{stem}(.gz) is not in {root}. Put the four {kind} IDX files there "
                f"(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
                f"t10k-labels-idx1-ubyte.gz), or pass download=True (the CLI: --download) to fetch them"
            )
        paths.append(path)
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    for path, a in zip(paths, (images, labels)):
        if a.dtype != np.uint8:
            raise ValueError(f"{path}: {kind} files hold unsigned bytes (IDX type 0x08); this one holds {a.dtype}")
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{root}: images {images.shape} and labels {labels.shape} do not form a data set "
                         "of 28x28 images with one label each")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{paths[1]}: labels must lie in 0..9; found {int(labels.max())}")
    x = images.reshape(len(images), -1).astype(np.float32) / 255
    return x, labels.astype(np.int64)


def _find(root, stem):
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    return None


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified(kind, path, download):
    """``path`` if it is the published file; None (to fetch it again) if not and ``download``; else an error."""
    expected = SOURCES[kind]["files"].get(path.name, (None,))[0]
    if expected is None or _sha256(path) == expected:
        return path
    if download:
        return None
    raise ValueError(f"{path} is not the published {path.name}: its SHA-256 differs. Delete it, "
                     "or pass download=True (the CLI: --download) to fetch it again")


def _download(kind, name, root):
    """Fetch ``name`` into ``root`` through a temporary file, reading at most its published size,
    and keep it only if its SHA-256 matches."""
    expected, size = SOURCES[kind]["files"][name]
    root.mkdir(parents=True, exist_ok=True)
    remove_abandoned(root)  # the partial downloads of processes that were killed
    errors = []
    for mirror in SOURCES[kind]["mirrors"]:
        fd, tmp = make_temporary(root)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(mirror + name, timeout=60) as response:
                left = size + 1  # one byte more than published shows that the file is too long
                while left and (block := response.read(min(left, 1 << 20))):
                    out.write(block)
                    left -= len(block)
            if left == 0:
                raise ValueError(f"the server sent more than the published {size:,} bytes")
            got = _sha256(tmp)
            if got != expected:
                raise ValueError(f"SHA-256 {got} does not match the published {expected}")
            os.replace(tmp, root / name)
            return root / name
        except Exception as err:  # try the next mirror; report all failures together
            errors.append(f"{mirror}{name}: {err}")
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    raise OSError(f"could not download {name}:\n  " + "\n  ".join(errors)
                  + f"\nDownload it by hand into {root}, or check the network.")


def binarize(x: Any, method: str = "threshold", threshold: float = 0.5,
             rng: int | np.random.Generator | None = None) -> np.ndarray:
    """Static binarisation of pixel intensities in [0, 1].

    ``"threshold"``: ``x > threshold``. ``"sample"``: one fixed Bernoulli draw,
    ``x_ij ~ Bernoulli(x_ij)``, from ``rng`` (a seed or Generator). For a fresh
    draw every epoch (dynamic binarisation) pass ``binarize="dynamic"`` to ``fit``.
    """
    method = check_choice("binarisation method", method, ("threshold", "sample"))
    if getattr(getattr(x, "dtype", None), "kind", "f") not in "biuf":
        raise ValueError(f"binarize takes an array of numbers; got {x.dtype}")
    try:
        x = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError, OverflowError) as err:
        raise ValueError(f"binarize takes an array of pixel intensities in [0, 1]: {err}") from None
    if not np.isfinite(x).all():
        raise ValueError("binarize takes pixel intensities in [0, 1]; x holds NaN or inf")
    if x.size and not (0 <= x.min() and x.max() <= 1):
        raise ValueError("binarize takes pixel intensities in [0, 1] (for 8-bit pixels divide by 255 first); got "
                         f"values from {x.min():g} to {x.max():g}")
    if method == "threshold":
        if not (isinstance(threshold, (int, float, np.integer, np.floating)) and 0 <= threshold <= 1):
            raise ValueError(f"threshold must be a number in [0, 1]; got {threshold!r}")
        return (x > threshold).astype(np.float32)
    rng = np.random.default_rng(rng)
    return (rng.random(x.shape, dtype=np.float32) < x).astype(np.float32)


def train_val_split(x: Any, y: Any = None, val_fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, ...]:
    """A seeded random split of the rows: ``(x_train, x_val)`` or ``(x_train, y_train, x_val, y_val)``.

    ``x`` and ``y`` are taken as NumPy arrays (a table's rows are its
    examples) and must have the same number of rows.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must lie strictly between 0 and 1; got {val_fraction!r}")
    x = np.asarray(x)
    if x.ndim == 0 or len(x) < 2:
        raise ValueError(f"x needs at least 2 rows to split; got shape {x.shape}")
    if y is not None:
        y = np.asarray(y)
        if y.ndim == 0 or len(y) != len(x):
            raise ValueError(f"x has {len(x)} rows but y has {y.shape[0] if y.ndim else 'no'} rows; "
                             "they must match, one label per example")
    n = len(x)
    perm = np.random.default_rng(seed).permutation(n)
    n_val = min(n - 1, max(1, int(round(n * val_fraction))))  # neither part empty
    val, train = perm[:n_val], perm[n_val:]
    if y is None:
        return x[train], x[val]
    return x[train], y[train], x[val], y[val]
