"""Learned priors: the mixture's density and responsibilities against a direct computation, every gradient of
both families against finite differences, the VampPrior as the average posterior, sampling, and checkpoints."""

import json

import numpy as np
import pytest

import minivae
from minivae import VAE, to_numpy
from minivae.losses import gaussian_log_density
from minivae.priors import MixturePriorVAE, VampPriorVAE, mixture_backward, mixture_log_density

from gradients import LIKELIHOOD_CONFIGS, LIKELIHOOD_IDS, checked_gradients, data_for

FAMILIES = [MixturePriorVAE, VampPriorVAE]


def tiny(cls, backend="numpy", n_components=3, hidden_dims=(5,), seed=3, **kwargs):
    return cls(6, n_components=n_components, hidden_dims=hidden_dims, latent_dim=2, activation="tanh",
               dtype="float64", backend=backend, seed=seed, **kwargs)


def bent(model, rng, scale=0.5):
    """The prior's parameters moved off their start, so that no term of the derivative vanishes by symmetry."""
    for name in model.params:
        if name.startswith("prior."):
            shape = model.params[name].shape
            model.params[name][...] += model.xp.asarray(scale * rng.standard_normal(shape))
    return model


def direct_log_density(z, log_weights, means, logvars):
    """The mixture's log-density one component at a time, from the Gaussian's own formula."""
    per_component = np.stack([log_weights[c] + gaussian_log_density(z, means[c], logvars[c])
                              for c in range(len(means))], axis=1)  # (M, C)
    top = per_component.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(per_component - top).sum(axis=1, keepdims=True)))[:, 0], per_component


def mixture(rng, C=4, L=3):
    logits = rng.standard_normal(C)
    return (logits - np.log(np.exp(logits).sum()), 2 * rng.standard_normal((C, L)), rng.standard_normal((C, L)))


def test_the_mixture_density_is_the_weighted_sum_of_its_gaussians(rng):
    components = mixture(rng)
    z = 3 * rng.standard_normal((50, 3))
    log_p, r = mixture_log_density(z, *components)
    expected, per_component = direct_log_density(z, *components)
    np.testing.assert_allclose(log_p, expected, rtol=1e-12)
    np.testing.assert_allclose(r, np.exp(per_component - expected[:, None]), rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(r.sum(axis=1), 1, rtol=1e-12)


def test_the_mixture_density_integrates_to_one(rng):
    components = mixture(rng, C=3, L=2)
    grid = np.linspace(-25, 25, 601)
    z = np.stack(np.meshgrid(grid, grid), axis=-1).reshape(-1, 2)
    mass = np.exp(mixture_log_density(z, *components)[0]).sum() * (grid[1] - grid[0]) ** 2
    assert mass == pytest.approx(1, abs=1e-6)


def test_the_mixture_backward_pass_matches_finite_differences(rng):
    log_weights, means, logvars = mixture(rng)
    z, dlog_p = rng.standard_normal((6, 3)), rng.standard_normal(6)
    loss = lambda z, lw, m, s: float(dlog_p @ mixture_log_density(z, lw, m, s)[0])
    r = mixture_log_density(z, log_weights, means, logvars)[1]
    analytic = mixture_backward(z, r, means, logvars, dlog_p)
    args = [z, log_weights, means, logvars]
    for index, grad in zip((0, 2, 3, 1), analytic):  # dz, dmeans, dlogvars, dlog_weights
        numeric = np.zeros_like(args[index])
        for i in np.ndindex(*args[index].shape):
            up = [a.copy() for a in args]
            down = [a.copy() for a in args]
            up[index][i] += 1e-6
            down[index][i] -= 1e-6
            numeric[i] = (loss(*up) - loss(*down)) / 2e-6
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("cls", FAMILIES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("config", LIKELIHOOD_CONFIGS, ids=LIKELIHOOD_IDS)
def test_every_gradient_matches_finite_differences(cls, config, backend, rng):
    model = bent(tiny(cls, backend, beta=0.7, **config), rng)
    x = data_for(config, rng, 4)
    report = checked_gradients(model, x, rng.standard_normal((4, 2)))
    assert set(report.errors) == set(model.params) and any(name.startswith("prior.") for name in report.errors)
    assert report.max_error < 1e-7, str(report)


def test_the_vampprior_is_the_average_posterior_of_its_pseudo_inputs(rng):
    model = tiny(VampPriorVAE, likelihood="bernoulli")
    z = rng.standard_normal((40, 2))
    mu, logvar = (to_numpy(a) for a in model.encode(model.params["prior.pseudo_inputs"]))
    posteriors = np.stack([gaussian_log_density(z, mu[c], logvar[c]) for c in range(3)])  # log q(z | u_c)
    expected = np.log(np.exp(posteriors).mean(axis=0))
    np.testing.assert_allclose(to_numpy(model.log_prior(z)), expected, rtol=1e-12)


def test_one_standard_component_is_the_plain_vae(rng):
    """A mixture of one ``N(0, I)``: the plain VAE's importance weights, and its sampled KL averages to the
    closed form."""
    model = tiny(MixturePriorVAE, n_components=1, likelihood="bernoulli")
    model.params["prior.means"][...] = 0
    plain = VAE(6, hidden_dims=(5,), latent_dim=2, activation="tanh", dtype="float64", seed=3)
    plain.flat_params[...] = model.flat_params[:plain.n_params]
    x, eps = (rng.random((4, 6)) > 0.5).astype(float), rng.standard_normal((4, 5, 2))
    np.testing.assert_allclose(model.log_weights(x, eps), plain.log_weights(x, eps), rtol=1e-12)
    draws = rng.standard_normal((20000, 2))
    sampled = float(model.forward_backward(np.repeat(x[:1], len(draws), axis=0), draws)[2])
    exact = float(plain.forward_backward(x[:1], draws[:1])[2])
    mu, logvar = plain.encoder_forward(x[:1])
    z = mu + np.exp(0.5 * logvar) * draws
    per_draw = 0.5 * ((z * z).sum(axis=1) - (logvar + draws * draws).sum(axis=1))  # log q(z|x) - log p(z)
    assert sampled == pytest.approx(per_draw.mean(), rel=1e-9)
    assert abs(sampled - exact) < 4 * per_draw.std() / np.sqrt(len(draws))


def test_samples_come_from_the_learned_mixture(rng):
    model = tiny(MixturePriorVAE, n_components=2, likelihood="bernoulli")
    model.params["prior.logits"][...] = [0.0, np.log(3)]  # weights 1/4 and 3/4
    model.params["prior.means"][...] = [[-20, 0], [20, 0]]
    model.params["prior.logvars"][...] = [[0, 0], [np.log(4), 0]]
    z = to_numpy(model.prior_sample(8000, rng))
    right = z[:, 0] > 0
    assert abs(right.mean() - 0.75) < 4 * np.sqrt(0.75 * 0.25 / len(z))
    spread = z[right, 0].std()  # the second component's standard deviation is 2
    assert abs(spread - 2) < 4 * 2 / np.sqrt(2 * right.sum())
    assert model.sample(5).shape == (5, 6)


@pytest.mark.parametrize("cls", FAMILIES, ids=lambda c: c.__name__)
def test_a_learned_prior_checkpoint_comes_back_whole(cls, tmp_path, rng):
    model = bent(tiny(cls, likelihood="bernoulli"), rng)
    model.fit((rng.random((20, 6)) > 0.5).astype(float), epochs=2, batch_size=10, progress=False)
    model.save(tmp_path / "prior.npz")
    back = VAE.load(tmp_path / "prior.npz")
    assert type(back) is cls and back.get_config() == model.get_config()
    assert np.array_equal(to_numpy(back.flat_params), to_numpy(model.flat_params))
    z = rng.standard_normal((7, 2))
    np.testing.assert_array_equal(to_numpy(back.log_prior(z)), to_numpy(model.log_prior(z)))
    arrays = dict(np.load(tmp_path / "prior.npz"))
    config = json.loads(str(arrays["config"]))
    for count, message in ((10**12, "more than the 4096"), (5, "do not fit its configuration"), (0, "n_components")):
        arrays["config"] = np.array(json.dumps({**config, "n_components": count}))
        np.savez(tmp_path / "bad.npz", **arrays)
        with pytest.raises(ValueError, match=message):
            VAE.load(tmp_path / "bad.npz")


@pytest.mark.parametrize("cls", FAMILIES, ids=lambda c: c.__name__)
def test_a_learned_prior_refuses_what_it_cannot_train(cls):
    model = tiny(cls, likelihood="bernoulli")
    x = np.ones((4, 6))
    for options in (dict(objective="iwae", n_samples=2), dict(free_bits=0.5)):
        with pytest.raises(ValueError, match="trains on the ELBO alone"):
            model.fit(x, epochs=1, progress=False, **options)
    assert model.history_ == []
    with pytest.raises(ValueError, match="at most 4096"):
        tiny(cls, n_components=4097)
    with pytest.raises(ValueError, match="unconditional"):
        tiny(cls, n_classes=3)
    with pytest.raises(ValueError, match="conditional model's labels"):
        model.elbo(x, y=[0, 1, 0, 1])


def test_the_families_build_by_name():
    for name, cls in (("mixture_prior", MixturePriorVAE), ("vampprior", VampPriorVAE)):
        model = minivae.families.build({"family": name, "input_dim": 6, "latent_dim": 2, "n_components": 4}, seed=0)
        assert type(model) is cls and model.n_components == 4


@pytest.mark.parametrize("cls", FAMILIES, ids=lambda c: c.__name__)
def test_fit_trains_the_prior_with_the_rest(cls, rng):
    model = tiny(cls, likelihood="bernoulli")
    start = {name: to_numpy(p).copy() for name, p in model.params.items()}
    model.fit((rng.random((40, 6)) > 0.5).astype(float), epochs=3, batch_size=10, progress=False)
    moved = {name for name, p in model.params.items() if not np.array_equal(to_numpy(p), start[name])}
    assert moved == set(model.params) and all(np.isfinite(row["loss"]) for row in model.history_)
