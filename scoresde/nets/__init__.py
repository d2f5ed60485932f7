"""Noise-conditional networks and a registry of them by name.

``get_model(name, **kwargs)`` builds a registered network; ``register_model(name, cls)`` adds one
(e.g. a U-Net for images). Every network maps ``(x (B, *D), t (B,))`` to an output shaped like
``x``.
"""

from __future__ import annotations

from torch import nn

from scoresde.nets.embeddings import GaussianFourierEmbedding, SinusoidalEmbedding
from scoresde.nets.mlp import MLPScoreNet
from scoresde.registry import Registry

__all__ = [
    "GaussianFourierEmbedding",
    "SinusoidalEmbedding",
    "MLPScoreNet",
    "MODELS",
    "register_model",
    "get_model",
]

MODELS: Registry[type[nn.Module]] = Registry("model", {"mlp": MLPScoreNet})
"""Network name -> class."""


def register_model(name: str, cls: type[nn.Module]) -> None:
    """Make ``get_model(name, ...)`` build ``cls(...)``; ``name`` must be new."""
    MODELS.add(name, cls)


def get_model(name: str, **kwargs: object) -> nn.Module:
    """The network ``name`` (one of :data:`MODELS`) built with ``kwargs``.

    Raises:
        ValueError: for an unknown name or a keyword the network does not take.
    """
    return MODELS.build(name, **kwargs)
