"""The rate split into I_q(x; z) and KL(q(z) || p(z)), and the codes against any prior both ways: limits and closed forms."""

import math

import numpy as np
import pytest

from minivae import VAE, to_numpy
from minivae.aggregate import prior_mismatch, rate_split
from minivae.losses import LOG_2PI


def model_and_data(seed=0, n=40):
    rng = np.random.default_rng(seed)
    model = VAE(6, hidden_dims=(5,), latent_dim=3, likelihood="gaussian", dtype="float64", seed=seed)
    return model, rng.standard_normal((n, 6))


def test_an_encoder_that_ignores_x_carries_no_information():
    model, x = model_and_data()
    model.params["encoder.0.W"][...] = 0  # every x gets the same posterior: q(z) is that posterior
    split = rate_split(model, x)
    assert abs(split.information) < 1e-10 and split.mismatch == pytest.approx(split.rate, abs=1e-10)
    assert split.rate > 0.01  # and the rate is not zero: all of it is mismatch


def test_far_apart_posteriors_carry_log_n():
    model, x = model_and_data(n=30)
    model.params["encoder.mu.W"][...] *= 1e4  # each x's posterior far from every other's
    model.params["encoder.logvar.b"][...] = -20
    split = rate_split(model, x)
    assert split.information == pytest.approx(math.log(30), abs=1e-6) and split.log_n == math.log(30)
    assert split.mismatch > 0  # codes spread far wider than the prior


def test_the_split_equals_a_direct_computation_of_the_mixture():
    model, x = model_and_data(1, n=7)
    state = model.eval_rng_.bit_generator.state
    split = rate_split(model, x, n_samples=3, batch_size=2)  # several blocks of codes
    model.eval_rng_.bit_generator.state = state  # the same codes again, scored one component at a time
    mu, logvar = (to_numpy(a) for a in model.encode(x))
    info = []
    for _ in range(3):
        z = mu + np.exp(logvar / 2) * model.host_normal(mu.shape, model.eval_rng_)
        for i in range(len(x)):
            log_q = [-0.5 * (((z[i] - mu[n]) ** 2 / np.exp(logvar[n])).sum() + logvar[n].sum() + 3 * LOG_2PI)
                     for n in range(len(x))]
            info.append(log_q[i] - (np.logaddexp.reduce(log_q) - math.log(len(x))))
    rate = 0.5 * (mu**2 + np.exp(logvar) - logvar - 1).sum(axis=1).mean()
    assert split.information == pytest.approx(np.mean(info), rel=1e-10)
    assert split.rate == pytest.approx(rate, rel=1e-12) and split.mismatch == pytest.approx(rate - np.mean(info))


def test_a_conditional_model_is_refused():
    with pytest.raises(ValueError, match="unconditional"):
        rate_split(VAE(4, hidden_dims=(3,), n_classes=2), np.zeros((3, 4)))


def test_the_mismatch_both_ways_equals_the_closed_form_when_every_posterior_is_the_same():
    """An encoder that ignores x: q(z) is one Gaussian, and both KLs to N(0, I) have closed forms."""
    model, x = model_and_data(2)
    model.params["encoder.0.W"][...] = 0
    mismatch = prior_mismatch(model, x, n_draws=20000)
    mu, logvar = (to_numpy(a)[0] for a in model.encode(x[:1]))
    var = np.exp(logvar)
    forward = 0.5 * (mu**2 + var - logvar - 1).sum()  # KL(q || N(0, I))
    reverse = 0.5 * ((1 + mu**2) / var + logvar - 1).sum()  # KL(N(0, I) || q)
    for draws, exact in ((mismatch.forward, forward), (mismatch.reverse, reverse)):
        assert abs(draws.mean() - exact) < 4 * draws.std() / np.sqrt(len(draws))
    assert "KL(q(z) || p(z))" in str(mismatch)


def test_a_prior_equal_to_the_codes_has_no_mismatch():
    from minivae.priors import MixturePriorVAE
    model = MixturePriorVAE(6, n_components=1, hidden_dims=(5,), latent_dim=3, likelihood="gaussian",
                            dtype="float64", seed=0)
    model.params["encoder.0.W"][...] = 0  # every posterior the same ...
    mu, logvar = model.encode(np.zeros((1, 6)))
    model.params["prior.means"][...], model.params["prior.logvars"][...] = mu, logvar  # ... and the prior is it
    mismatch = prior_mismatch(model, np.random.default_rng(0).standard_normal((10, 6)), n_draws=50)
    assert np.abs(mismatch.forward).max() < 1e-10 and np.abs(mismatch.reverse).max() < 1e-10


def test_the_closed_form_rate_refuses_other_families():
    from minivae.flows import FlowVAE
    from minivae.priors import VampPriorVAE
    for model in (FlowVAE(4, flow_length=1, hidden_dims=(3,)), VampPriorVAE(4, n_components=2, hidden_dims=(3,))):
        with pytest.raises(ValueError, match="prior_mismatch"):
            rate_split(model, np.zeros((3, 4)))
