"""The gradient-check tools themselves: they must pass right gradients and catch wrong ones."""

import numpy as np
import pytest

from minivae import VAE
from minivae.gradcheck import check_gradients, numerical_gradient, rel_error


@pytest.mark.parametrize("order", [2, 4])
def test_numerical_gradient_of_a_known_function(order, rng):
    x = rng.standard_normal((3, 2))
    num = numerical_gradient(lambda: np.sin(x).sum(), x, order=order)
    assert rel_error(num, np.cos(x)) < 1e-8
    assert np.all(np.isfinite(x))


def test_numerical_gradient_restores_its_input(rng):
    x = rng.standard_normal(4)
    before = x.copy()
    numerical_gradient(lambda: (x**3).sum(), x, order=4)
    assert np.array_equal(x, before)


def test_rel_error_definition():
    assert rel_error(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0
    assert np.isclose(rel_error(np.array([1.0]), np.array([3.0])), 0.5)
    assert rel_error(np.zeros(2), np.zeros(2)) == 0  # the 1e-8 floor avoids 0/0


def test_check_gradients_catches_a_wrong_backward(rng, monkeypatch):
    model = VAE(5, hidden_dims=(4,), latent_dim=2, activation="tanh", dtype="float64")
    x, eps = rng.random((3, 5)), rng.standard_normal((3, 2))
    assert check_gradients(model, x, eps).passed()
    # Plant the classic bug: sigma = exp(logvar) treated as the standard deviation's derivative.
    from minivae import layers
    original = layers.GaussianSample.backward

    def wrong(self, dz):
        dmu, dlogvar = original(self, dz)
        return dmu, dlogvar * 2  # as if dsigma/dlogvar were sigma, not sigma / 2
    monkeypatch.setattr(layers.GaussianSample, "backward", wrong)
    report = check_gradients(model, x, eps)
    assert not report.passed()
    assert report.errors["encoder.logvar.W"] > 1e-3
    assert "encoder.logvar.W" in str(report)


def test_check_gradients_needs_float64(rng):
    model = VAE(5, hidden_dims=(), latent_dim=2)
    with pytest.raises(ValueError, match="float64"):
        check_gradients(model, rng.random((2, 5)), rng.standard_normal((2, 2)))


def test_numerical_gradient_restores_its_input_when_f_fails(rng):
    x = rng.standard_normal(4)
    before, calls = x.copy(), []

    def f():
        calls.append(1)
        if len(calls) == 6:  # in the middle of the second entry's differences
            raise KeyboardInterrupt
        return float((x**2).sum())

    with pytest.raises(KeyboardInterrupt):
        numerical_gradient(f, x, order=4)
    assert np.array_equal(x, before)


def test_check_gradients_leaves_the_model_as_it_was_when_interrupted(rng, monkeypatch):
    model = VAE(5, hidden_dims=(4,), latent_dim=2, dtype="float64")
    x, eps = rng.random((3, 5)), rng.standard_normal((3, 2))
    before = model.flat_params.copy()
    real, calls = model.loss_and_grads, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 10:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "loss_and_grads", interrupted)
    with pytest.raises(KeyboardInterrupt):
        check_gradients(model, x, eps)
    assert np.array_equal(model.flat_params, before)


@pytest.mark.parametrize("dtype", [np.int64, np.float16, bool])
def test_numerical_gradient_refuses_arrays_that_cannot_hold_x_plus_h(dtype):
    x = np.array([1, 2, 3]).astype(dtype)
    with pytest.raises(ValueError, match="must be a float64 .* array; got"):
        numerical_gradient(lambda: float((x.astype(float) ** 2).sum()), x)


@pytest.mark.parametrize("h", [0, -1e-5, float("nan")])
def test_numerical_gradient_needs_a_positive_step(h):
    with pytest.raises(ValueError, match="h must be a finite number > 0"):
        numerical_gradient(lambda: 0.0, np.zeros(2), h=h)
