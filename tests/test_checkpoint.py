"""Checkpoints: exact round trips across backends, atomic writes, and refusal of bad files."""

import json
import os

import numpy as np
import pytest

from minivae import VAE, checkpoint, load_digits, to_numpy


def trained(backend="numpy", **kwargs):
    model = VAE(8, hidden_dims=(6,), latent_dim=2, backend=backend, seed=2, **kwargs)
    binary = (np.random.default_rng(0).random((40, 8)) < 0.5).astype(np.float64)  # the default Bernoulli's data
    model.fit(binary, epochs=2, batch_size=10, progress=False)
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
    assert loaded.eval_rng_.bit_generator.state == model.eval_rng_.bit_generator.state
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


def test_numpy_scalars_in_the_configuration_still_save(tmp_path):
    model = VAE(np.int64(8), hidden_dims=np.array([6]), latent_dim=np.int32(2), beta=np.float32(1),
                decoder_std=np.float64(0.5), likelihood="gaussian", seed=np.int64(3))
    model.fit(np.random.default_rng(0).random((20, 8)), epochs=1, lr=np.float32(1e-3), progress=False)
    model.save(tmp_path / "m.npz")
    config = VAE.load(tmp_path / "m.npz").get_config()
    assert config == model.get_config()
    assert all(type(v) in (int, float, str, list, type(None)) for v in config.values())
    assert type(model.optimizer_.lr) is float


def test_a_killed_save_leaves_no_temporary_file_for_long(tmp_path):
    import subprocess
    import sys
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = tmp_path / f".minivae-{int(dead.stdout)}-abc123.tmp"  # what kill -9 during a save leaves
    live = tmp_path / f".minivae-{os.getppid()}-def456.tmp"  # a save still running in another process
    leftover.write_bytes(b"half a checkpoint")
    live.write_bytes(b"being written")
    trained().save(tmp_path / "m.npz")
    assert not leftover.exists() and live.exists()


def test_saved_files_get_the_umask_or_the_replaced_files_mode(tmp_path):
    old = os.umask(0o027)
    try:
        trained().save(tmp_path / "new.npz")
    finally:
        os.umask(old)
    assert (tmp_path / "new.npz").stat().st_mode & 0o777 == 0o640
    (tmp_path / "kept.npz").write_bytes(b"")
    os.chmod(tmp_path / "kept.npz", 0o604)
    trained().save(tmp_path / "kept.npz")
    assert (tmp_path / "kept.npz").stat().st_mode & 0o777 == 0o604


def test_a_name_near_the_length_limit_saves(tmp_path):
    path = tmp_path / ("m" * 251 + ".npz")  # 255 bytes, the most most file systems allow
    trained().save(path)
    assert VAE.load(path).get_config() == trained().get_config()


def crafted(tmp_path, name, config=None, optimizer=None, **arrays):
    """A real checkpoint with some members replaced."""
    model = trained()
    model.save(tmp_path / "src.npz")
    with np.load(tmp_path / "src.npz") as f:
        spec = json.loads(str(f["optimizer"]))
        config = {**json.loads(str(f["config"])), **(config or {})}
    if optimizer is not None:
        spec = {k: v for k, v in {**spec, **optimizer}.items() if v is not None}
        arrays["optimizer"] = np.array(json.dumps(spec))
    rewrite(tmp_path / "src.npz", tmp_path / name, config=np.array(json.dumps(config)), **arrays)
    return tmp_path / name, model


@pytest.mark.parametrize("case, change, message", [
    ("nan-params", lambda m: dict(params=np.full(m.n_params, np.nan, np.float32)), "NaN or inf"),
    ("negative-v", lambda m: {"optimizer.v": -np.ones(m.n_params, np.float32)}, "negative entries"),
    ("nan-m", lambda m: {"optimizer.m": np.full(m.n_params, np.inf, np.float32)}, "NaN or inf"),
    ("b1", lambda m: dict(optimizer=dict(betas=[5, 0.999])), "betas must be two numbers in"),
    ("eps", lambda m: dict(optimizer=dict(eps=-1)), "eps must be"),
    ("fractional-t", lambda m: dict(optimizer=dict(t=2.5)), "step count must be an integer"),
    ("no-state", lambda m: {}, r"Adam after 8 steps keeps the state \['m', 'v'\]; got nothing"),
    ("sgd-with-adam-state", lambda m: dict(optimizer=dict(name="sgd", betas=None, eps=None, momentum=0.9)),
     r"SGD after 8 steps keeps the state \['v'\]; got \['m', 'v'\]"),
    ("damaged-history", lambda m: dict(history=np.array(json.dumps([{"epoch": 1, "loss": "x"}]))), "loss"),
])
def test_crafted_checkpoints_are_refused(tmp_path, case, change, message):
    model = trained()
    parts = change(model)
    if case == "no-state":  # drop Adam's moments but keep its step count
        path, _ = crafted(tmp_path, "src2.npz")
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files if not k.startswith("optimizer.")}
        with open(tmp_path / f"{case}.npz", "wb") as out:
            np.savez(out, **arrays)
        path = tmp_path / f"{case}.npz"
    else:
        path, _ = crafted(tmp_path, f"{case}.npz", **parts)
    with pytest.raises(ValueError, match=message):
        VAE.load(path)


def test_a_small_file_cannot_make_load_allocate_much(tmp_path):
    import tracemalloc
    path, _ = crafted(tmp_path, "big-config.npz", config=dict(hidden_dims=[50000, 50000]))
    with np.load(tmp_path / "src.npz") as f:
        arrays = {k: f[k] for k in f.files}
    (tmp_path / "huge-header.npz").write_bytes(zip_with_member("params.npy", npy_header("<f4", (200_000_000_000,))))
    np.savez_compressed(tmp_path / "bomb.npz", **{**arrays, "params": np.zeros(100_000_000, np.float32)})
    tracemalloc.start()
    try:
        for name, message in [("big-config.npz", "do not fit its configuration"),
                              ("huge-header.npz", r"declares \(200000000000,\) float32"),
                              ("bomb.npz", "decompression bomb")]:
            with pytest.raises(ValueError, match=message):
                VAE.load(tmp_path / name)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, peak  # the bomb's file is 400 kB; it would inflate to 400 MB


def npy_header(descr, shape):
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


def zip_with_member(name, data):
    import io
    import zipfile
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


def test_damage_that_is_not_a_pickle_is_not_called_one(tmp_path):
    (tmp_path / "bad.npz").write_bytes(zip_with_member("format.npy", b"\x93NUMPY\x01\x00\x05\x00{'de"))
    with pytest.raises(ValueError) as error:
        VAE.load(tmp_path / "bad.npz")
    assert "pickle" not in str(error.value) and "not a readable checkpoint" in str(error.value)


def same_model(a, b):
    return (a.get_config() == b.get_config() and np.array_equal(to_numpy(a.flat_params), to_numpy(b.flat_params))
            and a.history_ == b.history_ and a.rng_.bit_generator.state == b.rng_.bit_generator.state
            and a.eval_rng_.bit_generator.state == b.eval_rng_.bit_generator.state
            and a.optimizer_.hyperparameters() == b.optimizer_.hyperparameters() and a.optimizer_.t == b.optimizer_.t
            and all(np.array_equal(to_numpy(a.optimizer_.state[k]), to_numpy(b.optimizer_.state[k]))
                    for k in ("m", "v"))
            and np.array_equal(a.partial_epoch_["perm"], b.partial_epoch_["perm"])
            and a.partial_epoch_["step"] == b.partial_epoch_["step"])


def test_fuzzed_checkpoints_are_refused_clearly_or_load_unchanged(tmp_path):
    model = trained()
    model.partial_epoch_ = {"epoch": 3, "n": 40, "batch_size": 10, "step": 2, "perm": np.arange(40)[::-1],
                            "totals": np.array([1.0, 2.0, 3.0]), "seconds": 0.5}
    model.save(tmp_path / "good.npz")
    good = (tmp_path / "good.npz").read_bytes()
    reference = VAE.load(tmp_path / "good.npz")
    rng = np.random.default_rng(2024)
    outcomes = {"refused": 0, "identical": 0}
    for i in range(300):
        data = bytearray(good)
        kind = i % 3
        if kind == 0:  # flip a few bytes anywhere
            for pos in rng.integers(0, len(data), size=rng.integers(1, 9)):
                data[pos] ^= int(rng.integers(1, 256))
        elif kind == 1:  # cut the file short
            data = data[:int(rng.integers(0, len(data)))]
        else:  # overwrite a run of bytes with random ones
            start = int(rng.integers(0, len(data)))
            data[start:start + 16] = rng.integers(0, 256, size=16, dtype=np.uint8).tobytes()
        path = tmp_path / "fuzzed.npz"
        path.write_bytes(bytes(data))
        try:
            loaded = VAE.load(path)
        except ValueError as err:
            assert str(path) in str(err)
            outcomes["refused"] += 1
        else:
            assert same_model(loaded, reference), f"case {i} loaded a different model"
            outcomes["identical"] += 1
    assert outcomes["refused"] > 200 and sum(outcomes.values()) == 300, outcomes


def test_a_format_1_checkpoint_still_loads(tmp_path):
    model = trained()
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:  # as the first format wrote it: one generator, Adam's betas apart
        arrays = {k: f[k] for k in f.files if k != "eval_rng_state"}
    arrays["version"] = np.array(1)
    arrays["optimizer"] = np.array(json.dumps({"name": "adam", "t": model.optimizer_.t, "lr": 0.001,
                                               "b1": 0.9, "b2": 0.999, "eps": 1e-08}))
    np.savez(tmp_path / "v1.npz", **arrays)
    loaded = VAE.load(tmp_path / "v1.npz")
    assert np.array_equal(loaded.flat_params, model.flat_params) and loaded.history_ == model.history_
    assert loaded.optimizer_.hyperparameters() == model.optimizer_.hyperparameters()
    assert loaded.rng_.bit_generator.state == model.rng_.bit_generator.state


def test_a_conditional_model_saves_and_resumes(tmp_path):
    x, y = load_digits("train")
    x, y = x[:200], y[:200]
    model = VAE(64, hidden_dims=(16,), latent_dim=2, likelihood="binomial", trials=16, n_classes=10, seed=0)
    model.fit(x, epochs=2, batch_size=50, progress=False, y=y)
    model.save(tmp_path / "c.npz")
    loaded = VAE.load(tmp_path / "c.npz")
    assert loaded.n_classes == 10 and np.array_equal(to_numpy(loaded.flat_params), to_numpy(model.flat_params))
    np.testing.assert_array_equal(loaded.decode(np.zeros((1, 2)), y=3), model.decode(np.zeros((1, 2)), y=3))
    straight = VAE.load(tmp_path / "c.npz").fit(x, epochs=1, batch_size=50, progress=False, y=y)
    model.fit(x, epochs=1, batch_size=50, progress=False, y=y)
    assert np.array_equal(to_numpy(straight.flat_params), to_numpy(model.flat_params))


def test_numbers_a_tampered_checkpoint_cannot_hold(tmp_path):
    model = trained()
    model.partial_epoch_ = {"epoch": 3, "n": 40, "batch_size": 10, "step": 2, "perm": np.arange(40),
                            "totals": np.zeros(3), "seconds": 0.5}
    history = [dict(row) for row in model.history_]
    history[0]["loss"] = float("nan")
    place = {"epoch": 3, "n": 10**400, "batch_size": 10, "step": 2, "totals": [0, 0, 0], "seconds": 0.5}
    for name, parts, message in (
            ("nan-loss", dict(history=np.array(json.dumps(history))), "history row 1's loss should be a finite"),
            ("huge-n", dict(partial_epoch=np.array(json.dumps(place))), "not a permutation of its n = 1000"),
            ("huge-seconds", dict(partial_epoch=np.array(json.dumps({**place, "n": 40, "seconds": 10**400}))),
             "seconds should be a finite number; got an integer of 401 digits")):
        model.save(tmp_path / "m.npz")
        with np.load(tmp_path / "m.npz") as f:
            arrays = {k: f[k] for k in f.files} | parts
        with open(tmp_path / f"{name}.npz", "wb") as out:
            np.savez(out, **arrays)
        with pytest.raises(ValueError, match=message):
            VAE.load(tmp_path / f"{name}.npz")
