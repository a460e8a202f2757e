"""The whole VAE: every parameter's gradient against finite differences, on every backend."""

import math

import numpy as np
import pytest

import minivae
from minivae import VAE, to_numpy
from minivae.gradcheck import check_gradients, rel_error
from minivae.optim import Adam

from gradients import checked_gradients

CONFIGS = [
    dict(likelihood="bernoulli"),
    dict(likelihood="gaussian", decoder_std=0.7),
    dict(likelihood="gaussian", decoder_std="learned"),
]
DEPTHS = [(), (5, 4)]


def tiny(backend="numpy", hidden_dims=(5, 4), dtype="float64", **kwargs):
    return VAE(6, hidden_dims=hidden_dims, latent_dim=3, activation="tanh", dtype=dtype,
               backend=backend, seed=3, **kwargs)


def data(rng, n=4):
    return rng.random((n, 6)), rng.standard_normal((n, 3))


@pytest.mark.parametrize("hidden_dims", DEPTHS, ids=["linear", "two-hidden"])
@pytest.mark.parametrize("config", CONFIGS, ids=["bernoulli", "gaussian-fixed", "gaussian-learned"])
def test_elbo_gradient_matches_finite_differences(config, hidden_dims, backend, rng):
    model = tiny(backend, hidden_dims, beta=0.7, **config)
    x, eps = data(rng)
    report = checked_gradients(model, x, eps)
    assert set(report.errors) == set(model.params)
    assert report.max_error < 1e-7, str(report)


def test_params_are_named_in_forward_order():
    model = tiny(hidden_dims=(5, 4), likelihood="gaussian", decoder_std="learned")
    assert list(model.params) == [
        "encoder.0.W", "encoder.0.b", "encoder.1.W", "encoder.1.b",
        "encoder.mu.W", "encoder.mu.b", "encoder.logvar.W", "encoder.logvar.b",
        "decoder.0.W", "decoder.0.b", "decoder.1.W", "decoder.1.b",
        "decoder.out.W", "decoder.out.b", "decoder.logvar.W", "decoder.logvar.b",
    ]
    shapes = {k: v.shape for k, v in model.params.items()}
    assert shapes["encoder.0.W"] == (6, 5) and shapes["encoder.1.W"] == (5, 4)
    assert shapes["encoder.mu.W"] == (4, 3) and shapes["decoder.0.W"] == (3, 4)
    assert shapes["decoder.1.W"] == (4, 5) and shapes["decoder.out.W"] == (5, 6)


def test_linear_model_has_no_hidden_layers():
    assert list(tiny(hidden_dims=()).params) == [
        "encoder.mu.W", "encoder.mu.b", "encoder.logvar.W", "encoder.logvar.b",
        "decoder.out.W", "decoder.out.b"]


def test_loss_is_the_mean_negative_elbo(rng, backend):
    model = tiny(backend, beta=1.0)
    x, eps = data(rng)
    loss, grads = model.loss_and_grads(x, eps)
    elbo = to_numpy(model.elbo(x, eps=eps))
    assert elbo.shape == (4,)
    assert np.isclose(loss, -elbo.mean(), rtol=1e-12)
    assert grads.keys() == model.params.keys()


def test_beta_weights_only_the_kl(rng):
    x, eps = data(rng)
    mu, logvar = tiny().encode(x)
    kl = minivae.losses.kl_standard_normal(mu, logvar)[0].mean()
    loss1 = tiny(beta=1.0).loss_and_grads(x, eps)[0]
    loss3 = tiny(beta=3.0).loss_and_grads(x, eps)[0]
    assert np.isclose(loss3 - loss1, 2 * kl, rtol=1e-12)


def test_same_weights_and_eps_agree_across_backends(backend, rng):
    x, eps = data(rng)
    reference = tiny("numpy")
    loss_ref, grads_ref = reference.loss_and_grads(x, eps)
    model = tiny(backend)
    loss, grads = model.loss_and_grads(x, eps)
    assert np.isclose(loss, loss_ref, rtol=1e-12)
    for name in grads_ref:
        assert rel_error(grads[name], grads_ref[name]) < 1e-10


def test_moving_between_backends_keeps_the_weights(backend, rng):
    x, eps = data(rng)
    model = tiny("numpy")
    loss_before = model.loss_and_grads(x, eps)[0]
    model.to(backend)
    assert model.backend == backend
    assert np.isclose(model.loss_and_grads(x, eps)[0], loss_before, rtol=1e-12)
    model.to("numpy")
    assert all(isinstance(p, np.ndarray) for p in model.params.values())
    assert model.loss_and_grads(x, eps)[0] == loss_before


def test_api_runs_on_every_backend(backend, rng):
    model = tiny(backend, dtype="float32")
    x, _ = data(rng, n=5)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, 3)
    assert model.decode(mu).shape == (5, 6)
    recon = to_numpy(model.reconstruct(x))
    assert recon.shape == (5, 6) and recon.dtype == np.float32
    assert np.all((recon > 0) & (recon < 1))  # Bernoulli means are probabilities
    assert model.sample(7).shape == (7, 6)
    assert to_numpy(model.elbo(x, n_samples=3)).shape == (5,)


def test_seeded_models_are_reproducible(rng):
    x, _ = data(rng)
    a, b = tiny(), tiny()
    assert a.loss_and_grads(x)[0] == b.loss_and_grads(x)[0]  # same seed: same init, same eps


def test_float32_gradients_match_float64(rng):
    x, eps = data(rng)
    g64 = tiny(dtype="float64").loss_and_grads(x, eps)[1]
    g32 = tiny(dtype="float32").loss_and_grads(x, eps)[1]
    assert all(g32[k].dtype == np.float32 for k in g32)
    assert max(rel_error(g32[k], g64[k]) for k in g64) < 1e-3


def test_a_tiny_batch_can_be_overfit(backend):
    rng = np.random.default_rng(0)
    x = (rng.random((8, 16)) < 0.5).astype(np.float32)
    model = VAE(16, hidden_dims=(64,), latent_dim=4, backend=backend, seed=0)
    start = float(-to_numpy(model.elbo(x, n_samples=100)).mean())
    opt = Adam(lr=5e-3)
    for _ in range(400):
        _, grads = model.loss_and_grads(x)
        opt.step(model.flat_params, model.xp.concatenate([g.ravel() for g in grads.values()]))
    end = float(-to_numpy(model.elbo(x, n_samples=100)).mean())
    # From ~11 nats; memorising 8 codes costs at least log 8 = 2.1 nats of KL.
    assert end < start / 2, (start, end)


def test_real_cupy_matches_numpy_in_float32(real_cupy, rng):
    x = rng.random((16, 6)).astype(np.float32)
    eps = rng.standard_normal((16, 3)).astype(np.float32)
    loss_np, grads_np = tiny("numpy", dtype="float32").loss_and_grads(x, eps)
    loss_gpu, grads_gpu = tiny("cupy", dtype="float32").loss_and_grads(x, eps)
    assert np.isclose(loss_gpu, loss_np, rtol=1e-5)
    for name in grads_np:
        scale = np.abs(to_numpy(grads_np[name])).max()
        assert np.allclose(to_numpy(grads_gpu[name]), to_numpy(grads_np[name]), rtol=1e-5, atol=1e-5 * scale)


# ---------------------------------------------------------------- the importance-weighted bound (IWAE)
@pytest.mark.parametrize("hidden_dims", DEPTHS, ids=["linear", "two-hidden"])
@pytest.mark.parametrize("config", CONFIGS + [dict(likelihood="binomial", trials=5)],
                         ids=["bernoulli", "gaussian-fixed", "gaussian-learned", "binomial"])
def test_iwae_gradient_matches_finite_differences(config, hidden_dims, backend, rng):
    model = tiny(backend, hidden_dims, **config)
    x = rng.random((4, 6))
    if config["likelihood"] == "binomial":
        x = np.round(x * 5) / 5
    eps = rng.standard_normal((7, 4, 3))  # K = 7 samples of each example's z
    report = checked_gradients(model, x, eps, objective="iwae", n_samples=7)
    assert report.max_error < 1e-7, str(report)


def test_iwae_at_one_sample_is_the_elbo_with_its_kl_from_the_same_sample(rng):
    model = tiny(likelihood="bernoulli")
    x, eps = data(rng)
    loss, _ = model.loss_and_grads(x, eps[None], objective="iwae", n_samples=1)
    mu, logvar = model.encode(x)
    z = mu + np.exp(logvar / 2) * eps
    logits = model.decode(z)  # Bernoulli: the pixel means sigmoid(logits)
    rec = minivae.losses.bernoulli_nll(np.log(logits) - np.log1p(-logits), x)[0]
    log_q = minivae.losses.gaussian_log_density(z, mu, logvar)
    log_p = minivae.losses.gaussian_log_density(z, 0 * z, 0 * z)
    assert loss == pytest.approx(float((rec + log_q - log_p).mean()), rel=1e-12)


def test_iwae_at_one_sample_has_the_elbos_gradient_in_expectation(rng):
    # the same noise in both: their difference is the KL's Monte Carlo error alone, whose mean is 0
    model = tiny(likelihood="bernoulli")
    x = (rng.random((8, 6)) < 0.5).astype(float)
    directions = rng.standard_normal((3, model.n_params))
    diffs = []
    for _ in range(3000):
        eps = rng.standard_normal((8, 3))
        g_iw = model.loss_and_grads(x, eps[None], objective="iwae", n_samples=1)[1]
        g_elbo = model.loss_and_grads(x, eps)[1]
        flat = np.concatenate([(g_iw[k] - g_elbo[k]).ravel() for k in model.params])
        diffs.append(directions @ flat)
    diffs = np.array(diffs)  # (R, 3): the difference projected on three fixed directions
    se = diffs.std(axis=0, ddof=1) / np.sqrt(len(diffs))
    assert (se > 0).all() and (np.abs(diffs.mean(axis=0)) < 4 * se).all()


def test_more_samples_give_a_tighter_bound(rng):
    model = VAE(64, hidden_dims=(32,), latent_dim=4, likelihood="binomial", trials=16, seed=0)
    x = minivae.load_digits("test")[0][:100]
    model.fit(x, epochs=30, batch_size=50, lr=3e-3, progress=False)
    bounds = {}
    for K in (1, 50):
        runs = np.array([-model.loss_and_grads(x, objective="iwae", n_samples=K)[0] for _ in range(20)])
        bounds[K] = (runs.mean(), runs.std(ddof=1) / np.sqrt(len(runs)))
    (b1, s1), (b50, s50) = bounds[1], bounds[50]
    assert b50 - b1 > 4 * np.hypot(s1, s50)


def test_fit_trains_on_the_iwae_bound_and_refuses_what_does_not_apply(rng):
    x = minivae.load_digits("train")[0][:200]
    model = VAE(64, hidden_dims=(32,), latent_dim=4, likelihood="binomial", trials=16, seed=0)
    model.fit(x, epochs=5, batch_size=50, lr=3e-3, progress=False, objective="iwae", n_samples=4)
    losses = [row["loss"] for row in model.history_]
    assert losses[-1] < losses[0]
    for options, message in ((dict(warmup_epochs=2), "warm-up"), (dict(free_bits=0.1), "free bits"),
                             (dict(n_samples=0), "n_samples"), (dict(objective="iwea"), "objective")):
        with pytest.raises(ValueError, match=message):
            model.fit(x, epochs=1, progress=False, **{"objective": "iwae", "n_samples": 3, **options})
    with pytest.raises(ValueError, match="objective='iwae'"):
        model.fit(x, epochs=1, progress=False, n_samples=3)
    with pytest.raises(ValueError, match="beta=1"):
        VAE(64, hidden_dims=(8,), latent_dim=2, beta=0.5).fit((x > 0.5) * 1.0, epochs=1, objective="iwae", n_samples=2)
    with pytest.raises(ValueError, match=r"shape \(3, 4, 4\)"):
        model.loss_and_grads(x[:4], rng.standard_normal((4, 4)), objective="iwae", n_samples=3)


# ---------------------------------------------------------------- the conditional VAE
@pytest.mark.parametrize("hidden_dims", DEPTHS, ids=["linear", "two-hidden"])
@pytest.mark.parametrize("config", CONFIGS, ids=["bernoulli", "gaussian-fixed", "gaussian-learned"])
def test_conditional_gradients_match_finite_differences(config, hidden_dims, backend, rng):
    model = tiny(backend, hidden_dims, n_classes=4, **config)
    x, eps = data(rng, n=5)
    y = rng.integers(0, 4, 5)
    assert checked_gradients(model, x, eps, y=y).max_error < 1e-7
    iw = checked_gradients(model, x, rng.standard_normal((3, 5, 3)), y=y, objective="iwae", n_samples=3)
    assert iw.max_error < 1e-7, str(iw)


def test_the_label_is_an_input_of_both_encoder_and_decoder(rng):
    model = tiny(hidden_dims=(5,), n_classes=4)
    assert model.params["encoder.0.W"].shape == (6 + 4, 5) and model.params["decoder.0.W"].shape == (3 + 4, 5)
    x, _ = data(rng)
    mu0, mu1 = model.encode(x, y=0)[0], model.encode(x, y=1)[0]
    z = rng.standard_normal((4, 3))
    assert not np.allclose(mu0, mu1) and not np.allclose(model.decode(z, y=0), model.decode(z, y=1))
    assert model.sample(6, y=2).shape == (6, 6) and model.sample(4, y=[0, 1, 2, 3], mean=False).shape == (4, 6)


@pytest.mark.parametrize("y, message", [(None, "pass y"), ([0, 1], "4 whole-number labels"), (7, "0..3"),
                                        ([0.5, 1, 2, 3], "whole-number"), (-1, "0..3")])
def test_conditional_labels_are_checked(rng, y, message):
    model = tiny(n_classes=4)
    x, _ = data(rng)
    with pytest.raises(ValueError, match=message):
        model.encode(x, y=y)


def test_an_unconditional_model_refuses_labels(rng):
    with pytest.raises(ValueError, match="no n_classes"):
        tiny().sample(3, y=1)
    with pytest.raises(ValueError, match="n_classes >= 2"):
        tiny(n_classes=1)


def test_conditional_samples_are_recognised_as_their_class():
    # a 1-nearest-neighbour classifier on the training digits names the class of samples of p(x|y)
    x, y = minivae.load_digits("train")
    model = VAE(64, hidden_dims=(128,), latent_dim=4, likelihood="binomial", trials=16, n_classes=10, seed=0)
    model.fit(x, epochs=60, batch_size=64, lr=2e-3, progress=False, y=y)
    wanted = np.repeat(np.arange(10), 20)
    samples = to_numpy(model.sample(len(wanted), y=wanted)).astype(np.float64)
    nearest = ((samples[:, None, :] - x[None].astype(np.float64)) ** 2).sum(axis=2).argmin(axis=1)
    rate = float((y[nearest] == wanted).mean())
    se = math.sqrt(rate * (1 - rate) / len(wanted)) if 0 < rate < 1 else 1 / len(wanted)
    assert rate - 0.1 > 4 * max(se, math.sqrt(0.1 * 0.9 / len(wanted)))  # far above chance (1 in 10)


def test_a_gpu_step_launches_few_kernels(strict, rng, monkeypatch):
    """On a GPU a step's time goes to launching kernels: the element-wise chains must each be one (see backend.elementwise)."""
    monkeypatch.setenv("MINIVAE_FAST", "1")  # the fused chains, which the suite otherwise leaves off
    model = VAE(784, (400,), 20, backend="cupy", likelihood="bernoulli", seed=0)
    x = strict.asarray((rng.random((16, 784)) < 0.3).astype(np.float32))
    eps = strict.asarray(rng.standard_normal((16, 20), dtype=np.float32))
    strict.counts.reset()
    model.forward_backward(x, eps)
    # 44 today: 19 for the layers' products and bias sums, 6 fused chains, the rest the loss's sums and statistics
    assert strict.counts.launches <= 48 and strict.counts.transfers == 0


def batch_data(likelihood, rng, n):
    levels = rng.integers(0, 5, size=(n, 6)) / 4  # k / 4: whole levels of 4 trials, or 5 categories
    return {"bernoulli": (levels > 0.5).astype(float), "binomial": levels, "beta_binomial": levels,
            "categorical": levels, "continuous_bernoulli": rng.uniform(0.05, 0.95, (n, 6)),
            "gaussian": rng.standard_normal((n, 6))}[likelihood]


@pytest.mark.parametrize("likelihood", minivae.likelihoods.NAMES)
@pytest.mark.parametrize("objective", ["elbo", "iwae"])
@pytest.mark.parametrize("n_classes", [None, 3])
def test_a_batch_loss_is_the_average_of_its_examples_one_at_a_time(likelihood, objective, n_classes, rng):
    # Pairs each example with its own label and its own noise: a batch that mixed up which label goes with
    # which sample of z (the K samples of the IWAE are stacked sample-major) would differ from this average.
    n, k = 5, 3
    options = {"trials": 4} if "binomial" in likelihood else {"levels": 5} if likelihood == "categorical" else {}
    model = tiny(likelihood=likelihood, n_classes=n_classes, **options)
    x = batch_data(likelihood, rng, n)
    y = rng.permutation(np.arange(n) % 3) if n_classes else None
    eps = rng.standard_normal((k, n, 3) if objective == "iwae" else (n, 3))
    fit = {"objective": objective, "n_samples": k} if objective == "iwae" else {"kl_weight": 0.7}
    loss, grads = model.loss_and_grads(x, eps=eps, y=y, **fit)
    ones = [model.loss_and_grads(x[i:i + 1], eps=eps[..., i:i + 1, :], y=None if y is None else y[i:i + 1], **fit)
            for i in range(n)]
    assert loss == pytest.approx(np.mean([one[0] for one in ones]), rel=1e-12, abs=1e-12)
    for name, g in grads.items():
        average = np.mean([to_numpy(one[1][name]) for one in ones], axis=0)
        assert np.allclose(to_numpy(g), average, rtol=1e-10, atol=1e-12), name
