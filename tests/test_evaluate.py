"""Importance-weighted likelihoods against the exact log p(x) of a linear-Gaussian model, and diagnostics."""

import numpy as np
import pytest

from minivae import VAE, to_numpy
from minivae import evaluate as ev
from minivae.datasets import load_digits


def linear_gaussian(seed=0, orthogonal=False, n=200):
    """A 5-D linear-Gaussian model (2-D latent) and data drawn from it."""
    rng = np.random.default_rng(seed)
    model = VAE(5, hidden_dims=(), latent_dim=2, likelihood="gaussian", decoder_std=0.5, dtype="float64", seed=seed)
    W = rng.standard_normal((2, 5))
    if orthogonal:  # W W^T diagonal: the true posterior has a diagonal covariance
        W = np.linalg.qr(W.T)[0].T * np.array([[2.0], [0.7]])
    model.params["decoder.out.W"][...] = W
    x = rng.standard_normal((n, 2)) @ W + model.params["decoder.out.b"] + 0.5 * rng.standard_normal((n, 5))
    return model, x


def test_exact_log_likelihood_matches_a_direct_density():
    model, x = linear_gaussian()
    W, b = model.params["decoder.out.W"], model.params["decoder.out.b"]
    cov = W.T @ W + 0.25 * np.eye(5)
    r = x - b
    direct = -0.5 * (np.einsum("nd,de,ne->n", r, np.linalg.inv(cov), r) + np.log(np.linalg.det(cov)) + 5 * np.log(2 * np.pi))
    assert np.allclose(ev.exact_log_likelihood(model, x), direct, rtol=1e-12)


def test_the_elbo_never_exceeds_log_px():
    model, x = linear_gaussian(1)
    exact = ev.exact_log_likelihood(model, x)
    for encoder in ("random", "optimal"):
        if encoder == "optimal":
            ev.set_optimal_encoder(model)
        assert np.all(ev.linear_gaussian_elbo(model, x) <= exact + 1e-12)
    # the closed-form ELBO is what the model's Monte Carlo ELBO estimates
    assert abs(to_numpy(model.elbo(x, n_samples=4000)).mean() - ev.linear_gaussian_elbo(model, x).mean()) < 0.01


def test_the_optimal_encoder_closes_the_gap():
    model, x = linear_gaussian(2, orthogonal=True)
    ev.set_optimal_encoder(model)
    assert np.allclose(ev.linear_gaussian_elbo(model, x), ev.exact_log_likelihood(model, x), atol=1e-10)


def test_the_optimal_encoder_is_the_best_diagonal_q_where_the_posterior_is_not_diagonal():
    model, x = linear_gaussian(3)  # W W^T not diagonal: the best diagonal q leaves a gap
    ev.set_optimal_encoder(model)
    best = ev.linear_gaussian_elbo(model, x).mean()
    assert best < ev.exact_log_likelihood(model, x).mean() - 1e-3
    for name in ("encoder.logvar.b", "encoder.mu.b", "encoder.mu.W"):
        for index in np.ndindex(model.params[name].shape):
            for step in (-0.01, 0.01):  # any move of any parameter of q lowers the ELBO
                model.params[name][index] += step
                moved = ev.linear_gaussian_elbo(model, x).mean()
                model.params[name][index] -= step
                assert moved < best, (name, index, step)


def test_the_importance_weighted_bound_rises_to_log_px():
    model, x = linear_gaussian(2)
    ev.set_optimal_encoder(model)
    model.params["encoder.logvar.b"][...] += 1.0  # a deliberately loose q, about 0.8 nats from the posterior
    exact = ev.exact_log_likelihood(model, x)
    means = {K: to_numpy(model.log_likelihood(x, n_samples=K)) for K in (1, 10, 100, 5000)}
    assert means[1].mean() < means[10].mean() < means[100].mean() <= means[5000].mean() + 0.01
    # K = 1 is an unbiased one-sample estimate of the ELBO: equal within its standard error
    diff = means[1] - ev.linear_gaussian_elbo(model, x)
    assert abs(diff.mean()) < 4 * diff.std() / np.sqrt(len(diff))
    assert np.abs(means[5000] - exact).max() < 0.05


def test_the_effective_sample_size_is_k_under_the_posterior_and_falls_as_q_widens():
    model, x = linear_gaussian(2, orthogonal=True, n=40)
    ev.set_optimal_encoder(model)  # q is the exact posterior: every weight is p(x)
    log_p, ess = model.log_likelihood(x, n_samples=500, ess=True)
    assert np.allclose(to_numpy(ess), 500, rtol=1e-9)
    assert np.allclose(to_numpy(log_p), ev.exact_log_likelihood(model, x), atol=1e-9)

    # q's variances 1.5 times the posterior's, in both dimensions: E_q[w^2] / E_q[w]^2 = (1.5 / sqrt(2))^2 per
    # example, so ESS / K tends to 1 / 1.125 as K grows; chunks of 1000 samples test the streaming rescale
    model.params["encoder.logvar.b"][...] += np.log(1.5)
    K = 20000
    _, ess = ev.log_likelihood(model, x, n_samples=K, max_rows=1000, ess=True)
    ratio = to_numpy(ess) / K
    se = ratio.std(ddof=1) / np.sqrt(len(ratio))
    assert abs(ratio.mean() - 1 / 1.125) < 4 * se + 1e-3, (ratio.mean(), se)  # 1e-3: the ratio's O(1/K) bias
    assert np.all((1 <= to_numpy(ess)) & (to_numpy(ess) <= K))

    # one example, the same noise in one chunk or in many: the streaming sums rescale exactly
    model.params["encoder.logvar.b"][...] += 2.0  # a wide q: the running maximum moves often
    state = model.eval_rng_.bit_generator.state
    whole = ev.log_likelihood(model, x[:1], n_samples=3000, max_rows=3000, ess=True)
    model.eval_rng_.bit_generator.state = state
    chunked = ev.log_likelihood(model, x[:1], n_samples=3000, max_rows=7, ess=True)
    assert np.allclose(to_numpy(whole[0]), to_numpy(chunked[0]), rtol=1e-12)
    assert np.allclose(to_numpy(whole[1]), to_numpy(chunked[1]), rtol=1e-9) and to_numpy(whole[1])[0] < 1000


def test_streaming_log_sum_exp_matches_a_direct_computation():
    model, x = linear_gaussian(3, n=7)
    state = model.eval_rng_.bit_generator.state
    eps = model.eval_rng_.standard_normal((7, 64, 2))  # the draws the estimator makes, in the same order
    mu, logvar = (to_numpy(a) for a in model.encode(x))
    z = mu[:, None, :] + np.exp(logvar / 2)[:, None, :] * eps  # (7, 64, 2)
    W, b = model.params["decoder.out.W"], model.params["decoder.out.b"]
    log_px_z = -0.5 * (((x[:, None, :] - z @ W - b) / 0.5) ** 2 + np.log(2 * np.pi * 0.25)).sum(-1)
    log_pz = -0.5 * (z**2 + np.log(2 * np.pi)).sum(-1)
    log_qz = -0.5 * ((z - mu[:, None]) ** 2 / np.exp(logvar[:, None]) + logvar[:, None] + np.log(2 * np.pi)).sum(-1)
    direct = np.log(np.mean(np.exp(log_px_z + log_pz - log_qz), axis=1))
    for max_rows in (10**6, 16, 5):  # one block; chunks of 16 samples; chunks of 5 (64 = 12 * 5 + 4)
        model.eval_rng_.bit_generator.state = state
        assert np.allclose(to_numpy(ev.log_likelihood(model, x, 64, max_rows=max_rows)), direct, rtol=1e-12)


def test_log_likelihood_on_every_backend(backend):
    model = VAE(64, hidden_dims=(16,), latent_dim=3, backend=backend)
    x = load_digits("test")[0][:20]
    ll = to_numpy(model.log_likelihood(x, n_samples=50))
    elbo = to_numpy(model.elbo(x, n_samples=50))
    assert ll.shape == (20,) and np.all(np.isfinite(ll))
    assert ll.mean() > elbo.mean()  # the K = 50 bound is tighter than the ELBO


def test_exact_check_refuses_other_models():
    with pytest.raises(ValueError, match="linear-Gaussian"):
        ev.exact_log_likelihood(VAE(5, hidden_dims=(3,), latent_dim=2, likelihood="gaussian"), np.zeros((1, 5)))


def test_active_units_find_a_collapsed_dimension():
    model = VAE(6, hidden_dims=(), latent_dim=3, seed=0)
    model.params["encoder.mu.W"][:, 2] = 0  # dimension 2 ignores its input
    x = np.random.default_rng(0).random((100, 6))
    count, variances = ev.active_units(model, x)
    assert count == 2 and variances[2] == 0 and np.all(variances[:2] > 0.01)
    model.params["encoder.mu.b"][2] = 0
    model.params["encoder.logvar.W"][:, 2] = 0
    model.params["encoder.logvar.b"][2] = 0  # q(z_2|x) = N(0, 1), the prior
    kl = ev.kl_per_dim(model, x)
    assert kl.shape == (3,) and abs(kl[2]) < 1e-7 and np.all(kl[:2] > 0)
    with pytest.raises(ValueError, match="batch_size must be"):
        ev.active_units(model, x, batch_size=0)


def test_history_keeps_the_diagnostics():
    model = VAE(64, hidden_dims=(16,), latent_dim=3, likelihood="binomial", trials=16)
    model.fit(load_digits()[0][:200], epochs=2, progress=False)
    row = model.history_[-1]
    assert 0 <= row["active_units"] <= 3 and len(row["kl_per_dim"]) == 3
    assert np.isclose(sum(row["kl_per_dim"]), ev.kl_per_dim(model, load_digits()[0][:200]).sum())


def test_monte_carlo_mean_reports_the_standard_error_of_its_noise():
    x = np.arange(500, dtype=float)[:, None]  # fixed examples, true per-example values 0..499
    rng = np.random.default_rng(5)
    sigma, R = 3.0, 4

    def noisy(xb):
        return xb[:, 0] + sigma * rng.standard_normal(len(xb))

    mean, se = ev.monte_carlo_mean(noisy, x, replicates=R, batch_size=128)
    true_se = sigma / np.sqrt(R * len(x))
    assert abs(se / true_se - 1) < 0.1  # 500 examples' variances, 3 degrees of freedom each
    assert abs(mean - 249.5) < 4 * true_se
    with pytest.raises(ValueError, match="at least 2 replicates"):
        ev.monte_carlo_mean(noisy, x, replicates=1)


def test_bits_per_dimension():
    assert ev.bits_per_dimension(-64 * np.log(2), 64) == pytest.approx(1.0)


def test_a_conditional_models_labels_go_batch_by_batch():
    x, y = load_digits("test")
    model = VAE(64, hidden_dims=(8,), latent_dim=2, likelihood="binomial", trials=16, n_classes=10, seed=0)

    def at_the_mean(xb, y):  # the ELBO's integrand at z = mu: one exact figure per example, no noise
        return model.elbo(xb, eps=np.zeros((len(xb), 2)), y=y)
    batched = ev.monte_carlo_replicates(at_the_mean, x[:50], replicates=2, batch_size=7, y=y[:50])
    whole = to_numpy(at_the_mean(x[:50], y[:50]))
    assert np.allclose(batched, whole[None, :], rtol=1e-5)  # each batch got its own examples' labels
    shifted = ev.monte_carlo_replicates(at_the_mean, x[:50], replicates=2, batch_size=7, y=np.roll(y[:50], 1))
    assert not np.allclose(shifted, whole[None, :], rtol=1e-5)
    with pytest.raises(ValueError, match="one label per example"):
        ev.monte_carlo_mean(model.elbo, x[:50], y=y[:49])
