"""The baselines without a latent: the nearest training image against a direct search."""

import numpy as np
import pytest

from minivae.baselines import nearest


def test_the_nearest_image_is_the_one_a_direct_search_finds():
    rng = np.random.default_rng(0)
    data, images = rng.random((50, 7)), rng.random((600, 7))  # more images than a block
    index, distance = nearest(images, data, block=128)
    direct = ((images[:, None, :] - data[None]) ** 2).sum(axis=2)
    assert np.array_equal(index, direct.argmin(axis=1))
    assert np.allclose(distance, np.sqrt(direct.min(axis=1)), rtol=1e-12, atol=1e-12)
    assert np.allclose(nearest(data, data)[1], 0, atol=1e-6) and np.array_equal(nearest(data, data)[0], np.arange(50))


def test_shapes_that_do_not_match_are_named():
    with pytest.raises(ValueError, match=r"\(N, D\) images and \(M, D\) data"):
        nearest(np.zeros((3, 4)), np.zeros((5, 3)))
