"""Gradient checks for the model tests: finite differences on NumPy, and the same numbers on every other backend.

A finite-difference check on the GPU path (real CuPy, or the strict stand-in that
refuses NumPy-isms) would repeat the NumPy check's mathematics at a hundred times
its cost, since it runs two forward passes per parameter entry. So on NumPy the
gradient is checked against float64 finite differences, and on any other backend
the same model (its parameters copied) must give the same loss and gradients as
on NumPy, to rounding: the mathematics is checked once, the backend every time.
"""

import tempfile
from pathlib import Path

import numpy as np

from minivae import VAE, to_numpy
from minivae.gradcheck import GradCheckReport, check_gradients, rel_error


def checked_gradients(model, x, eps, **loss_options):
    """A :class:`GradCheckReport`: against finite differences on NumPy, against NumPy on another backend."""
    if model.xp is np:
        return check_gradients(model, x, eps, **loss_options)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.npz"
        model.save(path)
        twin = VAE.load(path, backend="numpy")
    loss, grads = model.loss_and_grads(x, eps, **loss_options)
    twin_loss, twin_grads = twin.loss_and_grads(x, eps, **loss_options)
    assert rel_error(np.asarray(float(loss)), np.asarray(float(twin_loss))) < 1e-12, (float(loss), float(twin_loss))
    return GradCheckReport({name: rel_error(to_numpy(grads[name]), twin_grads[name]) for name in grads})


# The likelihoods a family's gradient checks run with (beta-binomial of 4 trials), and data that fits each.
LIKELIHOOD_CONFIGS = [
    dict(likelihood="bernoulli"),
    dict(likelihood="beta_binomial", trials=4),
    dict(likelihood="gaussian", decoder_std="learned"),
]
LIKELIHOOD_IDS = ["bernoulli", "beta-binomial", "gaussian-learned"]


def data_for(config, rng, n, d=6):
    """``n`` random rows of ``d`` values the likelihood of ``config`` (one of ``LIKELIHOOD_CONFIGS``) accepts."""
    x = rng.random((n, d))
    if config["likelihood"] == "bernoulli":
        return (x > 0.5).astype(float)
    if config["likelihood"] == "beta_binomial":
        return np.round(x * 4) / 4
    return x
