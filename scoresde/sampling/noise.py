"""Gaussian noise for the stochastic samplers, drawn only from explicit generators.

The noise of a batch comes from one ``torch.Generator`` or from one generator per sample. With one
per sample, sample ``i``'s prior draw and every step's noise come from generator ``i`` alone, so a
seed means the same sample whatever the batch it is drawn in (as EDM does for images): sample ``i``
is bitwise the same at batch 1 and batch 64 for any score that treats samples independently. It
costs one draw per sample and step instead of one per step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from scoresde.sde import SDE

__all__ = ["Generators", "GaussianNoise", "check_generators"]

Generators = torch.Generator | Sequence[torch.Generator] | None
"""``None`` (torch's global generator), one generator, or one generator per sample."""


def check_generators(generator: Generators, batch: int) -> None:
    """Raise ``ValueError`` unless ``generator`` is ``None``, a generator, or ``batch`` of them."""
    if generator is None or isinstance(generator, torch.Generator):
        return
    if isinstance(generator, Sequence) and not isinstance(generator, str):
        if len(generator) == batch and all(isinstance(g, torch.Generator) for g in generator):
            return
    described = (
        f"a sequence of {len(generator)} items"
        if isinstance(generator, Sequence) and not isinstance(generator, str)
        else repr(generator)
    )
    raise ValueError(
        f"generator must be None, a torch.Generator, or a sequence of {batch} torch.Generators "
        f"(one per sample); got {described}"
    )


class GaussianNoise:
    """Draws ``z ~ N(0, I)`` from ``generator`` into a buffer reused from step to step.

    The same generator state gives the same draws. Each draw overwrites the previous one, so a
    caller uses ``z`` before asking for the next.

    Arguments:
        generator: the source of randomness: ``None`` (torch's global generator), a generator, or
            one generator per sample (checked by :func:`check_generators`).
    """

    def __init__(self, generator: Generators = None):
        self.generator = generator
        self._z: Tensor | None = None

    @property
    def per_sample(self) -> bool:
        """Whether each sample has its own generator."""
        return not (self.generator is None or isinstance(self.generator, torch.Generator))

    @property
    def device(self) -> torch.device | None:
        """The generators' device (``None`` for torch's global generator)."""
        if self.generator is None:
            return None
        first = self.generator if not self.per_sample else self.generator[0]
        return first.device

    def like(self, x: Tensor, rows: Sequence[bool] | None = None) -> Tensor:
        """Standard normal noise with the shape, dtype and device of ``x``.

        With ``rows`` (one bool per sample) only the marked samples draw and the others get
        zeros: with one generator per sample only the marked samples' generators advance, so a
        sampler that steps each sample on its own clock (``adaptive_sde``) keeps each sample's
        noise independent of the batch.
        """
        if self._z is None or self._z.shape != x.shape or self._z.dtype != x.dtype:
            self._z = torch.empty_like(x)
        if self.per_sample:
            marked = [True] * len(self.generator) if rows is None else rows
            for row, generator, draw in zip(self._z, self.generator, marked, strict=True):
                if draw:
                    row.normal_(generator=generator)
                else:
                    row.zero_()
            return self._z
        self._z.normal_(generator=self.generator)
        if rows is not None:
            self._z[~torch.as_tensor(rows, device=x.device)] = 0
        return self._z

    def prior(self, sde: SDE, shape: tuple[int, ...], dtype: torch.dtype, device) -> Tensor:
        """``sde.prior_sampling(shape, generator)`` (the protocol's two arguments, nothing more),
        per sample with per-sample generators, cast to ``dtype`` and moved to ``device``."""
        if self.per_sample:
            rows = [sde.prior_sampling((1, *shape[1:]), g) for g in self.generator]
            draw = torch.cat([r.to(device=device, dtype=dtype) for r in rows])
        else:
            draw = sde.prior_sampling(shape, self.generator)
        return draw.to(device=device, dtype=dtype)
