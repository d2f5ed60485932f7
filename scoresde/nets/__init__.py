"""Noise-conditional networks and a registry of them by name.

``get_model(name, **kwargs)`` builds a registered network (``"mlp"``: :class:`MLPScoreNet`,
``"unet"``: :class:`UNet`); ``register_model(name, cls)`` adds one. Every network maps
``(x (B, *D), t (B,))`` to an output shaped like ``x``; with ``num_classes`` set it also takes a
label, ``forward(x, t, y=None)``, ``y = None`` or :data:`NULL_LABEL` meaning "no label".

Noise-conditional classifiers, ``(x (B, *D), t (B,)) -> (B, num_classes)`` logits of
``p_t(y | x)`` for classifier guidance, have their own registry: ``get_classifier(name, **kwargs)``
builds one of :data:`CLASSIFIERS` (``"mlp"``: :class:`MLPClassifier`, ``"unet"``:
:class:`UNetClassifier`, each the first part of the score network of the same name with a
classification head). :class:`ImageClassifier` is something else: the clean-image classifier that
evaluates samples.
"""

from __future__ import annotations

from torch import nn

from scoresde.nets.classifier import ImageClassifier, load_classifier, load_digits_classifier
from scoresde.nets.embeddings import (
    NULL_LABEL,
    GaussianFourierEmbedding,
    LabelEmbedding,
    SinusoidalEmbedding,
)
from scoresde.nets.mlp import MLPClassifier, MLPScoreNet
from scoresde.nets.unet import UNet, UNetClassifier
from scoresde.registry import Registry

__all__ = [
    "GaussianFourierEmbedding",
    "SinusoidalEmbedding",
    "LabelEmbedding",
    "NULL_LABEL",
    "MLPScoreNet",
    "UNet",
    "MLPClassifier",
    "UNetClassifier",
    "ImageClassifier",
    "load_classifier",
    "load_digits_classifier",
    "MODELS",
    "register_model",
    "get_model",
    "CLASSIFIERS",
    "register_classifier",
    "get_classifier",
]

MODELS: Registry[type[nn.Module]] = Registry("model", {"mlp": MLPScoreNet, "unet": UNet})
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


CLASSIFIERS: Registry[type[nn.Module]] = Registry(
    "classifier", {"mlp": MLPClassifier, "unet": UNetClassifier}
)
"""Noise-conditional classifier name -> class."""


def register_classifier(name: str, cls: type[nn.Module]) -> None:
    """Make ``get_classifier(name, ...)`` build ``cls(...)``; ``name`` must be new."""
    CLASSIFIERS.add(name, cls)


def get_classifier(name: str, **kwargs: object) -> nn.Module:
    """The noise-conditional classifier ``name`` (one of :data:`CLASSIFIERS`) built with
    ``kwargs``.

    Raises:
        ValueError: for an unknown name or a keyword the classifier does not take.
    """
    return CLASSIFIERS.build(name, **kwargs)
