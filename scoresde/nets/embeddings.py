"""Embeddings of the time (noise level) that condition a score network.

* :class:`GaussianFourierEmbedding` for continuous time (Tancik et al., 2020; Song et al., 2021)::

      gamma(t) = [sin(2 pi W t), cos(2 pi W t)],    W_j ~ N(0, scale^2), fixed.

* :class:`SinusoidalEmbedding`, the Transformer position embedding (Vaswani et al., 2017) that
  DDPM uses for its integer steps (Ho et al., 2020), applied to ``u = time_scale * t``::

      gamma(t) = [sin(u w_j), cos(u w_j)],    w_j = max_period^(-j / (embed_dim/2)),
      j = 0, ..., embed_dim/2 - 1.

Both map ``t`` of shape ``(B,)`` to ``(B, embed_dim)``; :func:`time_embedding` builds either by
name. :class:`LabelEmbedding` is the class label's counterpart: a learned vector per class and one
more for "no label", so one network learns both the conditional and the unconditional score
(classifier-free guidance, Ho & Salimans, 2022).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from scoresde.validation import check_choice, check_int, refusal

__all__ = [
    "EMBEDDINGS",
    "NULL_LABEL",
    "GaussianFourierEmbedding",
    "SinusoidalEmbedding",
    "LabelEmbedding",
    "time_embedding",
]

EMBEDDINGS = ("fourier", "sinusoidal")
"""The names :func:`time_embedding` knows."""

NULL_LABEL = -1
"""The label that means "no label" (the unconditional model), per sample."""


def _even_dim(embed_dim: int) -> int:
    if (
        isinstance(embed_dim, bool)
        or not isinstance(embed_dim, int)
        or embed_dim < 2
        or embed_dim % 2
    ):
        raise ValueError(f"embed_dim must be an even integer >= 2; got {embed_dim!r}")
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
            raise ValueError(f"scale must be a finite number > 0; got {scale!r}")
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
                raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
        self.time_scale = float(time_scale)
        self.register_buffer("freqs", torch.exp(-math.log(max_period) * torch.arange(half) / half))

    def forward(self, t: Tensor) -> Tensor:
        angle = self.time_scale * t[:, None].to(self.freqs.dtype) * self.freqs
        return torch.cat([angle.sin(), angle.cos()], dim=-1)


def time_embedding(
    kind: str,
    embed_dim: int,
    *,
    fourier_scale: float = 16.0,
    time_scale: float = 999.0,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """The embedding ``kind`` of :data:`EMBEDDINGS`: ``"fourier"``
    (:class:`GaussianFourierEmbedding` with ``scale = fourier_scale``, frequencies from
    ``generator``) or ``"sinusoidal"`` (:class:`SinusoidalEmbedding` with ``time_scale``)."""
    if check_choice("embedding", kind, EMBEDDINGS) == "fourier":
        return GaussianFourierEmbedding(embed_dim, fourier_scale, generator)
    return SinusoidalEmbedding(embed_dim, time_scale)


class LabelEmbedding(nn.Module):
    """A learned vector ``E[c]`` per class ``c = 0 .. num_classes - 1`` and ``E[num_classes]`` for
    "no label".

    ``forward(y, batch)`` returns ``E[y_i]`` per sample, with :data:`NULL_LABEL` (``-1``) entries,
    or ``y = None`` for the whole batch, mapped to the null vector. Training with labels replaced
    by ``-1`` at some rate teaches one network both terms of classifier-free guidance. The rows
    start as ``N(0, 1)`` draws from ``generator``, as ``nn.Embedding`` does.

    Arguments:
        num_classes: the number of classes.
        dim: the width of the vectors.
        generator: the source of the initial vectors.
    """

    def __init__(self, num_classes: int, dim: int, generator: torch.Generator | None = None):
        super().__init__()
        self.num_classes = check_int("num_classes", num_classes, 1)
        self.weight = nn.Parameter(torch.randn(num_classes + 1, dim, generator=generator))

    def forward(self, y: Tensor | None, batch: int) -> Tensor:
        """The vectors ``(batch, dim)`` of labels ``y`` ``(batch,)`` (integers in
        ``[-1, num_classes - 1]``) or of "no label" everywhere when ``y`` is ``None``."""
        if y is None:
            return self.weight[self.num_classes].expand(batch, -1)
        if y.shape != (batch,) or y.is_floating_point() or y.dtype == torch.bool:
            raise ValueError(
                f"y must be integer labels of shape ({batch},) or None; "
                f"got {y.dtype} {tuple(y.shape)}"
            )
        outside = y[(y < NULL_LABEL) | (y >= self.num_classes)]
        if outside.numel():
            allowed = f"labels in [-1, {self.num_classes - 1}] (-1: no label)"
            raise ValueError(refusal("y", allowed, int(outside[0])))
        return self.weight[torch.where(y == NULL_LABEL, self.num_classes, y)]
