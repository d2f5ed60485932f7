"""Embeddings of the time (noise level) that condition a score network.

* :class:`GaussianFourierEmbedding` for continuous time (Tancik et al., 2020; Song et al., 2021)::

      gamma(t) = [sin(2 pi W t), cos(2 pi W t)],    W_j ~ N(0, scale^2), fixed.

* :class:`SinusoidalEmbedding`, the Transformer position embedding (Vaswani et al., 2017) that
  DDPM uses for its integer steps (Ho et al., 2020), applied to ``u = time_scale * t``::

      gamma(t) = [sin(u w_j), cos(u w_j)],    w_j = max_period^(-j / (embed_dim/2)),
      j = 0, ..., embed_dim/2 - 1.

Both map ``t`` of shape ``(B,)`` to ``(B, embed_dim)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["GaussianFourierEmbedding", "SinusoidalEmbedding"]


def _even_dim(embed_dim: int) -> int:
    if (
        isinstance(embed_dim, bool)
        or not isinstance(embed_dim, int)
        or embed_dim < 2
        or embed_dim % 2
    ):
        raise ValueError(f"embed_dim must be an even integer >= 2, got {embed_dim!r}")
    return embed_dim


class GaussianFourierEmbedding(nn.Module):
    """Random Fourier features of a continuous time ``t``: ``[sin(2 pi W t), cos(2 pi W t)]``.

    The frequencies ``W`` (``embed_dim / 2`` of them, drawn from ``N(0, scale^2)``) are a buffer:
    saved with the model, never trained. A larger ``scale`` resolves finer changes in ``t``; with
    ``t in [0, 1]``, a scale of order 10 reaches a few tens of oscillations over the range.

    Arguments:
        embed_dim: output width (even).
        scale: std of the frequencies.
        generator: the source of ``W`` (default: torch's global generator).
    """

    def __init__(
        self, embed_dim: int, scale: float = 16.0, generator: torch.Generator | None = None
    ):
        super().__init__()
        _even_dim(embed_dim)
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
        self.register_buffer("W", torch.randn(embed_dim // 2, generator=generator) * scale)

    def forward(self, t: Tensor) -> Tensor:
        angle = 2 * math.pi * t[:, None].to(self.W.dtype) * self.W
        return torch.cat([angle.sin(), angle.cos()], dim=-1)


class SinusoidalEmbedding(nn.Module):
    """Sinusoidal embedding of ``u = time_scale * t`` at geometrically spaced frequencies.

    With ``time_scale = N - 1`` for ``T = 1`` (``(N - 1) / T`` in general), the step ``i`` of an
    ``N``-step discrete model, seen at time ``t_i = i T / (N - 1)``, is embedded exactly as DDPM
    embeds the integer ``i``.

    Arguments:
        embed_dim: output width (even).
        time_scale: the factor from ``t`` to the embedded position ``u``.
        max_period: the longest period, ``2 pi max_period`` in ``u``.
    """

    def __init__(self, embed_dim: int, time_scale: float = 999.0, max_period: float = 10_000.0):
        super().__init__()
        half = _even_dim(embed_dim) // 2
        for name, value in (("time_scale", time_scale), ("max_period", max_period)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        self.time_scale = float(time_scale)
        self.register_buffer("freqs", torch.exp(-math.log(max_period) * torch.arange(half) / half))

    def forward(self, t: Tensor) -> Tensor:
        angle = self.time_scale * t[:, None].to(self.freqs.dtype) * self.freqs
        return torch.cat([angle.sin(), angle.cos()], dim=-1)
