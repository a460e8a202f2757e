"""minivae: a from-scratch variational autoencoder in NumPy, with hand-written backprop, that also runs on CuPy."""

__version__ = "0.1.0"

from . import (aggregate, backend, baselines, datasets, evaluate, families, flows, gradcheck, hierarchical, latent,
               layers, likelihoods, losses, optim, priors, seeds, semisupervised)
from .backend import get_array_module, resolve, to_numpy
from .datasets import load_digits, load_mnist
from .gradcheck import check_gradients, numerical_gradient, rel_error
from .flows import FlowVAE
from .hierarchical import HierarchicalVAE
from .model import VAE
from .priors import MixturePriorVAE, VampPriorVAE
from .semisupervised import SemiSupervisedVAE
from .training import DivergedError



def __getattr__(name):
    """``minivae.plotting`` and ``minivae.explorer`` are imported on first use: matplotlib takes half a second to
    load, and most uses never draw."""
    if name in ("plotting", "explorer"):
        import importlib
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'minivae' has no attribute {name!r}")


__all__ = [
    "VAE", "DivergedError", "FlowVAE", "aggregate", "backend", "baselines", "check_gradients", "datasets", "evaluate",
    "explorer", "families", "flows", "get_array_module", "gradcheck", "hierarchical", "HierarchicalVAE",
    "latent", "layers", "likelihoods", "load_digits", "load_mnist", "losses", "MixturePriorVAE", "numerical_gradient",
    "optim", "plotting", "priors", "rel_error", "resolve", "seeds", "semisupervised", "SemiSupervisedVAE", "to_numpy",
    "VampPriorVAE",
]
