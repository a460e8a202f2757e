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


@backend.elementwise
def _softplus_and_grad(xp, x, scale):
    s = xp.exp(-xp.abs(x))
    return scale * (xp.maximum(x, 0) + xp.log1p(s)), scale * xp.exp(xp.minimum(x, 0)) / (1 + s)


@pytest.mark.parametrize("fast", ["1", "0"])
def test_an_elementwise_function_is_one_kernel_on_cupy(strict, monkeypatch, fast):
    """On CuPy the chain is one fused launch (MINIVAE_FAST=0: one per operation), with NumPy's values."""
    monkeypatch.setenv("MINIVAE_FAST", fast)
    x = np.linspace(-30, 30, 13, dtype=np.float32)
    expected = _softplus_and_grad(x, 0.5)
    strict.counts.reset()
    got = _softplus_and_grad(strict.asarray(x), 0.5)
    assert strict.counts.launches == (1 if fast == "1" else 12) and strict.counts.transfers == 0
    for e, g in zip(expected, got):
        assert e.dtype == np.float32 and np.array_equal(to_numpy(g), e)


def test_elementwise_functions_take_their_arrays_alone():
    import inspect

    from minivae.losses import kl_per_dimension

    assert list(inspect.signature(kl_per_dimension).parameters) == ["mu", "logvar"]
    assert list(inspect.signature(_softplus_and_grad).parameters) == ["x", "scale"]


def test_the_stand_in_refuses_what_fuse_cannot_compile(strict):
    """cupy.fuse compiles element-wise operations only; the stand-in must refuse the rest, or it proves nothing."""
    device = strict.asarray(np.ones((2, 3)))
    for body in (lambda a: a.sum(axis=1), lambda a: a[0] * 2, lambda a: strict.concatenate([a, a]),
                 lambda a: a * a.shape[1]):
        with pytest.raises(NotImplementedError, match="element-wise operations only"):
            strict.fuse(body)(device)
    with pytest.raises(TypeError):
        strict.fuse(lambda a: a * 2)(np.ones((2, 3)))  # a host array
    assert np.array_equal(strict.fuse(lambda a, s: strict.exp(a) * s)(device, 2.0).get(), np.full((2, 3), 2 * np.e))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_fused_chains_agree_with_numpy_on_real_cupy(real_cupy, monkeypatch, dtype, rng):
    """Each @elementwise function of the library, compiled by cupy.fuse: NumPy's dtypes, and its values to rounding.

    The GPU's exp and log1p are not the CPU's, and its compiler may join a product and a sum into one
    rounding, which matters where terms cancel; so the tolerance is relative to each output's largest entry.
    """
    from minivae import layers, losses, model

    monkeypatch.setenv("MINIVAE_FAST", "1")
    a, b, c, d = (3 * rng.standard_normal((64, 20)).astype(dtype) for _ in range(4))
    cases = [(losses.bernoulli_terms, (a, (b > 0).astype(dtype))), (losses.kl_per_dimension, (a, b)),
             (layers.gaussian_sample, (a, b, c)), (layers.gaussian_sample_backward, (a, np.exp(b), c)),
             (layers.relu_backward, (a, np.maximum(b, 0))), (layers.tanh_backward, (a, np.tanh(b))),
             (layers.sigmoid_backward, (a, layers.sigmoid(b))), (layers.sigmoid, (100 * a,)),
             (model.plus_kl_gradient, (a, b, c, d, 0.25))]
    for fn, args in cases:
        want = fn(*args)
        got = fn(*(real_cupy.asarray(x) if isinstance(x, np.ndarray) else x for x in args))
        want, got = (want, got) if isinstance(want, tuple) else ((want,), (got,))
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.dtype == w.dtype, fn.__name__
            tol = 1e-5 if dtype == np.float32 else 1e-12
            np.testing.assert_allclose(real_cupy.asnumpy(g), w, rtol=tol, atol=tol * np.abs(w).max(), err_msg=fn.__name__)
