"""The compressed file: its header refuses another model, and damage is found, never decoded into other images."""

import numpy as np
import pytest

import minivae
from minivae.bitsback import BitsBackCodec
from minivae.compressed import pack, read_header, unpack
from minivae.datasets import load_digits


@pytest.fixture(scope="module")
def coded():
    x, _ = load_digits("train")
    x_test, _ = load_digits("test")
    model = minivae.VAE(64, hidden_dims=(16,), latent_dim=2, activation="tanh", likelihood="beta_binomial", trials=16,
                        seed=0).fit(x, epochs=2, batch_size=64, progress=False)
    counts = np.rint(x_test[:6] * 16).astype(np.int64)
    codec = BitsBackCodec(model, latent_precision=8, posterior_precision=16, pixel_precision=16)
    return model, counts, pack(codec, counts, codec.encode(counts))


def test_a_file_decodes_to_its_images(coded):
    model, counts, data = coded
    assert np.array_equal(unpack(data, model), counts)
    header, _ = read_header(data)
    assert (header["images"], header["pixels"], header["levels"], header["likelihood"]) == (6, 64, 17, "beta_binomial")


def test_another_model_is_refused_before_decoding(coded):
    model, _, data = coded
    other = minivae.VAE(64, hidden_dims=(16,), latent_dim=2, activation="tanh", likelihood="beta_binomial", trials=16,
                        seed=1)
    with pytest.raises(ValueError, match="compressed with another model"):
        unpack(data, other)


def test_every_single_bit_flip_and_truncation_is_an_error(coded):
    model, counts, data = coded
    rng = np.random.default_rng(0)
    flips = rng.choice(8 * len(data), size=300, replace=False)
    caught = 0
    for bit in flips:
        damaged = bytearray(data)
        damaged[bit // 8] ^= 1 << (bit % 8)
        try:
            decoded = unpack(bytes(damaged), model)
        except ValueError:
            caught += 1
        else:  # a flip in the header's spacing or a key's case could leave the images intact: never other images
            assert np.array_equal(decoded, counts)
    assert caught >= 0.99 * len(flips), caught
    for size in list(range(0, len(data), max(1, len(data) // 150))) + [len(data) - 1]:
        with pytest.raises(ValueError):
            unpack(data[:size], model)


def test_what_is_not_a_compressed_file_says_so(coded):
    model, _, _ = coded
    with pytest.raises(ValueError, match="not a file written by minivae compress"):
        unpack(b"PK\x03\x04" + bytes(100), model)
