"""Each likelihood is a probability (density) of its data, with a gradient proved by finite differences."""

import decimal
import math
import warnings

import numpy as np
import pytest

from minivae import VAE, to_numpy
from minivae.gradcheck import check_gradients, numerical_gradient
from minivae.likelihoods import (BetaBinomial, Bernoulli, Binomial, Categorical, ContinuousBernoulli, Gaussian,
                                 LearnedGaussian)
from minivae.losses import LOG_CONCENTRATION_MAX, continuous_bernoulli_log_norm

from gradients import checked_gradients

LOGITS = np.array([-30.0, -4.0, -0.7, -1e-3, 0.0, 2e-3, 0.009, 0.011, 0.5, 3.0, 30.0])


def likelihoods():
    return {"bernoulli": (Bernoulli(), lambda rng, shape: (rng.random(shape) < 0.5).astype(float)),
            "binomial": (Binomial(16), lambda rng, shape: rng.integers(0, 17, shape) / 16),
            "categorical": (Categorical(17), lambda rng, shape: rng.integers(0, 17, shape) / 16),
            "beta_binomial": (BetaBinomial(16), lambda rng, shape: rng.integers(0, 17, shape) / 16),
            "continuous_bernoulli": (ContinuousBernoulli(), lambda rng, shape: rng.random(shape)),
            "gaussian": (Gaussian(0.3), lambda rng, shape: rng.standard_normal(shape)),
            "learned_gaussian": (LearnedGaussian(), lambda rng, shape: rng.standard_normal(shape))}


@pytest.mark.parametrize("name", list(likelihoods()))
@pytest.mark.parametrize("scale", [1e-3, 1.0, 6.0])
def test_gradients_match_finite_differences(name, scale, rng):
    lik, data = likelihoods()[name]
    x = data(rng, (3, 5))
    out = rng.standard_normal((3, 5 * lik.outputs)) * scale
    logvar = rng.standard_normal((3, 5)) if lik.learned_variance else None
    _, dout, dlogvar = lik.nll(x, out, logvar)
    h = min(1e-4, scale / 100)
    num = numerical_gradient(lambda: float(lik.nll(x, out, logvar)[0].sum()), out, h=h, order=4)
    assert norm_error(num, dout) < 1e-9
    if lik.learned_variance:
        num = numerical_gradient(lambda: float(lik.nll(x, out, logvar)[0].sum()), logvar, order=4)
        assert norm_error(num, dlogvar) < 1e-9


def norm_error(a, b):
    """``|a - b| / (|a| + |b|)`` over the whole array: entries near 0 do not magnify rounding noise."""
    return float(np.linalg.norm(a - b) / max(1e-300, np.linalg.norm(a) + np.linalg.norm(b)))


def test_the_binomial_is_the_full_log_pmf():
    n, p = 16, 0.3
    k = np.arange(n + 1)
    nll, _, _ = Binomial(n).nll((k / n)[:, None], np.full((n + 1, 1), math.log(p / (1 - p))))
    log_pmf = [math.log(math.comb(n, int(j))) + j * math.log(p) + (n - j) * math.log(1 - p) for j in k]
    assert np.allclose(-nll, log_pmf, rtol=0, atol=1e-12)


@pytest.mark.parametrize("logit", LOGITS)
def test_each_probability_sums_or_integrates_to_one(logit):
    l = np.array([[logit]])
    p_bern = sum(math.exp(-Bernoulli().nll(np.array([[v]]), l)[0][0]) for v in (0.0, 1.0))
    p_binom = sum(math.exp(-Binomial(16).nll(np.array([[k / 16]]), l)[0][0]) for k in range(17))
    grid = (np.arange(200_000) + 0.5) / 200_000  # the midpoint rule on [0, 1]
    nll, _, _ = ContinuousBernoulli().nll(grid[:, None], np.full((len(grid), 1), logit))
    p_cb = np.exp(-nll).mean()
    assert p_bern == pytest.approx(1, abs=1e-12) and p_binom == pytest.approx(1, abs=1e-12)
    assert p_cb == pytest.approx(1, abs=1e-6)


def test_the_continuous_bernoulli_mean_is_its_integral():
    grid = (np.arange(200_000) + 0.5) / 200_000
    for logit in LOGITS:
        density = np.exp(-ContinuousBernoulli().nll(grid[:, None], np.full((len(grid), 1), logit))[0])
        assert ContinuousBernoulli().mean(np.array([logit]))[0] == pytest.approx((grid * density).mean(), abs=1e-7)


@pytest.mark.parametrize("lik, logvar", [(Gaussian(0.3), None), (LearnedGaussian(), -1.5),
                                         (LearnedGaussian(), -20.0)])  # -20 lies below the floor
def test_the_gaussians_integrate_to_one(lik, logvar):
    grid = np.linspace(-8, 8, 400_001)
    lv = None if logvar is None else np.full((len(grid), 1), logvar)
    nll, _, _ = lik.nll(grid[:, None], np.zeros((len(grid), 1)), lv)
    assert np.exp(-nll).sum() * (grid[1] - grid[0]) == pytest.approx(1, abs=1e-6)


def test_the_learned_variance_has_a_floor_without_gradient_below_it():
    lik = LearnedGaussian()
    x, out = np.zeros((1, 2)), np.zeros((1, 2))
    at_floor = lik.nll(x, out, np.full((1, 2), lik.MIN_LOGVAR))[0]
    nll, _, dlogvar = lik.nll(x, out, np.array([[-50.0, lik.MIN_LOGVAR - 1]]))
    assert np.array_equal(nll, at_floor) and np.all(dlogvar == 0)


@pytest.mark.parametrize("name", list(likelihoods()))
def test_the_mean_is_the_average_of_draws(name):
    lik, _ = likelihoods()[name]
    rng = np.random.default_rng(3)
    # a categorical's logits ramp over its levels, a beta-binomial's (log alpha, log beta) pull apart, with the logit
    out = np.outer(LOGITS / 10, np.linspace(-1, 1, lik.outputs)).ravel() if lik.outputs > 1 else LOGITS
    out = np.tile(out, (20_000, 1))
    logvar = np.full(out.shape, -1.0) if lik.learned_variance else None
    draws = lik.sample(out, logvar, rng)
    se = draws.std(axis=0) / math.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(axis=0) - lik.mean(out, logvar)[0]) <= 4 * se + 1e-12)


@pytest.mark.parametrize("logit", [-3.0, -0.011, -0.0099, -0.009, -0.004, -1e-4, 1e-7, 0.003, 0.0099, 0.0101, 2.0])
def test_the_continuous_bernoulli_normaliser_matches_fifty_digit_arithmetic(logit):
    """Both branches, the series near 0 and the closed form beyond it, against log C = log(l / tanh(l/2)) in decimals.

    A finite-difference check sees the series' derivative only through the whole likelihood's gradient, where a
    wrong l^3 coefficient changes the result by less than its rounding; fifty digits see it.
    """
    with decimal.localcontext() as ctx:
        ctx.prec = 50
        l = decimal.Decimal(logit)
        e, half = l.exp(), (l / 2).exp()
        tanh_half = (half - 1 / half) / (half + 1 / half)
        log_c = (l / tanh_half).ln()
        dlog_c = 1 / l - 2 / (e - 1 / e)  # 1/l - 1/sinh(l)
    got, dgot = continuous_bernoulli_log_norm(np.array([logit]))
    assert float(got[0]) == pytest.approx(float(log_c), rel=0, abs=1e-13)
    assert float(dgot[0]) == pytest.approx(float(dlog_c), rel=0, abs=1e-12)


def test_continuous_bernoulli_is_finite_for_extreme_logits():
    l = np.array([[-1e30, -800.0, -1e-12, 0.0, 1e-12, 800.0, 1e30]])
    x = np.full(l.shape, 0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow along the way either
        nll, dout, _ = ContinuousBernoulli().nll(x, l)
        mean = ContinuousBernoulli().mean(l)
    assert np.all(np.isfinite(nll)) and np.all(np.isfinite(dout)) and np.all((mean >= 0) & (mean <= 1))


def test_the_binomial_refuses_data_that_are_not_counts():
    with pytest.raises(ValueError, match=r"over 17 levels needs x to hold whole levels divided by 16"):
        VAE(64, hidden_dims=(4,), likelihood="binomial", trials=16).encode(np.full((2, 64), 0.3))
    with pytest.raises(ValueError, match="needs trials=n"):
        VAE(64, hidden_dims=(4,), likelihood="binomial")
    with pytest.raises(ValueError, match="trials is the binomial and beta-binomial likelihoods'"):
        VAE(64, hidden_dims=(4,), trials=16)
    with pytest.raises(ValueError, match="it takes levels=n"):
        VAE(64, hidden_dims=(4,), likelihood="categorical", trials=16)
    with pytest.raises(ValueError, match="needs levels"):
        VAE(64, hidden_dims=(4,), likelihood="categorical")
    with pytest.raises(ValueError, match="levels is the categorical likelihood's"):
        VAE(64, hidden_dims=(4,), likelihood="binomial", trials=16, levels=17)
    with pytest.raises(ValueError, match="at most 65,535"):
        VAE(64, hidden_dims=(4,), likelihood="binomial", trials=2**24)


def test_a_bernoulli_model_on_grey_levels_warns_once_per_fit():
    grey = np.random.default_rng(0).integers(0, 17, (60, 8)) / 16
    model = VAE(8, hidden_dims=(4,), latent_dim=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(grey, epochs=3, batch_size=10, progress=False)
    assert len(caught) == 1 and "cross-entropy, not the log of a probability" in str(caught[0].message)
    assert "binarize='dynamic'" in str(caught[0].message) and "likelihood='categorical'" in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        VAE(8, hidden_dims=(4,), latent_dim=2).fit((grey > 0.5).astype(float), epochs=1, progress=False)
        VAE(8, hidden_dims=(4,), latent_dim=2, likelihood="binomial", trials=16).fit(grey, epochs=1, progress=False)


@pytest.mark.parametrize("config", [dict(likelihood="binomial", trials=16), dict(likelihood="continuous_bernoulli")])
def test_the_whole_model_gradient_with_each_new_likelihood(config, rng):
    model = VAE(8, hidden_dims=(5,), latent_dim=2, dtype="float64", activation="tanh", **config)
    x, eps = rng.integers(0, 17, (4, 8)) / 16, rng.standard_normal((4, 2))
    report = check_gradients(model, x, eps)
    assert report.passed(), report


@pytest.mark.parametrize("config", [dict(likelihood="binomial", trials=16), dict(likelihood="continuous_bernoulli"),
                                    dict(likelihood="gaussian", decoder_std="learned"),
                                    dict(likelihood="categorical", levels=17), dict(likelihood="beta_binomial", trials=16)])
def test_each_likelihood_runs_on_every_backend(backend, config, tmp_path):
    x = np.random.default_rng(1).integers(0, 17, (40, 8)) / 16
    if config["likelihood"] == "continuous_bernoulli":  # its data lie strictly inside (0, 1)
        x = (x * 14 + 1) / 16
    model = VAE(8, hidden_dims=(6,), latent_dim=2, backend=backend, **config).fit(x, epochs=2, progress=False)
    host = VAE(8, hidden_dims=(6,), latent_dim=2, backend="numpy", **config).fit(x, epochs=2, progress=False)
    assert np.allclose(to_numpy(model.flat_params), to_numpy(host.flat_params), rtol=1e-5, atol=1e-6)
    assert to_numpy(model.sample(3, mean=False)).shape == (3, 8)
    model.save(tmp_path / "m.npz")
    assert VAE.load(tmp_path / "m.npz", backend=backend).get_config() == model.get_config()


DISCRETE = ["bernoulli", "binomial", "categorical", "beta_binomial"]


@pytest.mark.parametrize("name", DISCRETE)
def test_each_pmf_sums_to_one_and_is_what_nll_computes(name, rng):
    lik, _ = likelihoods()[name]
    out = rng.standard_normal((3, 5 * lik.outputs)) * 4
    log_pmf = lik.log_pmf(out)  # (3, 5, levels)
    assert log_pmf.shape == (3, 5, lik.levels)
    assert np.allclose(np.exp(log_pmf).sum(axis=2), 1, rtol=0, atol=1e-12)
    for k in range(lik.levels):  # every level of every pixel at once
        x = np.full((3, 5), k / (lik.levels - 1))
        assert np.allclose(-lik.nll(x, out)[0], log_pmf[:, :, k].sum(axis=1), rtol=0, atol=1e-9)


def test_the_categorical_is_torchs(rng):
    torch = pytest.importorskip("torch", reason="torch is only a test oracle; pip install torch to run this check")
    logits = rng.standard_normal((6, 7, 17)) * 5
    k = rng.integers(0, 17, (6, 7))
    nll, _, _ = Categorical(17).nll(k / 16, logits.reshape(6, -1))
    ref = torch.distributions.Categorical(logits=torch.tensor(logits)).log_prob(torch.tensor(k)).sum(dim=1).numpy()
    assert np.allclose(-nll, ref, rtol=0, atol=1e-8)


def test_the_categorical_is_a_log_softmax(rng):
    special = pytest.importorskip("scipy.special", reason="scipy is only a test oracle")
    logits = rng.standard_normal((6, 7, 17)) * 50  # far apart: no exp may overflow
    k = rng.integers(0, 17, (6, 7))
    nll, _, _ = Categorical(17).nll(k / 16, logits.reshape(6, -1))
    ref = np.take_along_axis(special.log_softmax(logits, axis=2), k[:, :, None], axis=2)[:, :, 0].sum(axis=1)
    assert np.allclose(-nll, ref, rtol=0, atol=1e-8)


def test_the_beta_binomial_is_scipys(rng):
    stats = pytest.importorskip("scipy.stats", reason="scipy is only a test oracle")
    out = rng.uniform(-8, 8, (6, 7, 2))
    k = rng.integers(0, 17, (6, 7))
    nll, _, _ = BetaBinomial(16).nll(k / 16, out.reshape(6, -1))
    ref = stats.betabinom.logpmf(k, 16, np.exp(out[:, :, 0]), np.exp(out[:, :, 1])).sum(axis=1)
    assert np.allclose(-nll, ref, rtol=0, atol=1e-8)


def test_the_beta_binomial_becomes_the_binomial_as_it_concentrates():
    # alpha = c p, beta = c (1 - p) with c large: p ~ Beta is almost the point p
    p, k = 0.3, np.arange(17)
    nll_bin = Binomial(16).nll((k / 16)[:, None], np.full((17, 1), math.log(p / (1 - p))))[0]
    gaps = []
    for c in (math.exp(5.0), math.exp(11.0)):
        out = np.tile([math.log(c * p), math.log(c * (1 - p))], (17, 1))
        gaps.append(np.abs(BetaBinomial(16).nll((k / 16)[:, None], out)[0] - nll_bin).max())
    assert gaps[1] < gaps[0] / 100 and gaps[1] < 1e-2, gaps


def test_the_beta_binomials_concentrations_are_clipped_without_gradient():
    lik = BetaBinomial(16)
    x = np.array([[0.5]])
    at_bound = lik.nll(x, np.array([[LOG_CONCENTRATION_MAX, -LOG_CONCENTRATION_MAX]]))[0]
    nll, dout, _ = lik.nll(x, np.array([[LOG_CONCENTRATION_MAX + 5, -LOG_CONCENTRATION_MAX - 40]]))
    assert np.array_equal(nll, at_bound) and np.all(dout == 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow at any logit
        nll, dout, _ = lik.nll(np.array([[0.0, 1.0]]), np.array([[1e30, -1e30, -1e30, 1e30]]))
    assert np.all(np.isfinite(nll)) and np.all(np.isfinite(dout))


def test_the_categorical_is_finite_for_extreme_logits():
    logits = np.array([[-1e30, 0.0, 1e30] * 1, [800.0, -800.0, 0.0]]).reshape(1, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nll, dout, _ = Categorical(3).nll(np.array([[0.0, 1.0]]), logits)
    assert np.all(np.isfinite(nll)) and np.all(np.isfinite(dout))


@pytest.mark.parametrize("config", [dict(likelihood="categorical", levels=17), dict(likelihood="beta_binomial", trials=16)])
@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_the_whole_model_gradient_with_each_pmf_over_levels(config, objective, backend, rng):
    model = VAE(8, hidden_dims=(5,), latent_dim=2, dtype="float64", activation="tanh", backend=backend, **config)
    x = rng.integers(0, 17, (4, 8)) / 16
    eps = rng.standard_normal((4, 2)) if objective == "elbo" else rng.standard_normal((3, 4, 2))
    report = checked_gradients(model, x, eps, objective=objective, n_samples=1 if objective == "elbo" else 3)
    assert report.max_error < 1e-6, report


@pytest.mark.parametrize("config, n", [(dict(likelihood="binomial", trials=16), 16),
                                       (dict(likelihood="categorical", levels=256), 255)])
def test_counts_not_yet_divided_are_told_the_models_own_divisor(config, n):
    counts = np.arange(n + 1)[:, None] * np.ones((1, 4))
    with pytest.raises(ValueError, match=rf"spans \[0, {n}\]; pass whole levels divided by {n} \(x = k / {n}") as err:
        VAE(4, hidden_dims=(3,), **config).encode(counts)
    assert n == 255 or "255" not in str(err.value)
