"""Interpolation, latent arithmetic and denoising."""

import numpy as np

from minivae import VAE, to_numpy
from minivae.datasets import load_digits
from minivae.latent import denoise, interpolate, latent_arithmetic, latent_mean


def linear_decoder_model():
    """A model whose decoder is the identity on a 2-D latent, so decoded points can be read back as z."""
    model = VAE(2, hidden_dims=(), latent_dim=2, likelihood="gaussian", dtype="float64")
    model.params["decoder.out.W"][...] = np.eye(2)
    model.params["decoder.out.b"][...] = 0
    model.params["encoder.mu.W"][...] = np.eye(2)
    model.params["encoder.mu.b"][...] = 0
    return model


def test_interpolation_walks_the_straight_line():
    model = linear_decoder_model()
    path = to_numpy(interpolate(model, np.array([0.0, 0.0]), np.array([4.0, -2.0]), steps=5))
    assert np.allclose(path, [[0, 0], [1, -0.5], [2, -1], [3, -1.5], [4, -2]])


def test_latent_arithmetic_adds_and_subtracts_group_means():
    model = linear_decoder_model()
    a, b = np.array([[1.0, 1.0], [3.0, 1.0]]), np.array([[0.0, 5.0]])
    assert np.allclose(to_numpy(latent_mean(model, a)), [2, 1])
    out = to_numpy(latent_arithmetic(model, np.array([[1.0, 0.0]]), plus=[b], minus=[a]))
    assert np.allclose(out, [[1 + 0 - 2, 0 + 5 - 1]])


def test_denoising_pulls_noisy_digits_back_toward_the_clean_ones():
    x, _ = load_digits("train")
    model = VAE(64, hidden_dims=(128,), latent_dim=8, seed=0)
    model.fit(x, epochs=40, progress=False, binarize="dynamic")  # a Bernoulli model of binary draws of the digits
    clean = load_digits("test")[0][:100]
    rng = np.random.default_rng(0)
    flip = rng.random(clean.shape) < 0.35
    noisy = np.where(flip, 1 - clean, clean)  # 35% of pixels inverted
    restored = to_numpy(denoise(model, noisy))
    # The model reconstructs even clean digits with a mean error of about 0.13, so
    # it can only help once the noise is larger than that (here about 0.27).
    assert np.abs(restored - clean).mean() < 0.8 * np.abs(noisy - clean).mean()
