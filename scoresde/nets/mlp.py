"""A time-conditional residual MLP for low-dimensional data (2D toy densities).

With ``gamma`` a time embedding (:mod:`scoresde.nets.embeddings`) and ``act = SiLU``::

    e   = act(W_e2 act(W_e1 gamma(t)) [+ E[y]])       time (and label) features, (B, hidden)
    h_0 = W_in x
    h_k = h_{k-1} + W_k2 act(W_k1 act(h_{k-1}) + V_k e),   k = 1, ..., depth
    out = W_out act(h_depth)                          (B, dim), or (B, C) for the classifier

:class:`MLPScoreNet` returns ``out`` shaped like ``x``; :class:`MLPClassifier`, the same network
with ``C`` outputs and no label, returns them as the logits of a noise-conditional classifier.

The time enters every block through its own projection ``V_k``. With ``num_classes`` set, a label
``y`` adds its learned vector ``E[y]`` (:class:`~scoresde.nets.embeddings.LabelEmbedding`;
``y = None`` or ``-1`` is "no label"), so one network serves conditional and unconditional scores.

``W_k2`` and ``W_out`` start at zero, so each block starts as the identity and the network as the
zero function (the classifier as the uniform posterior); the other layers use PyTorch's default
``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from scoresde.nets.embeddings import EMBEDDINGS, LabelEmbedding, time_embedding
from scoresde.validation import check_int

__all__ = ["MLPScoreNet", "MLPClassifier", "EMBEDDINGS"]


def _linear(
    fan_in: int, fan_out: int, generator: torch.Generator | None, zero: bool = False
) -> nn.Linear:
    """``nn.Linear`` initialised from ``generator`` (or with zeros)."""
    layer = nn.Linear(fan_in, fan_out)
    with torch.no_grad():
        if zero:
            layer.weight.zero_()
            layer.bias.zero_()
        else:
            bound = 1 / math.sqrt(fan_in)
            layer.weight.uniform_(-bound, bound, generator=generator)
            layer.bias.uniform_(-bound, bound, generator=generator)
    return layer


class _ResidualBlock(nn.Module):
    """``h + W_2 act(W_1 act(h) + V e)``."""

    def __init__(self, hidden: int, generator: torch.Generator | None):
        super().__init__()
        self.inner = _linear(hidden, hidden, generator)
        self.time = _linear(hidden, hidden, generator)
        self.outer = _linear(hidden, hidden, generator, zero=True)
        self.act = nn.SiLU()

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        return h + self.outer(self.act(self.inner(self.act(h)) + self.time(e)))


class _ResidualMLP(nn.Module):
    """The layout of the module doc with ``out_features`` outputs; subclasses shape the output."""

    def __init__(
        self,
        dim: int,
        out_features: int,
        hidden: int,
        depth: int,
        embedding: str,
        embed_dim: int,
        fourier_scale: float,
        time_scale: float,
        num_classes: int | None,
        generator: torch.Generator | None,
    ):
        super().__init__()
        for name, value in (("dim", dim), ("hidden", hidden), ("depth", depth)):
            check_int(name, value, minimum=1)
        self.embed = time_embedding(
            embedding,
            embed_dim,
            fourier_scale=fourier_scale,
            time_scale=time_scale,
            generator=generator,
        )
        self.dim = dim
        self.act = nn.SiLU()
        self.time_in = _linear(embed_dim, hidden, generator)
        self.time_out = _linear(hidden, hidden, generator)
        self.input = _linear(dim, hidden, generator)
        self.blocks = nn.ModuleList(_ResidualBlock(hidden, generator) for _ in range(depth))
        self.output = _linear(hidden, out_features, generator, zero=True)
        self.label = None if num_classes is None else LabelEmbedding(num_classes, hidden, generator)

    def _out(self, x: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        """``out``, ``(B, out_features)``."""
        if x.ndim < 2 or x[0].numel() != self.dim or t.shape != x.shape[:1]:
            raise ValueError(
                f"expected x of shape (B, *D) with {self.dim} features and t of shape (B,), "
                f"got x {tuple(x.shape)} and t {tuple(t.shape)}"
            )
        e = self.time_out(self.act(self.time_in(self.embed(t))))
        if self.label is not None:
            e = e + self.label(y, x.shape[0])
        elif y is not None:
            raise ValueError("y must be None for a network without labels (num_classes=None)")
        e = self.act(e)
        h = self.input(x.flatten(1))
        for block in self.blocks:
            h = block(h, e)
        return self.output(self.act(h))


class MLPScoreNet(_ResidualMLP):
    """A residual MLP ``(x, t) -> (B, *D)`` conditioned on continuous time ``t``.

    Its output is whatever the parameterisation says (score, epsilon, x0 or v); see
    :func:`scoresde.score.get_score_fn`.

    Arguments:
        dim: number of features of a data point (inputs ``(B, *D)`` with ``prod(D) = dim``).
        hidden: width of the residual stream.
        depth: number of residual blocks.
        embedding: ``"fourier"`` (Gaussian Fourier features of ``t``) or ``"sinusoidal"``
            (sinusoidal embedding of ``time_scale * t``, for discrete steps).
        embed_dim: width of the time embedding.
        fourier_scale: std of the Fourier frequencies (``"fourier"`` only).
        time_scale: factor from ``t`` to the embedded step (``"sinusoidal"`` only; ``N - 1`` makes
            ``t_i = i T / (N - 1)`` the integer ``i`` when ``T = 1``).
        num_classes: the number of classes of an optional label ``y``; ``None``: no labels.
        generator: the source of the initial weights, Fourier frequencies and label vectors
            (default: torch's global generator).
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 128,
        depth: int = 3,
        embedding: str = "fourier",
        embed_dim: int = 64,
        fourier_scale: float = 16.0,
        time_scale: float = 999.0,
        num_classes: int | None = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__(
            dim,
            dim,
            hidden,
            depth,
            embedding,
            embed_dim,
            fourier_scale,
            time_scale,
            num_classes,
            generator,
        )

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """The output, shaped like ``x``, for points ``x`` ``(B, *D)`` at times ``t`` ``(B,)``,
        with labels ``y`` ``(B,)`` (``-1``: none) or ``None`` if the network has ``num_classes``."""
        return self._out(x, t, y).reshape(x.shape)


class MLPClassifier(_ResidualMLP):
    """A noise-conditional classifier ``(x, t) -> (B, num_classes)`` logits: the MLP of the module
    doc with ``num_classes`` outputs (all 0 at the start: the uniform posterior).

    Trained by :func:`scoresde.losses.classifier_loss_fn`, its log-softmax estimates the noisy
    class posterior ``log p_t(y | x)``, the classifier of
    :func:`scoresde.guidance.classifier_guidance`.

    Arguments:
        dim: number of features of a data point (inputs ``(B, *D)`` with ``prod(D) = dim``).
        num_classes: the number of classes ``C`` (at least 2).
        hidden, depth, embedding, embed_dim, fourier_scale, time_scale, generator: as for
            :class:`MLPScoreNet`.
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        hidden: int = 128,
        depth: int = 3,
        embedding: str = "fourier",
        embed_dim: int = 64,
        fourier_scale: float = 16.0,
        time_scale: float = 999.0,
        generator: torch.Generator | None = None,
    ):
        num_classes = check_int("num_classes", num_classes, 2)
        super().__init__(
            dim,
            num_classes,
            hidden,
            depth,
            embedding,
            embed_dim,
            fourier_scale,
            time_scale,
            None,
            generator,
        )
        self.num_classes = num_classes

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` of points ``x`` ``(B, *D)`` at times ``t`` ``(B,)``."""
        return self._out(x, t, None)
