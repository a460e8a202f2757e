"""Figures for a trained VAE. Each function returns a matplotlib ``Figure``.

Figures are built with ``matplotlib.figure.Figure`` directly, not pyplot, so
they need no display, hold no global state, and never call ``show()``. In a
notebook, a figure left as a cell's value is drawn inline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .backend import to_numpy
from .validation import check_positive

if TYPE_CHECKING:  # names for annotations alone, not imported at run time
    from .model import VAE


def image_shape(d: int) -> tuple[int, int]:
    """The square image shape for ``d`` pixels (64 -> (8, 8), 784 -> (28, 28))."""
    side = int(round(np.sqrt(d)))
    if side * side != d:
        raise ValueError(f"{d} pixels do not form a square image; pass shape=(height, width)")
    return side, side


def check_shape(shape: Any, pixels: int) -> tuple[int, int]:
    """``shape`` as ``(height, width)``: two positive integers whose product is ``pixels``."""
    ok = isinstance(shape, (tuple, list)) and len(shape) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in shape)
    if not ok or shape[0] * shape[1] != pixels:
        raise ValueError(f"shape must be (height, width), two positive integers whose product is the {pixels} pixels "
                         f"of an image; got {shape!r}")
    return int(shape[0]), int(shape[1])


def image_batch(images: Any, name: str = "images") -> np.ndarray:
    """``images`` as a finite (n, pixels) NumPy array, with at least one image."""
    images = to_numpy(images)
    if images.ndim != 2 or images.shape[0] == 0 or images.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a non-empty numeric array of shape (n, pixels); got "
                         f"{images.dtype} of shape {images.shape}")
    if not np.isfinite(images).all():
        raise ValueError(f"{name} hold NaN or inf; they cannot be drawn")
    return images


def tile(images: Any, cols: int, shape: tuple[int, int], pad: int = 1) -> np.ndarray:
    """Arrange ``images`` (n, h*w) into one (rows*(h+pad), cols*(w+pad)) array for a single imshow."""
    cols = check_positive("cols", cols, integer=True)
    images = image_batch(images)
    shape = check_shape(shape, images.shape[1])
    images = images.reshape(-1, *shape)
    n, (h, w) = len(images), shape
    rows = -(-n // cols)
    canvas = np.zeros((rows * (h + pad) - pad, cols * (w + pad) - pad), dtype=np.float32)  # 0 draws white
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        canvas[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = img
    return canvas


def _image_figure(canvas, title, width=6.0):
    h, w = canvas.shape
    fig = Figure(figsize=(width, max(1.0, width * h / w)), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(canvas, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title)
    return fig


def plot_images(images: Any, cols: int | None = None, title: str = "", shape: tuple[int, int] | None = None) -> Figure:
    """Images (n, h*w) in a grid of ``cols`` columns (default: one row), pixels in [0, 1]."""
    images = image_batch(images)
    cols = len(images) if cols is None else check_positive("cols", cols, integer=True)
    width = min(10.0, 0.8 * min(cols, len(images)))
    return _image_figure(tile(images, cols, shape or image_shape(images.shape[1])), title, width=max(width, 2.0))


def plot_history(history: Sequence[Mapping[str, Any]]) -> Figure:
    """Loss curves: the training loss with its reconstruction and KL terms, and the validation ELBO."""
    if not history:
        raise ValueError("the history is empty: there is nothing to plot until the model has trained an epoch")
    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(10, 3.5), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(epochs, [row["loss"] for row in history], label="loss (negative ELBO)")
    ax1.plot(epochs, [row["reconstruction"] for row in history], label="reconstruction  -E[log p(x|z)]")
    if all(row.get("val_elbo") is not None for row in history):
        ax1.plot(epochs, [-row["val_elbo"] for row in history], "--", label="validation negative ELBO")
    ax1.set(xlabel="epoch", ylabel="nats per example", title="Loss")
    ax1.legend()
    ax2.plot(epochs, [row["kl"] for row in history], color="C3", label="KL(q(z|x) || p(z))")
    if "active_units" in history[0]:
        ax2b = ax2.twinx()
        units = [row["active_units"] for row in history]
        ax2b.plot(epochs, units, color="C2", label="active units")
        ax2b.set_ylim(0, max(units) + 1)  # a whole-number axis from 0, even when the count never changes
        ax2b.set_ylabel("active units")
        ax2b.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax2b.legend(loc="lower right")
    ax2.set(xlabel="epoch", ylabel="nats per example", title="KL term")
    ax2.legend(loc="upper left")
    return fig


def plot_kl_per_dim(kl: Any, active: Any = None) -> Figure:
    """Bar chart of the KL of each latent dimension (nats); collapsed dimensions sit near 0.

    ``kl`` is the output of :func:`minivae.evaluate.kl_per_dim` or a history
    row's ``kl_per_dim``; ``active`` (the variances from ``active_units``)
    marks the dimensions above 0.01 in a second colour.
    """
    kl = np.asarray(kl)
    if kl.ndim != 1 or kl.dtype.kind not in "iuf" or not np.isfinite(kl).all():
        raise ValueError(f"kl must be one finite number per latent dimension; got {kl.dtype} of shape {kl.shape}")
    if active is not None and np.shape(active) != kl.shape:
        raise ValueError(f"active must hold one variance per latent dimension, {len(kl)}; got shape {np.shape(active)}")
    fig = Figure(figsize=(max(4.0, 0.35 * len(kl) + 2), 3), layout="constrained")
    ax = fig.add_subplot()
    colours = ["C0" if active is None or v > 0.01 else "C7" for v in (active if active is not None else kl)]
    ax.bar(np.arange(len(kl)), kl, color=colours)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="latent dimension", ylabel="KL (nats)", title="KL(q(z_l|x) || N(0, 1)) per dimension")
    return fig


def plot_reconstructions(model: VAE, x: Any, n: int = 10, shape: tuple[int, int] | None = None,
                         y: Any = None) -> Figure:
    """Inputs (top row) above their reconstructions (bottom row); ``y``: a conditional model's labels of ``x``."""
    x = image_batch(x, "x")[:check_positive("n", n, integer=True)]
    shape = shape or image_shape(x.shape[1])
    recon = to_numpy(model.reconstruct(x, None if y is None else np.asarray(y)[:n]))
    return _image_figure(tile(np.concatenate([x, recon]), len(x), shape), "inputs (top) and reconstructions (bottom)")


def plot_class_grid(model: VAE, n_styles: int = 8, shape: tuple[int, int] | None = None) -> Figure:
    """A conditional model's samples: one row per class, one column per ``z ~ N(0, I)``, shared down the column.

    Each column decodes the same ``z`` under every label, so what stays the
    same down a column (thickness, slant, size) is what ``z`` holds.
    """
    if model.n_classes is None:
        raise ValueError("a class grid needs a conditional model (VAE(..., n_classes=...))")
    C = model.n_classes
    n_styles = check_positive("n_styles", n_styles, integer=True)
    z = model.eval_rng_.standard_normal((n_styles, model.latent_dim))
    images = to_numpy(model.decode(np.tile(z, (C, 1)), y=np.repeat(np.arange(C), n_styles)))
    return _image_figure(tile(images, n_styles, shape or image_shape(model.input_dim)),
                         "one row per class; each column one z, shared", width=0.6 * n_styles + 1)


def plot_samples(model: VAE, n: int = 64, shape: tuple[int, int] | None = None) -> Figure:
    """Draws from the model: ``z ~ N(0, I)``, then the mean of ``p(x|z)``."""
    n = check_positive("n", n, integer=True)
    cols = math.isqrt(n - 1) + 1  # ceil(sqrt(n)) in whole numbers: n may be any size here
    return _image_figure(tile(model.sample(n), cols, shape or image_shape(model.input_dim)),
                         "samples from the prior", width=5.0)


def plot_latent(model: VAE, x: Any, labels: Any, batch_size: int = 1000) -> Figure:
    """The posterior means ``mu`` coloured by label (a conditional model's encoder reads the labels too).

    Two latent dimensions are shown as they are; more are projected onto the
    first two principal directions of ``mu``; one is drawn against the label.
    """
    batch_size = check_positive("batch_size", batch_size, integer=True)
    if np.ndim(labels) != 1 or len(labels) != len(x):
        raise ValueError(f"labels must hold one label per row of x ({len(x)}); got shape {np.shape(labels)}")
    given = None if model.n_classes is None else np.asarray(labels)
    mu = np.concatenate([to_numpy(model.encode(x[i:i + batch_size], None if given is None else given[i:i + batch_size])[0])
                         for i in range(0, len(x), batch_size)])
    xlabel, ylabel = "z[0]", "z[1]"
    if mu.shape[1] == 1:
        mu = np.column_stack([mu[:, 0], to_numpy(labels)])
        ylabel = "label"
    elif mu.shape[1] > 2:
        centred = mu - mu.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        mu = centred @ vt[:2].T
        xlabel, ylabel = "principal direction 1 of mu", "principal direction 2 of mu"
    fig = Figure(figsize=(6, 5), layout="constrained")
    ax = fig.add_subplot()
    points = ax.scatter(mu[:, 0], mu[:, 1], c=to_numpy(labels), cmap="tab10", s=6, alpha=0.8)
    fig.colorbar(points, ax=ax, label="label")
    ax.set(xlabel=xlabel, ylabel=ylabel, title="latent space: E[z|x] by label")
    return fig


def manifold_grid(n: int = 15, dims: tuple[int, int] = (0, 1), latent_dim: int = 2, edge: float = 0.05) -> np.ndarray:
    """Latent points on an ``n x n`` grid of the normal's quantiles, as in Kingma & Welling's figures.

    Quantiles ``edge .. 1 - edge`` pushed through the inverse normal CDF give a
    grid that covers the prior evenly in probability. Other dimensions are 0.
    With one latent dimension the grid is one row of ``n`` points along it.
    """
    n = check_positive("n", n, integer=True)
    if not (isinstance(edge, (int, float, np.floating)) and 0 < edge < 0.5):
        raise ValueError(f"edge must be a quantile between 0 and 0.5 (the grid spans edge to 1 - edge); got {edge!r}")
    q = [NormalDist().inv_cdf(p) for p in np.linspace(edge, 1 - edge, n)]
    if latent_dim == 1:
        return np.array(q, dtype=np.float32)[:, None]
    if len(dims) != 2 or not all(isinstance(d, (int, np.integer)) and 0 <= d < latent_dim for d in dims) \
            or dims[0] == dims[1]:
        raise ValueError(f"dims must name two of the {latent_dim} latent dimensions (0 to {latent_dim - 1}); got {dims!r}")
    z = np.zeros((n * n, latent_dim), dtype=np.float32)
    for r in range(n):
        for c in range(n):
            z[r * n + c, dims[0]] = q[c]
            z[r * n + c, dims[1]] = q[n - 1 - r]  # the top row has the largest z[1]
    return z


def plot_manifold(model: VAE, n: int = 15, dims: tuple[int, int] = (0, 1),
                  shape: tuple[int, int] | None = None) -> Figure:
    """The learned 2-D manifold: decoded images over a grid of latent quantiles (a row, for a 1-D latent space)."""
    z = manifold_grid(n, dims, model.latent_dim)
    canvas = tile(model.decode(z), n, shape or image_shape(model.input_dim))
    over = "z[0]" if model.latent_dim == 1 else f"z[{dims[0]}], z[{dims[1]}]"
    return _image_figure(canvas, f"decoded grid over {over}", width=6.0)


def plot_interpolation(model: VAE, x_a: Any, x_b: Any, steps: int = 10, shape: tuple[int, int] | None = None) -> Figure:
    """Decoded images along the straight line between two inputs' posterior means."""
    from .latent import interpolate

    images = interpolate(model, x_a, x_b, steps)
    return _image_figure(tile(images, steps, shape or image_shape(model.input_dim)), "interpolation", width=8.0)
