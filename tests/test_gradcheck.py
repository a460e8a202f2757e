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
