"""Bundled digits, the IDX reader (on files the tests write), verified downloads, binarisation, splits."""

import collections
import gzip
import hashlib
import io
import subprocess
import sys
import urllib.request
import zlib

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


def publish(monkeypatch, folder, kind="digits"):
    """Make the files in ``folder`` the published ones (their SHA-256 and sizes), with one fake mirror."""
    files = {p.name: [hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size] for p in folder.glob("*.gz")}
    monkeypatch.setitem(datasets.SOURCES, kind, {"mirrors": ("https://mirror/",), "files": files})
    return files


def test_default_folder_is_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIVAE_CACHE", str(tmp_path))
    (tmp_path / "fashion").mkdir()
    write_mnist(tmp_path / "fashion")
    publish(monkeypatch, tmp_path / "fashion", "fashion")
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
    sums = {name: [hashlib.sha256(data).hexdigest(), len(data)] for name, data in served.items()}
    monkeypatch.setitem(datasets.SOURCES, "digits", {"mirrors": ("https://mirror/",), "files": sums})
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stray = tmp_path / f".minivae-{int(dead.stdout)}-abc.tmp"  # the partial download of a process killed outright
    stray.write_bytes(b"\x1f\x8b half")
    x, _ = load_mnist(tmp_path, split="test", download=True)
    assert x.shape == (2, 784) and (tmp_path / "t10k-images-idx3-ubyte.gz").read_bytes() == payload
    assert not stray.exists()

    sums["t10k-images-idx3-ubyte.gz"][0] = "0" * 64  # a file that does not match what was published
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


def test_a_gzip_bomb_is_refused_before_it_is_inflated(tmp_path):
    import tracemalloc
    header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (100_000, 200, 200))  # 4 GB of zeros
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # a gzip stream, written piece by piece
    bomb = compressor.compress(header) + b"".join(compressor.compress(bytes(1 << 24)) for _ in range(4))
    (tmp_path / "bomb.gz").write_bytes(bomb + compressor.flush())  # 64 MiB of zeros in about 65 kB
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="decompression bomb"):
            read_idx(tmp_path / "bomb.gz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, peak


def test_a_raw_idx_header_cannot_make_read_idx_allocate(tmp_path):
    header = bytes([0, 0, 0x0E, 2]) + (1 << 31).to_bytes(4, "big") + (1 << 31).to_bytes(4, "big")  # 32 EB
    (tmp_path / "huge.idx").write_bytes(header + bytes(64))
    with pytest.raises(ValueError, match="truncated or damaged"):
        read_idx(tmp_path / "huge.idx")


@pytest.mark.parametrize("images, labels, message", [
    (np.zeros((2, 28, 28), np.int8), np.zeros(2, np.uint8), "unsigned bytes.*int8"),
    (np.full((2, 28, 28), np.nan, np.float32), np.zeros(2, np.uint8), "unsigned bytes.*float32"),
    (np.zeros((2, 28, 28), np.uint8), np.array([3, 10], np.uint8), "labels must lie in 0..9; found 10"),
    (np.zeros((2, 8, 8), np.uint8), np.zeros(2, np.uint8), "28x28 images"),
])
def test_load_mnist_checks_what_the_files_hold(tmp_path, images, labels, message):
    codes = {np.dtype(np.int8): 0x09, np.dtype(np.float32): 0x0D, np.dtype(np.uint8): 0x08}
    for stem, array in zip(datasets.MNIST_FILES["test"], (images, labels)):
        (tmp_path / stem).write_bytes(idx_bytes(array, codes[array.dtype]))
    with pytest.raises(ValueError, match=message):
        load_mnist(tmp_path, split="test")


def test_a_wrong_file_in_the_cache_is_caught_and_fetched_again_on_request(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIVAE_CACHE", str(tmp_path))
    folder = tmp_path / "mnist"
    folder.mkdir()
    write_mnist(folder)
    published = {name: (folder / name).read_bytes() for name in publish(monkeypatch, folder)}
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.ones((5, 28, 28), np.uint8))))
    with pytest.raises(ValueError, match="not the published t10k-images-idx3-ubyte.gz.*download=True"):
        load_mnist(split="test")
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: FakeResponse(published[url.rsplit("/", 1)[1]]))
    x, _ = load_mnist(split="test", download=True)
    assert x.max() > 1 / 255  # the published images, not the planted ones


def test_a_download_stops_at_the_published_size(tmp_path, monkeypatch):
    served = []

    class EndlessResponse(FakeResponse):
        def read(self, n=-1):
            served.append(n)
            return bytes(n)

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: EndlessResponse())
    monkeypatch.setitem(datasets.SOURCES, "digits", {"mirrors": ("https://mirror/",), "files": {
        "t10k-images-idx3-ubyte.gz": ["0" * 64, 15_000], "t10k-labels-idx1-ubyte.gz": ["0" * 64, 100]}})
    with pytest.raises(OSError, match="more than the published 15,000 bytes"):
        load_mnist(tmp_path, split="test", download=True)
    assert sum(served) == 15_001 and list(tmp_path.iterdir()) == []


class Table:
    """Like a pandas DataFrame: ``table[idx]`` picks columns, ``np.asarray(table)`` gives the rows."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, columns):
        return self.rows[:, columns]

    def __array__(self, dtype=None, copy=None):
        return self.rows


def test_train_val_split_splits_rows_and_needs_one_label_per_row():
    rows = np.arange(40).reshape(20, 2)
    train, val = train_val_split(Table(rows), val_fraction=0.25)
    assert train.shape == (15, 2) and val.shape == (5, 2)
    assert sorted(np.concatenate([train, val])[:, 0]) == list(range(0, 40, 2))
    with pytest.raises(ValueError, match="x has 20 rows but y has 21 rows"):
        train_val_split(rows, np.arange(21))
    with pytest.raises(ValueError, match="at least 2 rows"):
        train_val_split(rows[:1])
    assert len(train_val_split(rows[:2], val_fraction=0.9)[0]) == 1  # neither part is empty


def test_fuzzed_idx_files_are_refused_clearly_or_read_unchanged(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    raw = idx_bytes(images)
    rng = np.random.default_rng(7)
    outcomes = collections.Counter()
    for i in range(300):
        data = bytearray(gzip.compress(raw) if i % 2 else raw)
        if i % 3 == 0:
            for pos in rng.integers(0, len(data), size=rng.integers(1, 5)):
                data[pos] ^= int(rng.integers(1, 256))
        elif i % 3 == 1:
            data = data[:int(rng.integers(0, len(data)))]
        else:
            start = int(rng.integers(0, len(data)))
            data[start:start + 8] = rng.integers(0, 256, size=8, dtype=np.uint8).tobytes()
        (tmp_path / "f.idx").write_bytes(bytes(data))
        try:
            out = read_idx(tmp_path / "f.idx")
        except ValueError as err:
            assert "f.idx" in str(err)
            outcomes["refused"] += 1
        else:
            assert out.shape == images.shape and out.dtype == images.dtype, f"case {i}"
            if i % 2:  # a gzip stream's checksum catches any change to the pixels
                assert np.array_equal(out, images), f"case {i}"
            # in a raw file a changed pixel byte is just another image: nothing can tell
            outcomes["identical" if np.array_equal(out, images) else "raw pixels changed"] += 1
    assert outcomes["refused"] > 150, outcomes
