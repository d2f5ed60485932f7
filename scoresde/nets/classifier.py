"""The evaluation classifier: a small CNN whose features measure sample quality on images.

Layout, for images ``(B, C, H, W)`` in model units (``[-1, 1]``) and ``w = width``::

    h = act(conv3x3(act(conv3x3(x))))                    w channels
    h = maxpool2(h)                                      H/2 x W/2 (floor)
    h = act(conv3x3(act(conv3x3(h))))                    2w channels
    h = adaptive_avgpool(h, 4 x 4)                       (B, 2w, 4, 4)
    features(x) = act(W_f flatten(h))                    (B, feature_dim)
    forward(x)  = W_c dropout(features(x))               (B, num_classes) logits

The features are the space of the Fréchet distance and of precision/recall
(:mod:`scoresde.image_metrics`). The digits classifier is trained by
``scripts/train_digits_classifier.py`` on the digits training split only, and ships with the
package (:func:`load_digits_classifier`); the file's metadata holds its architecture, its test
accuracy and the command that made it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor, nn

from scoresde.validation import check_int, check_number

__all__ = [
    "ImageClassifier",
    "DIGITS_CLASSIFIER",
    "save_classifier",
    "load_classifier",
    "load_digits_classifier",
]

DIGITS_CLASSIFIER = "digits_classifier.safetensors"
"""The shipped weights of the digits classifier, a file of the ``scoresde.nets`` package."""


def _init(layer: nn.Conv2d | nn.Linear, generator: torch.Generator | None) -> nn.Module:
    """PyTorch's default bound ``1 / sqrt(fan_in)``, drawn from ``generator``."""
    bound = 1 / math.sqrt(layer.weight[0].numel())
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=generator)
        layer.bias.uniform_(-bound, bound, generator=generator)
    return layer


class ImageClassifier(nn.Module):
    """A small CNN classifier with a feature layer (layout in the module doc).

    Arguments:
        shape: ``(C, H, W)`` of one image (``H, W >= 2``).
        num_classes: the number of classes.
        width: ``w``, the channels of the first convolutions.
        feature_dim: the width of the feature layer.
        dropout: dropout before the class layer, in training only.
        generator: the source of the initial weights.
    """

    def __init__(
        self,
        shape: Sequence[int],
        num_classes: int = 10,
        width: int = 32,
        feature_dim: int = 64,
        dropout: float = 0.3,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        shape = tuple(shape)
        if len(shape) != 3 or not all(isinstance(s, int) for s in shape) or min(shape) < 1:
            raise ValueError(f"shape must be (C, H, W), three integers >= 1; got {shape!r}")
        if min(shape[1:]) < 2:
            raise ValueError(f"shape must have H, W >= 2 (one pooling step); got {shape!r}")
        self.shape = shape
        self.num_classes = check_int("num_classes", num_classes, 2)
        width = check_int("width", width, 1)
        self.feature_dim = check_int("feature_dim", feature_dim, 1)
        self.config = {
            "shape": list(shape),
            "num_classes": num_classes,
            "width": width,
            "feature_dim": feature_dim,
            "dropout": dropout,
        }
        c = shape[0]
        self.convs = nn.ModuleList(
            _init(nn.Conv2d(a, b, 3, padding=1), generator)
            for a, b in ((c, width), (width, width), (width, 2 * width), (2 * width, 2 * width))
        )
        self.feature = _init(nn.Linear(2 * width * 16, feature_dim), generator)
        self.drop = nn.Dropout(check_number("dropout", dropout, 0, 1, high_open=True))
        self.head = _init(nn.Linear(feature_dim, num_classes), generator)

    def features(self, x: Tensor) -> Tensor:
        """The feature layer ``(B, feature_dim)`` of images ``x`` ``(B, C, H, W)``."""
        if x.shape[1:] != self.shape:
            raise ValueError(
                f"expected images of shape (B, {', '.join(map(str, self.shape))}); "
                f"got {tuple(x.shape)}"
            )
        h = F.silu(self.convs[1](F.silu(self.convs[0](x))))
        h = F.max_pool2d(h, 2)
        h = F.silu(self.convs[3](F.silu(self.convs[2](h))))
        h = F.adaptive_avg_pool2d(h, 4)
        return F.silu(self.feature(h.flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(B, num_classes)``."""
        return self.head(self.drop(self.features(x)))


def save_classifier(
    model: ImageClassifier, path: str | Path, metadata: dict[str, str] | None = None
) -> None:
    """Write ``model``'s weights and architecture (plus ``metadata``) to a safetensors file."""
    extra = {"config": json.dumps(model.config), **(metadata or {})}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), extra)


def load_classifier(path: str | Path) -> tuple[ImageClassifier, dict[str, str]]:
    """A classifier written by :func:`save_classifier`, in eval mode, and the file's metadata."""
    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata() or {})
    if "config" not in metadata:
        raise ValueError(f"{path}: no classifier config in the file's metadata; not a classifier")
    config = json.loads(metadata["config"])
    model = ImageClassifier(**config)
    model.load_state_dict(load_file(str(path)))
    return model.eval(), metadata


def load_digits_classifier() -> ImageClassifier:
    """The shipped digits classifier, in eval mode (its metadata: :func:`load_classifier`)."""
    with resources.as_file(resources.files("scoresde.nets") / DIGITS_CLASSIFIER) as path:
        return load_classifier(path)[0]
