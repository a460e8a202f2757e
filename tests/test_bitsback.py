"""Bits-back coding with a trained VAE: every image back bit for bit, at the negative ELBO's length."""

import math

import numpy as np
import pytest

import minivae
from minivae.ans import Message
from minivae.bitsback import BitsBackCodec, PixelCodec
from minivae.datasets import load_digits


def to_bits(nats):
    return np.asarray(nats, dtype=np.float64) / math.log(2)


@pytest.fixture(scope="module")
def trained():
    x, _ = load_digits("train")
    model = minivae.VAE(64, hidden_dims=(64,), latent_dim=8, activation="tanh", likelihood="binomial", trials=16,
                        seed=0)
    return model.fit(x, epochs=60, batch_size=64, lr=3e-3, progress=False)


def test_the_test_digits_come_back_bit_for_bit_at_the_elbos_length(trained):
    x_test, _ = load_digits("test")
    counts = np.rint(x_test * 16).astype(np.int64)
    codec = BitsBackCodec(trained)
    message = codec.encode(counts)
    initial = 64 + 32 * codec.initial_words()
    received = Message.from_bytes(message.to_bytes())
    assert np.array_equal(codec.decode(received, len(counts)), counts)
    assert received.bits() == initial  # the initial bits are given back too

    # the message grew by the images' code lengths, up to the head's flush and one partly filled word
    lengths = codec.code_lengths_
    assert abs(message.bits() - initial - lengths.sum()) <= 64 + 32
    # each length is one draw of z ~ q: its mean is the negative ELBO, up to the discretisation
    neg_elbo = -np.mean([to_bits(trained.elbo(x_test)) for _ in range(20)], axis=0)  # (N,) bits
    diff = lengths - neg_elbo
    se = diff.std(ddof=1) / math.sqrt(len(diff))
    assert abs(diff.mean()) < 0.02 * neg_elbo.mean() + 4 * se, (lengths.mean(), neg_elbo.mean(), se)


def test_a_bernoulli_model_codes_binary_images(rng):
    x, _ = load_digits("train")
    binary = (x > 0.5).astype(np.float32)
    model = minivae.VAE(64, hidden_dims=(32,), latent_dim=4, activation="tanh", seed=0)
    model.fit(binary[:300], epochs=5, batch_size=50, progress=False)
    counts = binary[300:330].astype(np.int64)
    codec = BitsBackCodec(model, latent_precision=8, posterior_precision=16, pixel_precision=16)
    assert np.array_equal(codec.decode(codec.encode(counts), 30), counts)


@pytest.mark.parametrize("config", [dict(likelihood="categorical", levels=17), dict(likelihood="beta_binomial", trials=16)])
def test_each_pmf_over_levels_codes_the_digits_and_gets_them_back(config):
    x, _ = load_digits("train")
    x_test, _ = load_digits("test")
    model = minivae.VAE(64, hidden_dims=(32,), latent_dim=3, activation="tanh", seed=0, **config)
    model.fit(x, epochs=3, batch_size=64, progress=False)
    counts = np.rint(x_test[:20] * 16).astype(np.int64)
    codec = BitsBackCodec(model, latent_precision=8, posterior_precision=16, pixel_precision=16)
    assert np.array_equal(codec.decode(Message.from_bytes(codec.encode(counts).to_bytes()), 20), counts)
    # each image's length is -log2 of the quantised p(x|z) p(z) / q(z|x): near the model's own numbers
    log_pmf = model.likelihood_.log_pmf(model.decoder_forward(model.encode(x_test[:20])[0])[0])
    assert log_pmf.shape == (20, 64, 17) and np.all(codec.code_lengths_ > 0)


def test_the_per_pixel_baseline_codes_at_its_information_content():
    x, _ = load_digits("train")
    x_test, _ = load_digits("test")
    train, test = (np.rint(a * 16).astype(np.int64) for a in (x, x_test[:50]))
    codec = PixelCodec(train, 16)
    message = codec.encode(test)
    info = -np.log2(np.take_along_axis(codec.freqs[None], test[..., None], axis=2) / 2**codec.precision).sum()
    assert info <= message.bits() <= info + 64 + 32
    assert np.array_equal(codec.decode(Message.from_bytes(message.to_bytes()), 50), test)


def test_what_cannot_be_coded_is_refused(trained):
    codec = BitsBackCodec(trained)
    for counts, message in ((np.zeros((2, 63), dtype=int), r"\(N, 64\)"), (np.full((2, 64), 17), "0..16"),
                            (np.full((2, 64), 0.5), "integers")):
        with pytest.raises(ValueError, match=message):
            codec.encode(counts)
    with pytest.raises(ValueError, match="categorical or Bernoulli model.*is a density"):
        BitsBackCodec(minivae.VAE(64, hidden_dims=(8,), latent_dim=2, likelihood="gaussian"))
    for family in (minivae.FlowVAE(64, hidden_dims=(8,), latent_dim=2, likelihood="binomial", trials=16),
                   minivae.HierarchicalVAE(64, hidden_dims=(8,), latent_dim=2, likelihood="binomial", trials=16)):
        with pytest.raises(ValueError, match="plain VAE's prior N\\(0, I\\)"):
            BitsBackCodec(family)


def test_a_model_on_either_backend_codes_and_decodes(backend):
    # the coder runs on the host and asks the model only for encode and decode
    x, _ = load_digits("test")
    counts = np.rint(x[:5] * 16).astype(np.int64)
    model = minivae.VAE(64, hidden_dims=(16,), latent_dim=3, likelihood="binomial", trials=16, seed=0,
                        backend=backend)
    codec = BitsBackCodec(model, latent_precision=8, posterior_precision=16, pixel_precision=16)
    assert np.array_equal(codec.decode(codec.encode(counts), 5), counts)


def test_a_code_length_averages_to_the_bucketed_bound_where_no_pixel_is_floored(trained):
    x_test, _ = load_digits("test")
    counts = np.rint(x_test[:150] * 16).astype(np.int64)
    codec = BitsBackCodec(trained)
    codec.encode(counts)
    draws, floored = codec.discrete_bound(counts, replicates=10)
    assert draws.shape == (10, 150) and floored < 1e-3
    diff = codec.code_lengths_ - draws.mean(axis=0)
    se = diff.std(ddof=1) / math.sqrt(len(diff))
    assert abs(diff.mean()) < 4 * se + 0.01 * draws.mean(), (diff.mean(), se)


def test_bad_arguments_are_named(trained):
    tiny_model = trained
    with pytest.raises(TypeError, match="codes with a trained VAE; got NoneType"):
        BitsBackCodec(None)
    for options, message in (({"latent_precision": -1}, "latent_precision must be an integer from 1 to 16"),
                             ({"latent_precision": 24}, "from 1 to 16"),
                             ({"pixel_precision": 2}, "too few for every one of the model's")):
        with pytest.raises(ValueError, match=message):
            BitsBackCodec(tiny_model, **options)
    codec = BitsBackCodec(tiny_model)
    with pytest.raises(ValueError, match="holds no images"):
        codec.encode(np.zeros((0, tiny_model.input_dim), dtype=np.int64))
    with pytest.raises(TypeError, match="Message.from_bytes"):
        codec.decode(b"\x00" * 16, 1)
