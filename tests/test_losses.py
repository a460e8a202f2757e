"""Loss values against the densities written out independently, and their gradients against finite differences."""

import math

import numpy as np
import pytest

from minivae.gradcheck import numerical_gradient, rel_error
from minivae.losses import (bernoulli_nll, gaussian_log_density, gaussian_nll, gaussian_nll_learned,
                            kl_per_dimension, kl_standard_normal)

TOL = 1e-7


def test_bernoulli_nll_is_binary_cross_entropy(rng):
    logits = rng.standard_normal((3, 5)) * 3
    x = rng.random((3, 5))
    p = 1 / (1 + np.exp(-logits))
    expected = -(x * np.log(p) + (1 - x) * np.log(1 - p)).sum(1)
    nll, _ = bernoulli_nll(logits, x)
    assert np.allclose(nll, expected, rtol=1e-12)


def test_bernoulli_nll_gradient(rng):
    logits, x = rng.standard_normal((3, 5)) * 3, rng.random((3, 5))
    _, dlogits = bernoulli_nll(logits, x)
    num = numerical_gradient(lambda: bernoulli_nll(logits, x)[0].sum(), logits)
    assert rel_error(dlogits, num) < TOL
    assert np.allclose(dlogits, 1 / (1 + np.exp(-logits)) - x)  # sigmoid(l) - x


def test_bernoulli_nll_is_finite_and_exact_for_huge_logits():
    logits = np.array([[1e4, -1e4, 1e4, -1e4, 30.0]])
    x = np.array([[1.0, 1.0, 0.0, 0.0, 1.0]])
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # underflow to 0 is exact here
        nll, dlogits = bernoulli_nll(logits, x)
    # confident and right costs ~0; confident and wrong costs |l| nats
    assert np.isclose(nll[0], 0 + 1e4 + 1e4 + 0 + math.log1p(math.exp(-30.0)), rtol=1e-12)
    assert np.array_equal(dlogits, [[0.0, -1.0, 1.0, 0.0, 1 / (1 + math.exp(-30.0)) - 1]])


@pytest.mark.parametrize("std", [0.3, 1.0, 2.5])
def test_gaussian_nll_fixed_std(std, rng):
    x, mean = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    pdf = np.exp(-((x - mean) ** 2) / (2 * std**2)) / (std * math.sqrt(2 * math.pi))
    nll, dmean = gaussian_nll(x, mean, std)
    assert np.allclose(nll, -np.log(pdf).sum(1), rtol=1e-12)
    assert rel_error(dmean, numerical_gradient(lambda: gaussian_nll(x, mean, std)[0].sum(), mean)) < TOL


def test_gaussian_nll_learned_variance(rng):
    x, mean, logvar = rng.standard_normal((3, 4)), rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    var = np.exp(logvar)
    pdf = np.exp(-((x - mean) ** 2) / (2 * var)) / np.sqrt(2 * math.pi * var)
    nll, dmean, dlogvar = gaussian_nll_learned(x, mean, logvar)
    assert np.allclose(nll, -np.log(pdf).sum(1), rtol=1e-12)

    def f():
        return gaussian_nll_learned(x, mean, logvar)[0].sum()

    assert rel_error(dmean, numerical_gradient(f, mean)) < TOL
    assert rel_error(dlogvar, numerical_gradient(f, logvar)) < TOL


def test_kl_gradients(rng):
    mu, logvar = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    kl, dmu, dlogvar = kl_standard_normal(mu, logvar)
    assert kl.shape == (3,)

    def f():
        return kl_standard_normal(mu, logvar)[0].sum()

    assert rel_error(dmu, numerical_gradient(f, mu)) < TOL
    assert rel_error(dlogvar, numerical_gradient(f, logvar)) < TOL


def test_kl_is_zero_only_at_the_prior():
    zeros = np.zeros((1, 3))
    assert kl_standard_normal(zeros, zeros)[0][0] == 0
    assert kl_standard_normal(zeros + 0.1, zeros)[0][0] > 0
    assert kl_standard_normal(zeros, zeros - 0.1)[0][0] > 0


def test_closed_form_kl_matches_monte_carlo(rng):
    mu = np.array([[0.7, -1.2, 0.0]])
    logvar = np.array([[-1.0, 0.4, 0.9]])
    n = 200_000
    z = mu + np.exp(logvar / 2) * rng.standard_normal((n, 3))
    log_q = gaussian_log_density(z, mu, logvar)
    log_p = -0.5 * (z**2).sum(1) - 1.5 * math.log(2 * math.pi)  # log N(z; 0, I), written out
    mc = log_q - log_p  # KL = E_q[log q - log p]
    closed = kl_standard_normal(mu, logvar)[0][0]
    assert abs(mc.mean() - closed) < 5 * mc.std() / math.sqrt(n)
    assert np.allclose(kl_per_dimension(mu, logvar)[0].sum(1), closed)


def test_gaussian_log_density_matches_the_pdf(rng):
    z, mu, logvar = rng.standard_normal((2, 3)), rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    var = np.exp(logvar)
    pdf = np.exp(-((z - mu) ** 2) / (2 * var)) / np.sqrt(2 * math.pi * var)
    assert np.allclose(gaussian_log_density(z, mu, logvar), np.log(pdf).sum(1))
