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
