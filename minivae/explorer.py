"""A latent space to move through: two sliders over two latent dimensions redraw the decoded image.

``latent_explorer(model, x, labels)`` returns a :class:`LatentExplorer`. Left as a notebook cell's value it
shows, in Jupyter with ipywidgets, two sliders, the point they choose marked on the scatter of the codes of
``x``, and the image the decoder draws there. Where no widget can run (a static page, a notebook viewer, a
kernel without ipywidgets) the same output shows a static grid of decoded images over the same two
dimensions, and says how to get the sliders.
"""

from __future__ import annotations

import base64
import html
import io
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from .backend import to_numpy
from .plotting import image_batch, image_shape, tile

if TYPE_CHECKING:  # names for annotations alone, not imported at run time
    from .model import VAE

HOW_TO_MOVE = ('To move through it with sliders, open this notebook in Jupyter with ipywidgets '
               '(pip install -e ".[notebooks]", then jupyter lab notebooks/).')


def png(fig: Figure, dpi: int = 80) -> bytes:
    """A figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


class LatentExplorer:
    """Two latent dimensions of a trained model, held by sliders; the rest at the mean code of the data.

    Attributes
    ----------
    dims : tuple of int
        The two dimensions the sliders move: by default the two whose posterior means vary most over the
        data (the most active units).
    centre : (L,) array
        The mean of the posterior means over the data: where the other dimensions stay.
    codes : (N, 2) array
        The posterior means of the data in the two dimensions, drawn as the scatter.
    limits : ((lo, hi), (lo, hi))
        Each slider's range: the span of the codes, widened by a tenth on each side.
    share : float
        The two dimensions' share of the summed variance of the posterior means: how much of the spread of
        the codes the sliders reach.
    """

    def __init__(self, model: VAE, x: Any, labels: Any, dims: tuple[int, int] | None = None) -> None:
        if model.n_classes is not None:
            raise ValueError("the explorer draws an unconditional model; a conditional one decodes a label too")
        if model.latent_dim < 2:
            raise ValueError(f"the explorer needs two latent dimensions; this model has {model.latent_dim}")
        x = image_batch(x, "x")
        labels = np.asarray(labels)
        if labels.shape != (len(x),):
            raise ValueError(f"labels must hold one label per row of x ({len(x)}); got shape {labels.shape}")
        mu = to_numpy(model.encode(x)[0]).astype(np.float64)
        variances = mu.var(axis=0)  # Var_x E[z|x] per dimension: how active each unit is
        if dims is None:
            most_active = np.argsort(-variances, kind="stable")
            dims = (int(most_active[0]), int(most_active[1]))
        elif len(dims) != 2 or dims[0] == dims[1] or not all(0 <= int(d) < model.latent_dim for d in dims):
            raise ValueError(f"dims must name two of the {model.latent_dim} latent dimensions (0 to "
                             f"{model.latent_dim - 1}); got {dims!r}")
        self.model, self.labels, self.dims = model, labels, (int(dims[0]), int(dims[1]))
        self.centre = mu.mean(axis=0)
        self.codes = mu[:, list(self.dims)]
        self.share = float(variances[list(self.dims)].sum() / variances.sum())
        lo, hi = self.codes.min(axis=0), self.codes.max(axis=0)
        pad = 0.1 * (hi - lo)
        self.limits = tuple((float(a), float(b)) for a, b in zip(lo - pad, hi + pad))
        self.shape = image_shape(model.input_dim)

    def code(self, a: float, b: float) -> np.ndarray:
        """The latent point with ``z[dims[0]] = a``, ``z[dims[1]] = b`` and the other dimensions at ``centre``."""
        z = self.centre.copy()
        z[list(self.dims)] = a, b
        return z

    def image(self, a: float, b: float) -> np.ndarray:
        """The decoder's mean image at :meth:`code` ``(a, b)``, (D,) on the host."""
        return to_numpy(self.model.decode(self.code(a, b)[None].astype(self.model.dtype)))[0]

    def figure(self, a: float, b: float) -> Figure:
        """The codes of the data with the point ``(a, b)`` marked, beside the image decoded there."""
        fig = Figure(figsize=(7.5, 3.4), layout="constrained")
        where, drawn = fig.subplots(1, 2, width_ratios=(1.4, 1))
        self.scatter(where)
        where.plot([a], [b], marker="x", color="red", markersize=12, markeredgewidth=3, label="the point")
        drawn.imshow(self.image(a, b).reshape(self.shape), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        drawn.set_axis_off()
        drawn.set_title(f"decoded: z[{self.dims[0]}] = {a:+.2f}, z[{self.dims[1]}] = {b:+.2f}", fontsize=10)
        return fig

    def scatter(self, ax: Any) -> None:
        ax.scatter(self.codes[:, 0], self.codes[:, 1], c=self.labels, cmap="tab10", s=5, alpha=0.6)
        ax.set(xlabel=f"z[{self.dims[0]}]", ylabel=f"z[{self.dims[1]}]", xlim=self.limits[0], ylim=self.limits[1],
               title="posterior means by label")

    def grid(self, n: int = 7) -> Figure:
        """The static view: the codes with an ``n x n`` grid of points over the sliders' ranges, and the
        images decoded at those points (the top row has the largest ``z[dims[1]]``)."""
        across = np.linspace(*self.limits[0], n)
        up = np.linspace(*self.limits[1], n)[::-1]
        images = np.stack([self.image(a, b) for b in up for a in across])
        fig = Figure(figsize=(8.5, 4), layout="constrained")
        where, drawn = fig.subplots(1, 2, width_ratios=(1, 1.1))
        self.scatter(where)
        points = np.array([(a, b) for b in up for a in across])
        where.plot(points[:, 0], points[:, 1], "k+", markersize=6)
        drawn.imshow(tile(images, n, self.shape), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        drawn.set_axis_off()
        drawn.set_title(f"decoded at the + points: z[{self.dims[0]}] across, z[{self.dims[1]}] up")
        return fig

    def widget(self) -> Any:
        """The interactive view (needs ipywidgets): two sliders above the figure they redraw.

        The sliders are ``self.sliders`` and the figure's image widget ``self.picture``, so that code (and a
        test) can move them too.
        """
        import ipywidgets as widgets

        self.sliders = [widgets.FloatSlider(value=float(np.clip(self.centre[d], lo, hi)), min=lo, max=hi,
                                            step=(hi - lo) / 100, description=f"z[{d}]", continuous_update=True)
                        for d, (lo, hi) in zip(self.dims, self.limits)]
        self.picture = widgets.Image(format="png")

        def redraw(_=None):
            self.picture.value = png(self.figure(self.sliders[0].value, self.sliders[1].value))

        for slider in self.sliders:
            slider.observe(redraw, names="value")
        redraw()
        return widgets.VBox([widgets.HBox(self.sliders), self.picture])

    def caption(self) -> str:
        held = self.model.latent_dim - 2
        others = f"; the other {held} are held at the mean code of the data" if held else ""
        return (f"z[{self.dims[0]}] and z[{self.dims[1]}] hold {self.share:.0%} of the variance of the codes{others}. "
                f"This is a static grid. {HOW_TO_MOVE}")

    def _repr_mimebundle_(self, include=None, exclude=None):
        """The sliders for a frontend that runs widgets, and the static grid, with how to get the sliders,
        for one that does not: each frontend shows the richest view it can."""
        picture = base64.b64encode(png(self.grid())).decode("ascii")
        bundle = {"text/plain": self.caption(),
                  "text/html": f'<p>{html.escape(self.caption())}</p>'
                               f'<img alt="decoded images over a grid of two latent dimensions" '
                               f'src="data:image/png;base64,{picture}"/>'}
        try:
            view = self.widget()
        except ImportError:
            return bundle
        live = view._repr_mimebundle_()
        live.pop("text/plain", None)
        return {**bundle, **live}


def latent_explorer(model: VAE, x: Any, labels: Any, dims: tuple[int, int] | None = None) -> LatentExplorer:
    """Sliders over two latent dimensions of ``model``, the codes of ``x`` (coloured by ``labels``) marked.

    See :class:`LatentExplorer`; ``dims`` defaults to the two most active units on ``x``.
    """
    return LatentExplorer(model, x, labels, dims)
