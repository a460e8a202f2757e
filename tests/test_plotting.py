"""Every figure renders without a display and without touching pyplot's global state."""

import io
import sys

import numpy as np
import pytest
from matplotlib.figure import Figure

from minivae import VAE, plotting
from minivae.datasets import load_digits


@pytest.fixture(scope="module")
def model():
    m = VAE(64, hidden_dims=(32,), latent_dim=2, seed=0, likelihood="binomial", trials=16)
    m.fit(load_digits()[0][:200], epochs=3, progress=False, validation=load_digits("test")[0][:50])
    return m


def render(fig):
    assert isinstance(fig, Figure)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def test_all_figures_render(model):
    x, y = load_digits("test")
    render(plotting.plot_history(model.history_))
    render(plotting.plot_reconstructions(model, x, n=5))
    render(plotting.plot_samples(model, 16))
    render(plotting.plot_latent(model, x, y))
    render(plotting.plot_manifold(model, n=5))
    render(plotting.plot_interpolation(model, x[0], x[1], steps=4))
    assert "matplotlib.pyplot" not in sys.modules or not sys.modules["matplotlib.pyplot"].get_fignums()


def test_latent_plot_projects_larger_latents():
    m = VAE(64, hidden_dims=(), latent_dim=5)
    x, y = load_digits("test")
    ax = plotting.plot_latent(m, x, y).axes[0]
    assert "principal direction" in ax.get_xlabel()


def test_manifold_grid_uses_normal_quantiles():
    z = plotting.manifold_grid(n=3, edge=0.05)
    q = 1.6448536  # the 95% quantile of N(0, 1)
    assert np.allclose(z[0], [-q, q], atol=1e-6)  # top left: smallest z[0], largest z[1]
    assert np.allclose(z[4], [0, 0], atol=1e-6)
    assert np.allclose(z[8], [q, -q], atol=1e-6)


def test_tile_layout():
    images = np.arange(3 * 4, dtype=np.float32).reshape(3, 4) / 12
    canvas = plotting.tile(images, cols=2, shape=(2, 2), pad=1)
    assert canvas.shape == (5, 5)
    assert np.allclose(canvas[:2, :2], images[0].reshape(2, 2))
    assert np.allclose(canvas[:2, 3:], images[1].reshape(2, 2))
    assert np.allclose(canvas[3:, :2], images[2].reshape(2, 2))
    assert canvas[2].sum() == 0 and canvas[:, 2].sum() == 0  # white padding


def test_non_square_images_need_a_shape():
    with pytest.raises(ValueError, match="pass shape"):
        plotting.image_shape(10)


def test_one_latent_dimension_is_drawn_too():
    model = VAE(64, hidden_dims=(8,), latent_dim=1)
    x, y = load_digits("test")
    assert isinstance(plotting.plot_latent(model, x[:50], y[:50]), Figure)
    assert isinstance(plotting.plot_manifold(model, n=7), Figure)
    assert plotting.manifold_grid(7, latent_dim=1).shape == (7, 1)


def test_bad_figure_arguments_are_errors():
    with pytest.raises(ValueError, match="history is empty"):
        plotting.plot_history([])
    with pytest.raises(ValueError, match="cols must be a finite integer > 0"):
        plotting.tile(np.zeros((4, 64)), 0, (8, 8))
    with pytest.raises(ValueError, match=r"dims must name two of the 3 latent dimensions"):
        plotting.manifold_grid(5, dims=(0, 3), latent_dim=3)


def test_plot_images_tiles_any_images():
    fig = plotting.plot_images(np.random.default_rng(0).random((6, 64)), cols=3, title="six")
    assert isinstance(fig, Figure) and fig.axes[0].get_title() == "six"
    assert fig.axes[0].images[0].get_array().shape == (2 * 9 - 1, 3 * 9 - 1)
