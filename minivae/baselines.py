"""Baselines without a latent, for a VAE to beat: per-pixel histograms, gzip, and the nearest training image.

A VAE of pixels on a grid of levels gives each test image a log-probability.
The simplest rival gives each pixel its own histogram of the training
images' levels, independent of every other pixel:

    log p(x) = sum_d log h_d(k_d),   h_d(k) = (count of level k at pixel d + 1) / (N + levels),

one pseudo-count per level (Laplace), so that no level seen only in the test
images is impossible. It ignores everything that ties pixels together (the
strokes), which is what a latent code is for: a model with a latent that
does not beat it has learned less than a table of marginals. gzip is a
general-purpose coder of the raw bytes, with no model of images at all.

The nearest training image (in squared pixel distance) is the baseline of the
notebooks' claims about images: its label is a 1-nearest-neighbour classifier,
and its distance says how far an image is from looking like the data.

A classifier trained on the labelled examples alone is the baseline of a
semi-supervised model (:mod:`minivae.semisupervised`): multinomial logistic
regression (:func:`logistic_regression`), on the pixels or on any features such
as a VAE's posterior means, its L2 penalty chosen by cross-validation on those
same few labels.
"""

from __future__ import annotations

import gzip
import math
from typing import Any

import numpy as np


def pixel_histograms(train_counts: Any, levels: int) -> np.ndarray:
    """Each pixel's smoothed histogram of the training levels: (D, levels), rows summing to 1.

    ``train_counts`` is (N, D) of whole levels in ``0..levels-1``.
    """
    train_counts = np.asarray(train_counts, dtype=np.int64)
    hist = np.stack([np.bincount(col, minlength=levels) for col in train_counts.T]) + 1.0  # (D, levels)
    return hist / hist.sum(axis=1, keepdims=True)


def histogram_log_prob(probs: np.ndarray, counts: Any) -> np.ndarray:
    """``log p(x)`` in nats per image (N,) under independent per-pixel histograms ``probs`` (D, levels)."""
    counts = np.asarray(counts, dtype=np.int64)
    return np.log(probs[np.arange(probs.shape[0]), counts]).sum(axis=1)


def gzip_bits(counts: Any, levels: int) -> float:
    """Bits per image of ``gzip -9`` on the images' levels, one byte each (two past 256 levels)."""
    counts = np.asarray(counts)
    data = counts.astype(np.uint8 if levels <= 256 else np.uint16).tobytes()
    return 8 * len(gzip.compress(data, 9)) / len(counts)


def bits(nats: Any) -> Any:
    """Nats as bits."""
    return nats / math.log(2)


def nearest(images: Any, data: Any, block: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Each image's nearest row of ``data`` in Euclidean pixel distance: ``(index, distance)``, each (N,).

    ``||a - b||^2 = ||a||^2 - 2 a.b + ||b||^2`` scores a block of images against
    every row at once with one product, in float64, never an (N, M, D) array.
    """
    a = np.asarray(images, dtype=np.float64)
    b = np.asarray(data, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or not len(b):
        raise ValueError(f"nearest takes (N, D) images and (M, D) data with M > 0; got {a.shape} and {b.shape}")
    b_sq = (b * b).sum(axis=1)
    index, dist = np.empty(len(a), dtype=np.int64), np.empty(len(a))
    for start in range(0, len(a), block):
        part = a[start:start + block]
        d = (part * part).sum(axis=1)[:, None] - 2 * part @ b.T + b_sq[None, :]  # (block, M) squared distances
        index[start:start + block] = d.argmin(axis=1)
        dist[start:start + block] = np.sqrt(np.maximum(d[np.arange(len(part)), index[start:start + block]], 0))
    return index, dist


def logistic_regression(features: Any, labels: Any, n_classes: int, l2: float | None = None,
                        steps: int = 500) -> np.ndarray:
    """Multinomial logistic regression's weights ``(D + 1, C)`` (the last row the biases), fitted to ``features``
    (N, D) and whole-number ``labels`` (N,); ``predict(weights, features)`` gives the classes.

    It minimises the mean of ``-log softmax(x W + b)_y`` plus ``l2 / 2`` times the squared weights (not the
    biases), a convex loss, by ``steps`` of Nesterov's accelerated gradient descent with the step
    ``1 / (lambda_max(X^T X) / N + l2)``, which the loss's curvature never exceeds (a softmax's Hessian is
    at most the identity). With ``l2=None`` the penalty is chosen from ``10^-4 .. 10^1`` by 5-fold
    cross-validation on these examples alone (``labelled_folds``): the baseline is tuned on what it is given.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if x.ndim != 2 or y.shape != (len(x),) or len(x) == 0:
        raise ValueError(f"features must be (N, D) and labels (N,) with N > 0; got {x.shape} and {y.shape}")
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"labels must lie in 0..{n_classes - 1}; got {y.min()} to {y.max()}")
    if l2 is None:
        grid = 10.0 ** np.arange(-4, 2)
        scores = [np.mean([np.mean(predict(logistic_regression(x[fit], y[fit], n_classes, penalty, steps), x[held])
                                   == y[held]) for fit, held in labelled_folds(y)]) for penalty in grid]
        l2 = float(grid[int(np.argmax(scores))])  # the first of the best, the smallest penalty among ties
    design = np.hstack([x, np.ones((len(x), 1))])
    onehot = np.eye(n_classes)[y]
    penalty = np.ones((design.shape[1], 1))
    penalty[-1] = 0  # no penalty on the biases
    rate = 1.0 / (np.linalg.eigvalsh(design.T @ design / len(x)).max() + l2)
    w = ahead = np.zeros((design.shape[1], n_classes))
    for t in range(steps):
        logits = design @ ahead
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        grad = design.T @ (probs - onehot) / len(x) + l2 * penalty * ahead  # d(mean cross-entropy + penalty)/dW
        w_next = ahead - rate * grad
        ahead = w_next + t / (t + 3) * (w_next - w)  # Nesterov's momentum
        w = w_next
    return w


def predict(weights: np.ndarray, features: Any) -> np.ndarray:
    """The class (N,) that :func:`logistic_regression`'s ``weights`` give each row of ``features``."""
    x = np.asarray(features, dtype=np.float64)
    return np.argmax(x @ weights[:-1] + weights[-1], axis=1)


def labelled_folds(labels: np.ndarray, folds: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(fit, held out)`` index pairs of ``folds``-fold cross-validation, each class dealt round the folds in
    turn (so every fold holds each class about equally), with no randomness."""
    order = np.argsort(labels, kind="stable")
    fold_of = np.empty(len(labels), dtype=np.int64)
    fold_of[order] = np.arange(len(labels)) % folds
    return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(folds)]
