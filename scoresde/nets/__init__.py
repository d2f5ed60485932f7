"""Noise-conditional networks and a registry of them by name.

``get_model(name, **kwargs)`` builds a registered network; ``register_model(name, cls)`` adds one
(e.g. a U-Net for images). Every network maps ``(x (B, *D), t (B,))`` to an output shaped like
``x``.
"""

from __future__ import annotations

import inspect

from torch import nn

from scoresde.nets.embeddings import GaussianFourierEmbedding, SinusoidalEmbedding
from scoresde.nets.mlp import MLPScoreNet

__all__ = [
    "GaussianFourierEmbedding",
    "SinusoidalEmbedding",
    "MLPScoreNet",
    "MODELS",
    "register_model",
    "get_model",
]

MODELS: dict[str, type[nn.Module]] = {"mlp": MLPScoreNet}
"""Network name -> class."""


def register_model(name: str, cls: type[nn.Module]) -> None:
    """Make ``get_model(name, ...)`` build ``cls(...)``; ``name`` must be new."""
    if name in MODELS:
        raise ValueError(f"a model named {name!r} is already registered ({MODELS[name].__name__})")
    MODELS[name] = cls


def get_model(name: str, **kwargs: object) -> nn.Module:
    """The network ``name`` (one of :data:`MODELS`) built with ``kwargs``.

    Raises:
        ValueError: for an unknown name or a keyword the network does not take.
    """
    if name not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, got {name!r}")
    cls = MODELS[name]
    allowed = [p for p in inspect.signature(cls).parameters if p != "self"]
    unknown = [key for key in kwargs if key not in allowed]
    if unknown:
        raise ValueError(
            f"model {name!r} takes {', '.join(allowed)}; got unknown {', '.join(unknown)}"
        )
    return cls(**kwargs)
