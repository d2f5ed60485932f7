"""Random draws for data made on the CPU from a generator that may live on an accelerator.

The training loop keeps its generator on the model's device (so that a CUDA run draws its noise
there), and the toy densities draw their batches from it. :class:`Draws` makes each draw on the
generator's device and returns it on the CPU in float64, where the densities compute: on the CPU
it is exactly ``torch.rand(..., generator=generator, dtype=torch.float64)`` and its kin, so CPU
samples do not change.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["Draws"]


class Draws:
    """Draws from ``generator`` (``None``: torch's global generator), on its device, returned as
    float64 (``choice``: int64) CPU tensors."""

    def __init__(self, generator: torch.Generator | None):
        self.generator = generator
        self.device = None if generator is None else generator.device

    def rand(self, *shape: int) -> Tensor:
        """Uniform on ``[0, 1)``."""
        return torch.rand(shape, **self._on_device()).cpu()

    def randn(self, *shape: int) -> Tensor:
        """Standard normal."""
        return torch.randn(shape, **self._on_device()).cpu()

    def randint(self, high: int, n: int) -> Tensor:
        """``n`` integers uniform in ``[0, high)``, as float64."""
        return torch.randint(0, high, (n,), **self._on_device()).cpu()

    def choice(self, weights: Tensor, n: int) -> Tensor:
        """``n`` indices drawn with replacement with probabilities proportional to ``weights``."""
        w = weights if self.device is None else weights.to(self.device)
        return torch.multinomial(w, n, replacement=True, generator=self.generator).cpu()

    def _on_device(self) -> dict:
        return {"generator": self.generator, "dtype": torch.float64, "device": self.device}
