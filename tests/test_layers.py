"""Each layer's backward pass against centred finite differences in float64."""

import numpy as np
import pytest

from minivae.gradcheck import numerical_gradient, rel_error
from minivae.layers import Dense, GaussianSample, ReLU, Sigmoid, Tanh, sigmoid

TOL = 1e-7


def check_input_gradient(layer, x, rng):
    """dL/dx from backward against finite differences of L = sum(forward(x) * w)."""
    w = rng.standard_normal(layer.forward(x).shape)  # a random upstream gradient
    dx = layer.backward(w)
    num = numerical_gradient(lambda: (layer.forward(x) * w).sum(), x)
    return rel_error(dx, num)


def test_dense_gradients(rng):
    layer = Dense(rng.standard_normal((5, 3)), rng.standard_normal(3))
    x = rng.standard_normal((4, 5))
    w = rng.standard_normal((4, 3))

    def loss():
        return (layer.forward(x) * w).sum()

    loss()
    dx = layer.backward(w)
    # The loss is linear in x, W and b, so centred differences have no
    # truncation error and a larger h only shrinks the rounding error.
    assert rel_error(dx, numerical_gradient(loss, x, h=1e-4)) < TOL
    for name in ("W", "b"):
        assert rel_error(layer.grads[name], numerical_gradient(loss, layer.params[name], h=1e-4)) < TOL


def test_dense_forward_is_affine(rng):
    W, b, x = rng.standard_normal((5, 3)), rng.standard_normal(3), rng.standard_normal((4, 5))
    expected = np.array([[sum(x[n, d] * W[d, h] for d in range(5)) + b[h] for h in range(3)] for n in range(4)])
    assert np.allclose(Dense(W, b).forward(x), expected)


@pytest.mark.parametrize("layer_class", [Tanh, Sigmoid])
def test_smooth_activation_gradients(layer_class, rng):
    assert check_input_gradient(layer_class(), rng.standard_normal((4, 6)) * 2, rng) < TOL


def test_relu_gradient_away_from_the_kink(rng):
    x = rng.standard_normal((4, 6))
    x[np.abs(x) < 0.1] = 0.5  # finite differences straddling 0 would see the kink
    assert check_input_gradient(ReLU(), x, rng) < TOL


def test_sigmoid_is_stable_for_huge_inputs():
    x = np.array([-1e4, -50.0, 0.0, 50.0, 1e4])
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # underflow to 0 is exact here
        y = sigmoid(x)
    assert np.all(np.isfinite(y))
    assert y[0] == 0.0 and y[2] == 0.5 and y[-1] == 1.0
    assert np.isclose(y[1], np.exp(-50.0) / (1 + np.exp(-50.0)), rtol=1e-12)


def test_gaussian_sample_gradients(rng):
    layer = GaussianSample()
    mu, logvar = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    eps = rng.standard_normal((4, 3))  # frozen noise: z is deterministic in (mu, logvar)
    w = rng.standard_normal((4, 3))

    def loss():
        return (layer.forward(mu, logvar, eps) * w).sum()

    loss()
    dmu, dlogvar = layer.backward(w)
    assert rel_error(dmu, numerical_gradient(loss, mu)) < TOL
    assert rel_error(dlogvar, numerical_gradient(loss, logvar)) < TOL


def test_gaussian_sample_draws_have_variance_exp_logvar(rng):
    mu = np.array([[-1.0, 0.5, 3.0]])
    logvar = np.array([[-2.0, 0.0, 1.5]])  # sigma = exp(logvar / 2), so var = exp(logvar)
    n = 100_000
    eps = rng.standard_normal((n, 3))
    z = GaussianSample().forward(np.repeat(mu, n, 0), np.repeat(logvar, n, 0), eps)
    var = np.exp(logvar[0])
    assert np.all(np.abs(z.mean(0) - mu[0]) < 5 * np.sqrt(var / n))
    # the sample variance has standard error var * sqrt(2 / n), about 0.45% here
    assert np.all(np.abs(z.var(0) / var - 1) < 5 * np.sqrt(2 / n))


def test_gaussian_sample_uses_the_forward_eps_in_backward(rng):
    layer = GaussianSample()
    eps = rng.standard_normal((2, 3))
    layer.forward(np.zeros((2, 3)), np.zeros((2, 3)), eps)
    rng.standard_normal((2, 3))  # any later draw must not leak in
    _, dlogvar = layer.backward(np.ones((2, 3)))
    assert np.allclose(dlogvar, eps * 0.5)  # dz/dsigma = eps, dsigma/dlogvar = sigma / 2 = 1/2


@pytest.mark.parametrize("make", [
    lambda rng: (Dense(rng.standard_normal((3, 2)), np.zeros(2)), (np.ones((4, 2)),)),
    lambda rng: (ReLU(), (np.ones((4, 2)),)),
    lambda rng: (Tanh(), (np.ones((4, 2)),)),
    lambda rng: (Sigmoid(), (np.ones((4, 2)),)),
    lambda rng: (GaussianSample(), (np.ones((4, 2)),)),
])
def test_backward_before_forward_is_a_clear_error(make, rng):
    layer, args = make(rng)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(*args)


def test_cache_is_overwritten_not_appended(rng):
    layer = Tanh()
    layer.forward(rng.standard_normal((4, 3)))
    second = rng.standard_normal((2, 3))
    layer.forward(second)
    assert layer.cache.shape == (2, 3)
    assert np.allclose(layer.cache, np.tanh(second))


def test_params_and_grads_share_keys(rng):
    layer = Dense(rng.standard_normal((3, 2)), np.zeros(2))
    assert layer.params.keys() == layer.grads.keys() == {"W", "b"}
    assert all(layer.grads[k].shape == layer.params[k].shape for k in layer.params)
