"""The model families minivae trains, by name: a configuration's ``family`` says which class builds it.

``"vae"`` (also a configuration that names no family) is :class:`minivae.model.VAE`; ``"planar_flow"`` is
:class:`minivae.flows.FlowVAE`; ``"mixture_prior"`` and ``"vampprior"`` are
:class:`minivae.priors.MixturePriorVAE` and :class:`minivae.priors.VampPriorVAE`; ``"semi_supervised"`` is
:class:`minivae.semisupervised.SemiSupervisedVAE`; ``"hierarchical"`` is
:class:`minivae.hierarchical.HierarchicalVAE`. Every family meets
:class:`minivae.trainable.Trainable`, so that ``fit``, ``minivae.evaluate``, checkpoints and
:func:`minivae.seeds.trained` take any of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # names for annotations alone, not imported at run time
    from .model import VAE

NAMES = ("vae", "planar_flow", "mixture_prior", "vampprior", "semi_supervised", "hierarchical")


def family_class(name: str = "vae") -> type[VAE]:
    """The class of the family ``name``."""
    if name == "vae":
        from .model import VAE
        return VAE
    if name == "planar_flow":
        from .flows import FlowVAE
        return FlowVAE
    if name == "mixture_prior":
        from .priors import MixturePriorVAE
        return MixturePriorVAE
    if name == "vampprior":
        from .priors import VampPriorVAE
        return VampPriorVAE
    if name == "semi_supervised":
        from .semisupervised import SemiSupervisedVAE
        return SemiSupervisedVAE
    if name == "hierarchical":
        from .hierarchical import HierarchicalVAE
        return HierarchicalVAE
    raise ValueError(f"unknown model family {name!r}; the families are {', '.join(map(repr, NAMES))}")


def build(config: Mapping[str, Any], **options: Any) -> VAE:
    """A new model of ``config``'s family from the rest of ``config`` and ``options`` (``seed``, ``backend``)."""
    settings = dict(config)
    return family_class(settings.pop("family", "vae"))(**settings, **options)
