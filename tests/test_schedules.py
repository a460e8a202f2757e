"""KL schedules: beta, linear warm-up and free bits, each with a gradient check."""

import numpy as np
import pytest

from minivae import VAE, check_gradients
from minivae.datasets import load_digits
from minivae.losses import kl_per_dimension


def model_and_data(rng, **kwargs):
    model = VAE(6, hidden_dims=(5,), latent_dim=3, activation="tanh", dtype="float64", seed=4, **kwargs)
    return model, rng.random((8, 6)), rng.standard_normal((8, 3))


@pytest.mark.parametrize("beta", [0.0, 0.3, 4.0])
def test_beta_gradients(beta, rng):
    model, x, eps = model_and_data(rng, beta=beta)
    assert check_gradients(model, x, eps).max_error < 1e-7


def test_kl_weight_gradients(rng):
    model, x, eps = model_and_data(rng)
    assert check_gradients(model, x, eps, kl_weight=0.25).max_error < 1e-7


def test_free_bits_gradients_with_dimensions_on_both_sides_of_the_floor(rng):
    model, x, eps = model_and_data(rng)
    mu, logvar = model.encode(x)
    kl = kl_per_dimension(mu, logvar)[0].mean(0)
    floor = float(np.sort(kl)[1] + np.sort(kl)[0]) / 2  # one dimension below, two above
    assert (kl < floor).sum() == 1 and np.min(np.abs(kl - floor)) > 1e-3  # away from the kink
    report = check_gradients(model, x, eps, free_bits=floor)
    assert report.max_error < 1e-7, str(report)


def test_free_bits_loss_value(rng):
    model, x, eps = model_and_data(rng)
    mu, logvar = model.encode(x)
    kl = kl_per_dimension(mu, logvar)[0].mean(0)
    floor = float(kl.max()) + 1  # every dimension below the floor
    plain = model.loss_and_grads(x, eps)[0]
    floored, grads = model.loss_and_grads(x, eps, free_bits=floor)
    assert np.isclose(floored - plain, 3 * floor - kl.sum())  # each dimension counts as the floor
    _, grads_no_kl = model.loss_and_grads(x, eps, kl_weight=0.0)
    assert all(np.allclose(grads[k], grads_no_kl[k]) for k in grads)  # and pulls toward nothing


def test_warmup_ramps_the_kl_weight_linearly():
    model = VAE(64, hidden_dims=(16,), latent_dim=2, beta=2.0, likelihood="binomial", trials=16)
    model.fit(load_digits()[0][:100], epochs=6, warmup_epochs=4, progress=False)
    assert [row["kl_weight"] for row in model.history_] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]


def test_warmup_continues_across_calls():
    model = VAE(64, hidden_dims=(16,), latent_dim=2, likelihood="binomial", trials=16)
    x = load_digits()[0][:100]
    model.fit(x, epochs=2, warmup_epochs=4, progress=False)
    model.fit(x, epochs=3, warmup_epochs=4, progress=False)
    assert [row["kl_weight"] for row in model.history_] == [0.25, 0.5, 0.75, 1.0, 1.0]
