"""Two stochastic layers: every gradient of both bounds against finite differences, log p(x) against a grid over
both layers, the top layer switched off against the plain VAE, sampling down the layers, each layer's active
units, checkpoints and what the family refuses."""

import json

import numpy as np
import pytest

import minivae
from minivae import VAE, to_numpy
from minivae.hierarchical import HierarchicalVAE, conditional_prior_backward
from minivae.losses import gaussian_log_density

from gradients import LIKELIHOOD_CONFIGS, LIKELIHOOD_IDS, checked_gradients, data_for


def tiny(backend="numpy", latent_dim=3, top_dim=2, top_hidden_dims=(4,), seed=3, **kwargs):
    return HierarchicalVAE(6, top_dim=top_dim, top_hidden_dims=top_hidden_dims, hidden_dims=(5,),
                           latent_dim=latent_dim, activation="tanh", dtype="float64", backend=backend, seed=seed,
                           **kwargs)


def zeroed_top(model):
    """Top networks that output 0: ``q(z2|z1) = p(z2) = N(0, I)`` and ``p(z1|z2) = N(0, I)``, the plain VAE's."""
    for name in model.params:
        if name.startswith("top."):
            model.params[name][...] = 0
    return model


@pytest.mark.parametrize("config", LIKELIHOOD_CONFIGS, ids=LIKELIHOOD_IDS)
def test_every_gradient_of_the_elbo_matches_finite_differences(config, backend, rng):
    model = tiny(backend, beta=0.7, **config)
    x = data_for(config, rng, 4)
    report = checked_gradients(model, x, rng.standard_normal((4, model.noise_dim)))
    assert set(report.errors) == set(model.params) and any(name.startswith("top.") for name in report.errors)
    assert report.max_error < 1e-7, str(report)


@pytest.mark.parametrize("config", LIKELIHOOD_CONFIGS, ids=LIKELIHOOD_IDS)
def test_every_gradient_of_the_importance_weighted_bound_matches_finite_differences(config, backend, rng):
    model = tiny(backend, top_hidden_dims=(), **config)
    x = data_for(config, rng, 3)
    report = checked_gradients(model, x, rng.standard_normal((4, 3, model.noise_dim)), objective="iwae", n_samples=4)
    assert set(report.errors) == set(model.params)
    assert report.max_error < 1e-7, str(report)


def test_the_conditional_priors_backward_pass_matches_finite_differences(rng):
    z1, m, r, g = rng.standard_normal((5, 3)), rng.standard_normal((5, 3)), rng.standard_normal((5, 3)), rng.random(5)
    loss = lambda z1, m, r: -(g * gaussian_log_density(z1, m, r)).sum()
    analytic = conditional_prior_backward(z1, m, r, g)
    h = 1e-6
    for which, grad in enumerate(analytic):
        numeric = np.zeros_like(grad)
        for i in np.ndindex(grad.shape):
            up, down = [a.copy() for a in (z1, m, r)], [a.copy() for a in (z1, m, r)]
            up[which][i] += h
            down[which][i] -= h
            numeric[i] = (loss(*up) - loss(*down)) / (2 * h)
        assert np.linalg.norm(grad - numeric) < 1e-7 * np.linalg.norm(grad)  # over the array: no entry near 0 decides


def test_with_its_top_layer_switched_off_it_is_the_plain_vae(rng):
    """Top networks that output 0 make ``p(z1|z2) = N(0, I)`` and ``q(z2|z1) = p(z2)``: the second layer's
    KL-like term is 0 for every draw, and the importance weights are the VAE's for the same ``eps1``."""
    model = zeroed_top(tiny(likelihood="bernoulli"))
    plain = VAE(6, hidden_dims=(5,), latent_dim=3, activation="tanh", dtype="float64", seed=3)
    plain.flat_params[...] = model.flat_params[:plain.n_params]
    x, eps = (rng.random((4, 6)) > 0.5).astype(float), rng.standard_normal((4, 5, 5))
    np.testing.assert_allclose(model.log_weights(x, eps), plain.log_weights(x, eps[:, :, :3]), rtol=1e-12)
    mu, logvar = model.encoder_forward(x)
    _, _, kl2 = model.layers_forward(x, mu, logvar, eps[:, 0])
    assert np.all(kl2 == 0)


def test_log_p_x_is_the_integral_over_both_layers(rng):
    """One unit a layer, so ``p(x) = int int p(z2) p(z1|z2) p(x|z1) dz1 dz2`` is a sum over a 2-D grid; the
    importance-weighted estimate agrees within 4 standard errors and the ELBO lies below it."""
    model = tiny(latent_dim=1, top_dim=1, likelihood="bernoulli", seed=5)
    for name, p in model.params.items():
        p[...] = 1.5 * rng.standard_normal(p.shape)  # weights far from their start: a bent posterior
    x = (rng.random((3, 6)) > 0.5).astype(float)
    grid = np.linspace(-8, 8, 401)
    step = grid[1] - grid[0]
    z1, z2 = (a.reshape(-1, 1) for a in np.meshgrid(grid, grid, indexing="ij"))
    m, r = model.top_decoder.forward(z2)
    log_prior = gaussian_log_density(z1, m, r) + gaussian_log_density(z2, 0 * z2, 0 * z2)
    out, _ = model.decoder_forward(grid[:, None])
    for n in range(len(x)):
        log_px_z1 = -model.nll(np.repeat(x[n:n + 1], len(grid), axis=0), out, None)[0]
        joint = np.repeat(log_px_z1, len(grid)) + log_prior  # z1 varies slowest, as the grid is laid out
        exact = joint.max() + np.log(np.exp(joint - joint.max()).sum() * step * step)
        runs = np.array([float(model.log_likelihood(x[n:n + 1], n_samples=2000)[0]) for _ in range(5)])
        se = runs.std(ddof=1) / np.sqrt(len(runs))
        assert abs(runs.mean() - exact) < 4 * se + 1e-3, (runs, exact)
        elbo = to_numpy(model.elbo(np.repeat(x[n:n + 1], 4000, axis=0)))
        assert elbo.mean() < exact + 4 * elbo.std() / np.sqrt(len(elbo))


def test_the_sampled_elbo_is_the_mean_log_weight_and_its_terms_split_by_layer(rng):
    model = tiny(likelihood="bernoulli")
    x, eps = (rng.random((4, 6)) > 0.5).astype(float), rng.standard_normal((4, 5))
    log_w = model.log_weights(x, eps[:, None, :])[:, 0]
    np.testing.assert_allclose(to_numpy(model.elbo(x, eps=eps)), log_w, rtol=1e-12)
    loss, rec, kl = (float(a) for a in model.forward_backward(x, eps, kl_weight=0.5))
    assert rec + kl == pytest.approx(-log_w.mean(), rel=1e-12) and loss == pytest.approx(rec + 0.5 * kl, rel=1e-12)


def test_samples_go_down_both_layers(rng):
    """``z2 ~ N(0, I)``, then ``z1 ~ p(z1|z2)``: with a linear top decoder ``m = z2 W + b``, ``r = c``, the draws
    of ``z1`` have mean ``b`` and covariance ``W^T W + diag(exp(c))``."""
    model = tiny(top_hidden_dims=(), likelihood="bernoulli")
    W, b, c = rng.standard_normal((2, 3)), rng.standard_normal(3), rng.standard_normal(3)
    zeroed_top(model)
    model.params["top.decoder.mu.W"][...], model.params["top.decoder.mu.b"][...] = W, b
    model.params["top.decoder.logvar.b"][...] = c
    z1 = to_numpy(model.prior_sample(20000, rng))
    cov = W.T @ W + np.diag(np.exp(c))
    assert np.all(np.abs(z1.mean(axis=0) - b) < 4 * np.sqrt(np.diag(cov) / len(z1)))
    assert np.all(np.abs(z1.var(axis=0) - np.diag(cov)) < 4 * np.diag(cov) * np.sqrt(2 / len(z1)))
    assert model.sample(5).shape == (5, 6)


def test_each_layers_active_units(rng):
    """A linear top encoder makes ``E[z2|x] = mu1(x) W + b`` exactly; the Monte Carlo mean agrees within 4 SE.
    A top encoder whose mean ignores ``z1`` leaves every unit of ``z2`` inactive."""
    model = tiny(top_hidden_dims=(), likelihood="bernoulli")
    W = rng.standard_normal((3, 2))
    model.params["top.encoder.mu.W"][...] = W
    x = (rng.random((50, 6)) > 0.5).astype(float)
    first, second = model.layer_means(x, n_samples=400)
    mu1, logvar1 = (to_numpy(a) for a in model.encode(x))
    np.testing.assert_allclose(first, mu1)
    exact = mu1 @ W + to_numpy(model.params["top.encoder.mu.b"])
    se = np.sqrt(np.exp(logvar1) @ (W * W) / 400)  # the sampled mean's error: Var(z1 W) over the draws
    assert np.all(np.abs(second - exact) < 4 * se)
    (count1, var1), (count2, var2) = model.active_units(x, n_samples=50)
    assert count1 == int((mu1.var(axis=0) > 0.01).sum()) and var2.shape == (2,)
    model.params["top.encoder.mu.W"][...] = 0
    assert model.active_units(x, n_samples=50)[1][0] == 0


def test_a_hierarchical_checkpoint_comes_back_whole(tmp_path, rng):
    model = tiny(likelihood="bernoulli")
    model.fit((rng.random((20, 6)) > 0.5).astype(float), epochs=2, batch_size=10, progress=False)
    model.save(tmp_path / "two.npz")
    back = VAE.load(tmp_path / "two.npz")
    assert type(back) is HierarchicalVAE and back.get_config() == model.get_config()
    assert np.array_equal(to_numpy(back.flat_params), to_numpy(model.flat_params))
    arrays = dict(np.load(tmp_path / "two.npz"))
    config = json.loads(str(arrays["config"]))
    for change, message in (({"top_dim": 10**9}, "wider than the 4096"), ({"top_dim": 3}, "do not fit"),
                            ({"top_hidden_dims": "4"}, "sequence of integers"), ({"top_hidden_dims": [0]}, "top hidden")):
        arrays["config"] = np.array(json.dumps({**config, **change}))
        np.savez(tmp_path / "bad.npz", **arrays)
        with pytest.raises(ValueError, match=message):
            VAE.load(tmp_path / "bad.npz")


def test_it_refuses_what_it_cannot_do():
    model = tiny(likelihood="bernoulli")
    x = np.ones((4, 6))
    with pytest.raises(ValueError, match="free bits"):
        model.fit(x, epochs=1, progress=False, free_bits=0.5)
    assert model.history_ == []
    with pytest.raises(ValueError, match="unconditional"):
        tiny(n_classes=3)
    with pytest.raises(ValueError, match="no closed form"):
        model.log_prior(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"shape \(4, 5\)"):
        model.elbo(x, eps=np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"expects 5 \(shape \(N, 5\)\)"):
        model.elbo(x, eps=np.zeros((4, 3)))  # one normal for each of z1's 3 units and z2's 2
    with pytest.raises(ValueError, match=r"shape \(2, 4, 5\)"):
        model.loss_and_grads(x, eps=np.zeros((2, 4, 3)), objective="iwae", n_samples=2)


def test_the_family_builds_by_name():
    model = minivae.families.build({"family": "hierarchical", "input_dim": 6, "latent_dim": 4, "top_dim": 2,
                                    "top_hidden_dims": [3]}, seed=0)
    assert type(model) is HierarchicalVAE and model.noise_dim == 6


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_fit_trains_both_layers(objective, rng):
    model = tiny(likelihood="bernoulli")
    start = {name: to_numpy(p).copy() for name, p in model.params.items()}
    x = (rng.random((40, 6)) > 0.5).astype(float)
    model.fit(x, epochs=3, batch_size=10, progress=False, objective=objective,
              n_samples=3 if objective == "iwae" else 1)
    moved = {name for name, p in model.params.items() if not np.array_equal(to_numpy(p), start[name])}
    assert moved == set(model.params) and all(np.isfinite(row["loss"]) for row in model.history_)
