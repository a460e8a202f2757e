"""Bad input gets a ValueError that names the problem and the fix."""

import numpy as np
import pytest

from minivae import VAE, evaluate


@pytest.fixture
def model():
    return VAE(6, hidden_dims=(4,), latent_dim=2)


@pytest.mark.parametrize("x, message", [
    (np.ones(6), r"2-D with shape \(N, 6\)"),
    (np.ones((2, 2, 3)), r"Flatten images first"),
    (np.ones((3, 5)), r"5 features per example but the model expects 6"),
    (np.ones((0, 6)), r"empty"),
    (np.array([[0.5] * 6, [np.nan] + [0.5] * 5]), r"NaN or inf \(first in row 1\)"),
    (np.array([[np.inf] * 6]), r"NaN or inf"),
    (np.full((2, 6), 255.0), r"Bernoulli likelihood needs x in \[0, 1\].*divide by 255"),
    (np.full((2, 6), -0.5), r"\[0, 1\]"),
    ([["a"] * 6], r"holds text or Python objects; pass numbers"),
])
def test_bad_batches(model, x, message):
    for method in (model.loss_and_grads, model.encode, model.elbo, model.reconstruct):
        with pytest.raises(ValueError, match=message):
            method(x)


def test_gaussian_models_accept_any_real_values():
    model = VAE(6, hidden_dims=(), latent_dim=2, likelihood="gaussian")
    model.loss_and_grads(np.full((2, 6), -3.0))


def test_bad_eps(model):
    x = np.full((3, 6), 0.5)
    with pytest.raises(ValueError, match=r"eps has 2 rows but x has 3"):
        model.loss_and_grads(x, eps=np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"eps has 3 features per example but the model expects 2"):
        model.loss_and_grads(x, eps=np.zeros((3, 3)))


def test_bad_latents(model):
    with pytest.raises(ValueError, match=r"z has 3 features per example but the model expects 2"):
        model.decode(np.zeros((1, 3)))


@pytest.mark.parametrize("kwargs, message", [
    (dict(activation="gelu"), r"unknown activation 'gelu'; choose one of 'relu', 'tanh'"),
    (dict(likelihood="poisson"), r"unknown likelihood 'poisson'; choose one of 'bernoulli', 'binomial', 'categorical', 'beta_binomial', 'continuous_bernoulli', 'gaussian'"),
    (dict(backend="tpu"), r"unknown backend 'tpu'"),
    (dict(dtype="float16"), r"unknown dtype 'float16'; choose one of 'float32', 'float64'"),
    (dict(latent_dim=0), r"latent_dim must be a finite integer > 0"),
    (dict(hidden_dims=(4, -1)), r"each hidden size must be"),
    (dict(beta=-1.0), r"beta must be a finite number >= 0"),
    (dict(likelihood="gaussian", decoder_std=0), r"decoder_std must be 'learned' or a number from 1e-06 to 1e\+06"),
    (dict(likelihood="gaussian", decoder_std="fixed"), r"decoder_std must be 'learned' or a number from 1e-06 to 1e\+06"),
    (dict(likelihood="gaussian", decoder_std=1e200), r"decoder_std must be 'learned' or a number from 1e-06 to 1e\+06"),
    (dict(hidden_dims=(10**12,)), r"needs .* GiB to train, more than this machine's"),
    (dict(hidden_dims="400"), r"hidden_dims must be a sequence of integers"),
    (dict(seed=-1), r"seed must be a non-negative integer"),
    (dict(seed=1.5), r"seed must be a non-negative integer"),
    (dict(beta=10**400), r"beta must be a finite number >= 0"),
    (dict(latent_dim=10**400), r"needs .* GiB to train"),
])
def test_bad_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VAE(6, **{"hidden_dims": (4,), **kwargs})


def test_bad_sample_count(model):
    with pytest.raises(ValueError, match="n must be"):
        model.sample(0)
    with pytest.raises(ValueError, match="n_samples must be"):
        model.elbo(np.full((1, 6), 0.5), n_samples=0)
    x = np.full((1, 6), 0.5)
    with pytest.raises(ValueError, match="n_samples must be"):
        model.log_likelihood(x, n_samples=0)
    with pytest.raises(ValueError, match="n_samples must be"):
        evaluate.log_likelihood(model, x, n_samples=0)  # the function itself checks, not only the method
    with pytest.raises(ValueError, match="max_rows must be"):
        evaluate.log_likelihood(model, x, n_samples=4, max_rows=0)


def test_complex_and_masked_inputs_are_refused_not_silently_changed(model):
    with pytest.raises(ValueError, match="x holds complex numbers"):
        model.encode(np.full((2, 6), 0.5 + 0.1j))
    masked = np.ma.masked_array(np.full((2, 6), 0.5), mask=np.eye(2, 6, dtype=bool))
    with pytest.raises(ValueError, match="x is a masked array.*filled"):
        model.fit(masked, epochs=1, progress=False)


@pytest.mark.parametrize("kwargs, message", [
    (dict(kl_weight=float("nan")), "kl_weight must be a finite number >= 0"),
    (dict(kl_weight=-1.0), "kl_weight must be a finite number >= 0"),
    (dict(kl_weight=float("inf")), "kl_weight must be a finite number >= 0"),
    (dict(kl_weight=np.ones(2)), "kl_weight must be a finite number >= 0"),
    (dict(free_bits=-0.5), "free_bits must be a finite number >= 0"),
    (dict(free_bits=float("nan")), "free_bits must be a finite number >= 0"),
])
def test_loss_weights_are_checked(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        model.loss_and_grads(np.full((2, 6), 0.5), **kwargs)


def test_a_seed_of_none_is_drawn_and_kept():
    a = VAE(6, hidden_dims=(4,), seed=None)
    assert isinstance(a.seed, int)
    assert np.array_equal(VAE(6, hidden_dims=(4,), seed=a.seed).flat_params, a.flat_params)


def test_a_tensor_that_autograd_tracks_is_named_with_the_fix():
    torch = pytest.importorskip("torch", reason="torch is not installed (an optional test oracle)")
    model = VAE(6, hidden_dims=(4,), latent_dim=2, likelihood="gaussian")
    with pytest.raises(TypeError, match=r"requires grad; pass x.detach\(\).cpu\(\).numpy\(\)"):
        model.elbo(torch.zeros((2, 6), requires_grad=True))
    assert model.elbo(torch.zeros((2, 6))).shape == (2,)  # a plain tensor converts as an array does
