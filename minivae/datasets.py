"""Data: the bundled 8x8 digits, MNIST and Fashion-MNIST from IDX files, binarisation and splits.

Everything returns NumPy arrays on the host: ``x`` as float32 of shape
``(N, D)`` with pixels in [0, 1], ``y`` as int64 labels. Models move data to
their own backend.
"""

import gzip
import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from .validation import check_choice

_DATA = Path(__file__).with_name("data")
SPLITS = ("train", "test")

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SOURCES = {
    "digits": {
        "mirrors": ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                    "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        "sha256": {
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
    },
    "fashion": {
        "mirrors": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        "sha256": {
            "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
    },
}

# IDX type codes -> big-endian NumPy dtypes
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def load_digits(split="train"):
    """The bundled 8x8 digits (UCI, CC BY 4.0): ``(x, y)`` with ``x`` (N, 64) in [0, 1].

    ``split`` is ``"train"`` (1,497 images) or ``"test"`` (300), a fixed split.
    Works offline; see ``minivae/data/README.md`` for provenance.
    """
    split = check_choice("split", split, SPLITS)
    with np.load(_DATA / "digits.npz", allow_pickle=False) as f:
        x, y = f[f"x_{split}"], f[f"y_{split}"]
    return x.astype(np.float32) / 16, y.astype(np.int64)


def read_idx(path):
    """Read one IDX file (gzipped or raw) into a NumPy array of its stored shape and type.

    Raises ``ValueError`` for a wrong magic number, an unknown type code, or a
    truncated or overlong file.
    """
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":  # gzip's magic bytes
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise ValueError(f"{path}: damaged gzip stream ({err}); delete it and fetch it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (its magic number {raw[:4].hex()} should start with 0000)")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_TYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{type_code:02x}; expected one of "
                         + ", ".join(f"0x{c:02x}" for c in _IDX_TYPES))
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[type_code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: truncated or damaged: the header promises {expected} bytes of data "
                         f"for shape {shape}, the file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def default_cache_dir():
    """``$MINIVAE_CACHE`` if set, else ``~/.cache/minivae``."""
    return Path(os.environ.get("MINIVAE_CACHE", Path.home() / ".cache" / "minivae"))


def load_mnist(root=None, kind="digits", split="train", download=False):
    """MNIST (``kind="digits"``) or Fashion-MNIST (``kind="fashion"``) from IDX files.

    Parameters
    ----------
    root : path, optional
        Folder holding the four IDX files, gzipped or not, under their standard
        names. Defaults to ``<cache>/mnist`` or ``<cache>/fashion`` (see
        :func:`default_cache_dir`).
    split : {"train", "test"}
    download : bool
        Fetch missing files into ``root``, verifying their SHA-256. Nothing is
        fetched unless this is True.

    Returns
    -------
    x : (N, 784) float32 in [0, 1]
    y : (N,) int64
    """
    kind = check_choice("kind", kind, tuple(SOURCES))
    split = check_choice("split", split, SPLITS)
    root = Path(root) if root is not None else default_cache_dir() / ("mnist" if kind == "digits" else "fashion")
    paths = []
    for stem in MNIST_FILES[split]:
        path = _find(root, stem)
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
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{root}: images {images.shape} and labels {labels.shape} do not form a data set")
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


def _download(kind, name, root):
    """Fetch ``name`` into ``root`` through a temporary file; keep it only if its SHA-256 matches."""
    expected = SOURCES[kind]["sha256"][name]
    root.mkdir(parents=True, exist_ok=True)
    errors = []
    for mirror in SOURCES[kind]["mirrors"]:
        fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(mirror + name, timeout=60) as response:
                while block := response.read(1 << 20):
                    out.write(block)
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


def binarize(x, method="threshold", threshold=0.5, rng=None):
    """Static binarisation of pixel intensities in [0, 1].

    ``"threshold"``: ``x > threshold``. ``"sample"``: one fixed Bernoulli draw,
    ``x_ij ~ Bernoulli(x_ij)``, from ``rng`` (a seed or Generator). For a fresh
    draw every epoch (dynamic binarisation) pass ``binarize="dynamic"`` to ``fit``.
    """
    method = check_choice("binarisation method", method, ("threshold", "sample"))
    x = np.asarray(x, dtype=np.float32)
    if method == "threshold":
        return (x > threshold).astype(np.float32)
    rng = np.random.default_rng(rng)
    return (rng.random(x.shape, dtype=np.float32) < x).astype(np.float32)


def train_val_split(x, y=None, val_fraction=0.1, seed=0):
    """A seeded random split: ``(x_train, x_val)`` or ``(x_train, y_train, x_val, y_val)``."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must lie strictly between 0 and 1; got {val_fraction!r}")
    n = len(x)
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * val_fraction)))
    val, train = perm[:n_val], perm[n_val:]
    if y is None:
        return x[train], x[val]
    return x[train], y[train], x[val], y[val]
