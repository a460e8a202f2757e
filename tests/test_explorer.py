"""The latent explorer: the point the sliders choose, the image drawn there, and the static view."""

import base64
import re

import numpy as np
import pytest

import minivae
from minivae import to_numpy
from minivae.datasets import load_digits
from minivae.explorer import latent_explorer


@pytest.fixture(scope="module")
def explorer():
    x, y = load_digits("test")
    model = minivae.VAE(64, hidden_dims=(32,), latent_dim=4, likelihood="binomial", trials=16, seed=0)
    model.fit(load_digits("train")[0], epochs=3, progress=False)
    return latent_explorer(model, x[:200], y[:200])


def test_the_sliders_move_the_two_most_active_dimensions_and_hold_the_rest_at_the_mean_code(explorer):
    x = load_digits("test")[0][:200]
    mu = to_numpy(explorer.model.encode(x)[0]).astype(np.float64)
    spread = mu.var(axis=0)
    assert sorted(spread[list(explorer.dims)]) == sorted(spread)[-2:]
    assert explorer.share == pytest.approx(spread[list(explorer.dims)].sum() / spread.sum())
    z = explorer.code(0.25, -1.5)
    assert z[explorer.dims[0]] == 0.25 and z[explorer.dims[1]] == -1.5
    others = [d for d in range(4) if d not in explorer.dims]
    np.testing.assert_allclose(z[others], mu.mean(axis=0)[others])
    np.testing.assert_allclose(explorer.image(0.25, -1.5), to_numpy(explorer.model.decode(z[None]))[0], rtol=1e-6)


def test_moving_a_slider_redraws_the_image_with_the_point_marked(explorer):
    pytest.importorskip("ipywidgets")
    explorer.widget()
    before = explorer.picture.value
    explorer.sliders[0].value = explorer.limits[0][1]
    assert explorer.picture.value != before and bytes(explorer.picture.value).startswith(b"\x89PNG")
    fig = explorer.figure(0.5, -0.25)
    marker = [line for line in fig.axes[0].lines if line.get_label() == "the point"][0]
    assert (marker.get_xdata()[0], marker.get_ydata()[0]) == (0.5, -0.25)


def test_without_a_widget_frontend_the_output_is_a_static_grid_that_says_how_to_get_the_sliders(explorer):
    bundle = explorer._repr_mimebundle_()
    assert "pip install" in bundle["text/plain"] and "sliders" in bundle["text/plain"]
    page = bundle["text/html"]
    assert "static grid" in page and "jupyter lab" in page
    picture = base64.b64decode(re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1))
    assert picture.startswith(b"\x89PNG") and len(picture) > 5000
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return
    assert "application/vnd.jupyter.widget-view+json" in bundle  # Jupyter with ipywidgets shows the sliders


def test_the_explorer_refuses_what_it_cannot_draw():
    x, y = load_digits("test")
    with pytest.raises(ValueError, match="two latent dimensions"):
        latent_explorer(minivae.VAE(64, hidden_dims=(), latent_dim=1), x, y)
    with pytest.raises(ValueError, match="conditional"):
        latent_explorer(minivae.VAE(64, hidden_dims=(), latent_dim=2, n_classes=10), x, y)
    with pytest.raises(ValueError, match="one label per row"):
        latent_explorer(minivae.VAE(64, hidden_dims=(), latent_dim=2), x, y[:5])
    with pytest.raises(ValueError, match="dims must name two"):
        latent_explorer(minivae.VAE(64, hidden_dims=(), latent_dim=3), x, y, dims=(1, 1))
