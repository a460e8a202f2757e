"""minivae: a from-scratch variational autoencoder in NumPy, with hand-written backprop, that also runs on CuPy."""

__version__ = "0.1.0"

from . import backend, gradcheck, layers, losses, optim
from .backend import get_array_module, resolve, to_numpy
from .gradcheck import check_gradients, numerical_gradient, rel_error
from .model import VAE

__all__ = [
    "VAE", "backend", "check_gradients", "get_array_module", "gradcheck", "layers", "losses",
    "numerical_gradient", "optim", "rel_error", "resolve", "to_numpy",
]
