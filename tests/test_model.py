"""The whole VAE: every parameter's gradient against finite differences, on every backend."""

import numpy as np
import pytest

import minivae
from minivae import VAE, to_numpy
from minivae.gradcheck import check_gradients, rel_error
from minivae.optim import Adam

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
    report = check_gradients(model, x, eps)
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
