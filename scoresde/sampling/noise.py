"""Gaussian noise for the stochastic samplers, drawn only from an explicit generator."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["GaussianNoise"]


class GaussianNoise:
    """Draws ``z ~ N(0, I)`` from ``generator`` into a buffer reused from step to step.

    The same generator state gives the same draws. Each draw overwrites the previous one, so a
    caller uses ``z`` before asking for the next.

    Arguments:
        generator: the source of randomness (``None``: torch's global generator).
    """

    def __init__(self, generator: torch.Generator | None = None):
        self.generator = generator
        self._z: Tensor | None = None

    def like(self, x: Tensor) -> Tensor:
        """Standard normal noise with the shape, dtype and device of ``x``."""
        if self._z is None or self._z.shape != x.shape:
            self._z = torch.empty_like(x)
        return self._z.normal_(generator=self.generator)
