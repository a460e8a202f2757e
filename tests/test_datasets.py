"""Bundled digits, the IDX reader (on files the tests write), verified downloads, binarisation, splits."""

import gzip
import hashlib
import io
import urllib.request

import numpy as np
import pytest

from minivae import datasets
from minivae.datasets import binarize, load_digits, load_mnist, read_idx, train_val_split


def idx_bytes(array, type_code=0x08):
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(datasets._IDX_TYPES[type_code]).tobytes()


def write_mnist(folder, n=5, gz=True):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    for split in ("train", "test"):
        for stem, arr in zip(datasets.MNIST_FILES[split], (images, labels)):
            data = idx_bytes(arr)
            (folder / (stem + (".gz" if gz else ""))).write_bytes(gzip.compress(data) if gz else data)
    return images, labels


def test_bundled_digits():
    x, y = load_digits()
    x_test, y_test = load_digits("test")
    assert x.shape == (1497, 64) and x_test.shape == (300, 64)
    assert x.dtype == np.float32 and x.min() == 0 and x.max() == 1
    assert set(np.unique(y)) == set(range(10)) and y.dtype == np.int64
    assert np.allclose(x * 16, np.round(x * 16))  # the original counts 0..16
    assert len(y) + len(y_test) == 1797
    with pytest.raises(ValueError, match="unknown split 'val'"):
        load_digits("val")


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_from_a_folder(tmp_path, gz):
    images, labels = write_mnist(tmp_path, gz=gz)
    x, y = load_mnist(tmp_path, split="test")
    assert x.shape == (5, 784) and x.dtype == np.float32
    assert np.allclose(x, images.reshape(5, -1) / 255)
    assert np.array_equal(y, labels)


@pytest.mark.parametrize("type_code, dtype", [(0x08, np.uint8), (0x0B, np.int16), (0x0D, np.float32), (0x0E, np.float64)])
def test_read_idx_types(tmp_path, type_code, dtype):
    arr = np.arange(24).reshape(2, 3, 4).astype(dtype)
    (tmp_path / "a.idx").write_bytes(idx_bytes(arr, type_code))
    out = read_idx(tmp_path / "a.idx")
    assert out.shape == (2, 3, 4) and np.array_equal(out, arr)


def test_read_idx_rejects_broken_files(tmp_path):
    good = idx_bytes(np.zeros((3, 4), dtype=np.uint8))
    cases = {
        "truncated": (good[:-3], "truncated or damaged"),
        "overlong": (good + b"\0", "truncated or damaged"),
        "magic": (b"\x01\x02" + good[2:], "not an IDX file"),
        "type": (good[:2] + b"\x07" + good[3:], "unknown IDX type code 0x07"),
        "header": (good[:6], "truncated IDX header"),
        "gzip": (gzip.compress(good)[:-8], "damaged gzip stream"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=message):
            read_idx(tmp_path / name)


def test_missing_files_say_where_to_put_them(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("no download was asked for")
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(FileNotFoundError, match=f"not in {tmp_path}.*download=True"):
        load_mnist(tmp_path)


def test_default_folder_is_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIVAE_CACHE", str(tmp_path))
    (tmp_path / "fashion").mkdir()
    write_mnist(tmp_path / "fashion")
    assert load_mnist(kind="fashion")[0].shape == (5, 784)


class FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_verifies_the_checksum(tmp_path, monkeypatch):
    payload = gzip.compress(idx_bytes(np.zeros((2, 28, 28), dtype=np.uint8)))
    labels = gzip.compress(idx_bytes(np.zeros(2, dtype=np.uint8)))
    served = {"t10k-images-idx3-ubyte.gz": payload, "t10k-labels-idx1-ubyte.gz": labels}
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: FakeResponse(served[url.rsplit("/", 1)[1]]))
    sums = {name: hashlib.sha256(data).hexdigest() for name, data in served.items()}
    monkeypatch.setitem(datasets.SOURCES, "digits", {"mirrors": ("https://mirror/",), "sha256": sums})
    x, _ = load_mnist(tmp_path, split="test", download=True)
    assert x.shape == (2, 784) and (tmp_path / "t10k-images-idx3-ubyte.gz").read_bytes() == payload

    sums["t10k-images-idx3-ubyte.gz"] = "0" * 64  # a file that does not match what was published
    other = tmp_path / "other"
    with pytest.raises(OSError, match="does not match the published"):
        load_mnist(other, split="test", download=True)
    assert list(other.iterdir()) == []  # nothing half-downloaded or unverified is kept


def test_threshold_binarisation():
    assert np.array_equal(binarize(np.array([[0.2, 0.5, 0.9]])), [[0, 0, 1]])


def test_sampled_binarisation_is_bernoulli():
    p = np.full((20000, 3), [0.1, 0.5, 0.8], dtype=np.float32)
    b = binarize(p, "sample", rng=0)
    assert set(np.unique(b)) <= {0.0, 1.0}
    assert np.allclose(b.mean(0), [0.1, 0.5, 0.8], atol=0.02)
    assert np.array_equal(b, binarize(p, "sample", rng=0))  # seeded: one fixed draw


def test_train_val_split():
    x, y = np.arange(100)[:, None], np.arange(100)
    xt, yt, xv, yv = train_val_split(x, y, 0.2, seed=1)
    assert len(xv) == 20 and len(xt) == 80
    assert set(yt).isdisjoint(yv) and set(yt) | set(yv) == set(range(100))
    assert np.array_equal(xv[:, 0], yv)
    assert np.array_equal(train_val_split(x, None, 0.2, seed=1)[1], xv)
    with pytest.raises(ValueError, match="between 0 and 1"):
        train_val_split(x, y, 1.5)
