"""Checkpoints: exact round trips across backends, atomic writes, and refusal of bad files."""

import json
import os

import numpy as np
import pytest

from minivae import VAE, checkpoint, to_numpy


def trained(backend="numpy", **kwargs):
    model = VAE(8, hidden_dims=(6,), latent_dim=2, backend=backend, seed=2, **kwargs)
    model.fit(np.random.default_rng(0).random((40, 8)), epochs=2, batch_size=10, progress=False)
    return model


def test_round_trip_gives_the_same_elbo(tmp_path, rng):
    model = trained(likelihood="gaussian", decoder_std="learned")
    path = tmp_path / "m.npz"
    model.save(path)
    loaded = VAE.load(path)
    x, eps = rng.random((5, 8)), rng.standard_normal((5, 2))
    assert np.array_equal(to_numpy(loaded.elbo(x, eps=eps)), to_numpy(model.elbo(x, eps=eps)))
    assert loaded.get_config() == model.get_config()
    assert loaded.history_ == model.history_
    assert loaded.rng_.bit_generator.state == model.rng_.bit_generator.state
    assert loaded.optimizer_.t == model.optimizer_.t


def test_saved_on_one_backend_loaded_on_the_other(tmp_path, backend, rng):
    x, eps = rng.random((5, 8)), rng.standard_normal((5, 2))
    device_model = trained(backend)
    device_model.save(tmp_path / "a.npz")
    host_model = VAE.load(tmp_path / "a.npz", backend="numpy")
    assert np.allclose(to_numpy(host_model.elbo(x, eps=eps)), to_numpy(device_model.elbo(x, eps=eps)), rtol=1e-6)
    host_model.save(tmp_path / "b.npz")
    back = VAE.load(tmp_path / "b.npz", backend=backend)
    assert back.backend == backend
    assert np.array_equal(to_numpy(back.flat_params), to_numpy(device_model.flat_params))
    assert back.optimizer_.state["m"].shape == back.flat_params.shape


def test_an_interrupted_save_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    model = trained()
    model.save(path)
    before = path.read_bytes()

    def crash(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # the user hits Ctrl-C mid-write
    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        model.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.npz"]  # no temporary file left behind


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "m.npz"
    trained().save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        VAE.load(path)


def test_foreign_files_are_refused(tmp_path):
    np.savez(tmp_path / "other.npz", weights=np.ones(3))
    with pytest.raises(ValueError, match="not a minivae checkpoint"):
        VAE.load(tmp_path / "other.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        VAE.load(tmp_path / "text.npz")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        VAE.load(tmp_path / "missing.npz")


def rewrite(src, dst, **changes):
    with np.load(src, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays.update(changes)
    with open(dst, "wb") as out:  # np.savez on a file object keeps object arrays as pickles
        np.savez(out, **arrays)


def test_mismatched_files_are_refused(tmp_path):
    src = tmp_path / "m.npz"
    model = trained()
    model.save(src)
    config = model.get_config()
    cases = {
        "params": dict(params=np.ones(5, dtype=np.float32)),
        "dtype": dict(params=to_numpy(model.flat_params).astype(np.float64)),
        "config": dict(config=np.array(json.dumps({**config, "latent_dim": 3}))),
        "optimizer": {"optimizer.m": np.ones(4, dtype=np.float32)},
        "bad-json": dict(config=np.array("{not json")),
    }
    for name, change in cases.items():
        rewrite(src, tmp_path / f"{name}.npz", **change)
        with pytest.raises(ValueError, match="mismatched or damaged"):
            VAE.load(tmp_path / f"{name}.npz")


def test_pickle_bearing_files_are_refused(tmp_path):
    src = tmp_path / "m.npz"
    trained().save(src)
    rewrite(src, tmp_path / "evil.npz", history=np.array([{"payload": "code"}], dtype=object))
    with pytest.raises(ValueError, match="never loads pickles"):
        VAE.load(tmp_path / "evil.npz")


def test_a_marked_file_without_a_version_is_refused(tmp_path):
    np.savez(tmp_path / "odd.npz", format=np.array(checkpoint.FORMAT))
    with pytest.raises(ValueError, match="mismatched or damaged"):
        VAE.load(tmp_path / "odd.npz")


def test_newer_format_is_refused(tmp_path):
    src = tmp_path / "m.npz"
    trained().save(src)
    rewrite(src, tmp_path / "new.npz", version=np.array(checkpoint.VERSION + 1))
    with pytest.raises(ValueError, match="newer minivae"):
        VAE.load(tmp_path / "new.npz")
