"""The array-module shim: choosing, detecting and moving between NumPy and CuPy."""

import sys

import numpy as np
import pytest

from minivae import backend
from minivae.backend import get_array_module, resolve, to_backend, to_numpy


def test_numpy_is_the_default(monkeypatch):
    monkeypatch.delenv("MINIVAE_BACKEND", raising=False)
    assert resolve() is np
    assert resolve("numpy") is np


def test_environment_variable_picks_the_default(monkeypatch, strict):
    monkeypatch.setenv("MINIVAE_BACKEND", "cupy")
    assert resolve() is strict


def test_auto_picks_cupy_only_when_a_gpu_is_seen(monkeypatch, strict):
    assert resolve("auto") is strict  # the stand-in reports one device
    monkeypatch.setattr(strict.cuda.runtime, "getDeviceCount", lambda: 0)
    assert resolve("auto") is np


def test_auto_falls_back_to_numpy_without_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` fail
    assert resolve("auto") is np


def test_asking_for_cupy_without_it_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(ImportError, match="pip install cupy-cuda12x"):
        resolve("cupy")


@pytest.mark.parametrize("name", ["torch", "gpu", "", 3])
def test_unknown_backend_names_are_refused(name, monkeypatch):
    monkeypatch.delenv("MINIVAE_BACKEND", raising=False)
    with pytest.raises(ValueError, match="unknown backend .*choose one of 'numpy', 'cupy', 'auto'"):
        resolve(name)


def test_unknown_environment_backend_is_refused(monkeypatch):
    monkeypatch.setenv("MINIVAE_BACKEND", "tpu")
    with pytest.raises(ValueError, match="MINIVAE_BACKEND"):
        resolve()


def test_importing_minivae_does_not_import_cupy():
    import subprocess
    code = "import sys, minivae; minivae.VAE(4, hidden_dims=(), latent_dim=2); print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_get_array_module_detects_each_backend(strict):
    host = np.ones(3)
    device = strict.asarray(host)
    assert get_array_module(host) is np
    assert get_array_module(device) is strict
    assert get_array_module(None, 2.0, device) is strict
    assert get_array_module() is np


def test_mixing_backends_is_an_error(strict):
    with pytest.raises(ValueError, match="different backends"):
        get_array_module(np.ones(2), strict.asarray(np.ones(2)))


def test_round_trip_between_backends(strict):
    host = np.arange(6.0).reshape(2, 3)
    device = to_backend(host, "cupy")
    assert isinstance(device, strict.ndarray)
    back = to_numpy(device)
    assert isinstance(back, np.ndarray) and np.array_equal(back, host)
    assert to_backend(device, np) is not None and np.array_equal(to_backend(device, np), host)
    assert to_backend(host, np, dtype=np.float32).dtype == np.float32


def test_the_stand_in_is_strict(strict):
    """The stand-in must refuse what CuPy refuses, or the backend tests prove nothing."""
    device = strict.asarray(np.ones((2, 2)))
    for mistake in (lambda: np.exp(device), lambda: np.asarray(device), lambda: np.sum(device),
                    lambda: device + np.ones((2, 2)), lambda: np.ones((2, 2)) * device,
                    lambda: strict.exp(np.ones(2))):
        with pytest.raises(TypeError):
            mistake()
    assert float((device * 2).sum()) == 8.0  # while device-only math works


def test_name_of():
    assert backend.name_of(np) == "numpy"
