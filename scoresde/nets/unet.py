"""A U-Net score network for images, in the DDPM++ / NCSN++ family (Song et al., 2021).

With ``ch_mult = (m_1, ..., m_L)``, the input padded to ``(H', W')`` (below) and level ``l``
working at resolution ``r_l = H' / 2^(l-1)`` with ``ch m_l`` channels::

    e    = W_2 act(W_1 gamma(t)) [+ E[y]]            time (and label) features, (B, 4 ch)
    h    = conv3x3(x)                                 (B, ch, H', W')
    down   level l = 1..L: num_res_blocks ResBlocks to ch m_l channels, each followed by attention
           if r_l is in attn_resolutions, each output kept as a skip; then (l < L) a stride-2
           conv3x3, its output kept too
    middle ResBlock, attention, ResBlock
    up     level l = L..1: num_res_blocks + 1 ResBlocks on [h, skip] (the skips taken in reverse),
           attention as above; then (l > 1) nearest-neighbour x2 upsampling and a conv3x3
    out  = conv3x3(act(GroupNorm(h)))                 (B, C, H', W'), cropped to (H, W)

A residual block injects the time as a scale and a shift of its second normalisation (Dhariwal &
Nichol, 2021) and rescales its sum by ``1 / sqrt 2`` (DDPM++'s ``skip_rescale``), which keeps the
variance of the residual stream from doubling block after block::

    u   = conv3x3(act(GN(h)))
    s, b = W_e act(e)
    u   = conv3x3(dropout(act(GN(u) (1 + s) + b)))
    out = (skip(h) + u) / sqrt 2                      skip: 1x1 conv if the width changes

Self-attention is single-head over the ``r_l^2`` positions, ``(h + P softmax(Q K^T / sqrt c) V) /
sqrt 2``. ``GN`` is GroupNorm with the largest number of groups that divides the width, holds at
least 4 channels each and is at most 32 (DDPM++'s ``min(c / 4, 32)`` where that divides).

**Sizes.** The down-sampling halves the resolution ``L - 1`` times, so the input is zero-padded at
the bottom and right to multiples of ``2^(L-1)`` and the output cropped back: ``8x8`` with
``ch_mult`` of length 3 runs at 8, 4, 2; ``28x28`` at 28, 14, 7; ``32x32`` at 32, 16, 8; an odd
``9x9`` at 12, 6, 3. ``attn_resolutions`` name resolutions of the padded input (its height).

**Initialisation.** Every convolution and linear layer is ``U(-a, a)``, ``a = sqrt(6 / (fan_in +
fan_out))`` (DDPM++'s default), biases zero, all drawn from ``generator``. The second convolution
of every residual block, the attention output ``P`` and the output convolution start at zero, so
each block starts as its skip path and the network as the zero function, like the MLP.

``forward(x, t, y=None)``: ``y`` is an optional label (``num_classes`` set), ``-1`` or ``None``
for "no label" (:class:`~scoresde.nets.embeddings.LabelEmbedding`).

**The noise-conditional classifier** :class:`UNetClassifier` is the first half alone (embedding,
``down``, ``middle``), then ``logits = W mean_positions(act(h))``: a linear head on the average
over the (padded) positions, ``W`` zero at the start (the uniform posterior). Its time enters
only through the blocks' scale and shift, so the embedding must resolve ``t``: a narrow ``ch``
has ``ch / 2`` Fourier frequencies, and with few of them the default ``fourier_scale`` 16 may
draw none low enough to tell far-apart times apart (measured with ``ch = 8`` on a 16-D mixture:
KL 0.09 to the exact posterior at ``t = 0.8``, 0.001 with ``fourier_scale = 1``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scoresde.nets.embeddings import LabelEmbedding, time_embedding
from scoresde.validation import check_int, check_number

__all__ = ["UNet", "UNetClassifier", "group_count"]


def group_count(channels: int) -> int:
    """The number of GroupNorm groups for ``channels``: the largest divisor of ``channels`` that
    is at most ``min(32, channels // 4)`` (at least 1)."""
    limit = max(1, min(32, channels // 4))
    return max(g for g in range(1, limit + 1) if channels % g == 0)


def _init(layer: nn.Conv2d | nn.Linear, generator: torch.Generator | None, zero: bool = False):
    """``U(-a, a)`` with ``a = sqrt(6 / (fan_in + fan_out))`` (or zeros); bias zero."""
    with torch.no_grad():
        if zero:
            layer.weight.zero_()
        else:
            receptive = layer.weight[0, 0].numel()
            fan_in, fan_out = layer.weight.shape[1] * receptive, layer.weight.shape[0] * receptive
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            layer.weight.uniform_(-bound, bound, generator=generator)
        layer.bias.zero_()
    return layer


def _conv(c_in: int, c_out: int, generator, *, kernel: int = 3, stride: int = 1, zero=False):
    return _init(nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2), generator, zero)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(group_count(channels), channels)


class ResBlock(nn.Module):
    """``(skip(h) + conv(dropout(act(GN(conv(act(GN(h)))) (1 + s) + b)))) / sqrt 2``."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float, generator):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), _conv(c_in, c_out, generator)
        self.emb = _init(nn.Linear(emb_dim, 2 * c_out), generator)
        self.norm2, self.drop = _norm(c_out), nn.Dropout(dropout)
        self.conv2 = _conv(c_out, c_out, generator, zero=True)
        self.skip = _conv(c_in, c_out, generator, kernel=1) if c_in != c_out else nn.Identity()

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        u = self.conv1(F.silu(self.norm1(h)))
        scale, shift = self.emb(F.silu(e))[:, :, None, None].chunk(2, dim=1)
        u = self.conv2(self.drop(F.silu(self.norm2(u) * (1 + scale) + shift)))
        return (self.skip(h) + u) * (1 / math.sqrt(2))


class Attention(nn.Module):
    """Single-head self-attention over positions, ``(h + P attn(GN(h))) / sqrt 2``."""

    def __init__(self, channels: int, generator):
        super().__init__()
        self.norm = _norm(channels)
        self.qkv = _conv(channels, 3 * channels, generator, kernel=1)
        self.proj = _conv(channels, channels, generator, kernel=1, zero=True)

    def forward(self, h: Tensor) -> Tensor:
        b, c, height, width = h.shape
        q, k, v = self.qkv(self.norm(h)).reshape(b, 3, c, height * width).transpose(2, 3).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(c)) v, (B, HW, C)
        out = out.transpose(1, 2).reshape(b, c, height, width)
        return (h + self.proj(out)) * (1 / math.sqrt(2))


class Stage(nn.Module):
    """A residual block, then self-attention if ``attention``."""

    def __init__(self, block: ResBlock, attention: Attention | None):
        super().__init__()
        self.block, self.attention = block, attention

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        h = self.block(h, e)
        return h if self.attention is None else self.attention(h)


def _stage(
    c_in: int, c_out: int, emb_dim: int, dropout: float, attention: bool, generator
) -> Stage:
    """A residual block to ``c_out`` channels, with attention after it if ``attention``."""
    block = ResBlock(c_in, c_out, emb_dim, dropout, generator)
    return Stage(block, Attention(c_out, generator) if attention else None)


class _Encoder(nn.Module):
    """The U-Net's first half: embeddings, input convolution, down levels and middle (module doc).

    Builds its layers in the order of the full network, so that a :class:`UNet` draws the same
    initial weights from ``generator`` as before the halves were split.
    """

    def __init__(
        self,
        shape: Sequence[int],
        ch: int,
        ch_mult: Sequence[int],
        num_res_blocks: int,
        attn_resolutions: Sequence[int],
        dropout: float,
        embedding: str,
        fourier_scale: float,
        time_scale: float,
        num_classes: int | None,
        generator: torch.Generator | None,
    ):
        super().__init__()
        shape = tuple(shape)
        if len(shape) != 3 or not all(isinstance(s, int) and s >= 1 for s in shape):
            raise ValueError(f"shape must be (C, H, W), three integers >= 1; got {shape!r}")
        ch = check_int("ch", ch, 1)
        ch_mult = tuple(ch_mult)
        if not ch_mult or not all(isinstance(m, int) and m >= 1 for m in ch_mult):
            raise ValueError(
                f"ch_mult must be a non-empty sequence of integers >= 1; got {ch_mult!r}"
            )
        num_res_blocks = check_int("num_res_blocks", num_res_blocks, 1)
        dropout = check_number("dropout", dropout, 0, 1, high_open=True)
        self.shape, levels = shape, len(ch_mult)
        factor = 2 ** (levels - 1)
        self.padded = tuple(factor * math.ceil(s / factor) for s in shape[1:])
        self.resolutions = tuple(self.padded[0] // 2**i for i in range(levels))
        attn = tuple(attn_resolutions)
        if not set(attn) <= set(self.resolutions):
            raise ValueError(
                f"attn_resolutions must be a subset of the levels' resolutions {self.resolutions}; "
                f"got {attn!r}"
            )
        self.emb_dim = emb_dim = 4 * ch
        self.embed = time_embedding(
            embedding, ch, fourier_scale=fourier_scale, time_scale=time_scale, generator=generator
        )
        self.time = nn.Sequential(
            _init(nn.Linear(ch, emb_dim), generator),
            nn.SiLU(),
            _init(nn.Linear(emb_dim, emb_dim), generator),
        )
        self.label = (
            None if num_classes is None else LabelEmbedding(num_classes, emb_dim, generator)
        )
        self.input = _conv(shape[0], ch, generator)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        widths, width = [ch], ch  # the widths of the skips, in the order they are kept
        for level, mult in enumerate(ch_mult):
            stages = nn.ModuleList()
            for _ in range(num_res_blocks):
                attention = self.resolutions[level] in attn
                stages.append(_stage(width, ch * mult, emb_dim, dropout, attention, generator))
                width = ch * mult
                widths.append(width)
            self.down.append(stages)
            if level < levels - 1:
                self.downsample.append(_conv(width, width, generator, stride=2))
                widths.append(width)
        self.middle = nn.ModuleList(
            [
                _stage(width, width, emb_dim, dropout, True, generator),
                _stage(width, width, emb_dim, dropout, False, generator),
            ]
        )
        self.skip_widths, self.width = widths, width

    def _encode(
        self, x: Tensor, t: Tensor, y: Tensor | None
    ) -> tuple[Tensor, list[Tensor], Tensor]:
        """The middle's output, the skips in the order they were kept, and ``e``."""
        if x.shape[1:] != self.shape or t.shape != x.shape[:1]:
            raise ValueError(
                f"expected x of shape (B, {', '.join(map(str, self.shape))}) and t of shape (B,); "
                f"got x {tuple(x.shape)} and t {tuple(t.shape)}"
            )
        e = self.time(self.embed(t))
        if self.label is not None:
            e = e + self.label(y, x.shape[0])
        elif y is not None:
            raise ValueError("y must be None for a network without labels (num_classes=None)")
        height, width = x.shape[2:]
        h = self.input(F.pad(x, (0, self.padded[1] - width, 0, self.padded[0] - height)))
        skips = [h]
        for level, stages in enumerate(self.down):
            for stage in stages:
                h = stage(h, e)
                skips.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
                skips.append(h)
        for stage in self.middle:
            h = stage(h, e)
        return h, skips, e


class UNet(_Encoder):
    """A U-Net ``(x (B, C, H, W), t (B,)[, y (B,)]) -> (B, C, H, W)`` (layout in the module doc).

    Its output is whatever the parameterisation says (score, epsilon, x0 or v); see
    :func:`scoresde.score.get_score_fn`.

    Arguments:
        shape: ``(C, H, W)`` of one image.
        ch: the width of the first level.
        ch_mult: width multipliers per level; its length ``L`` sets the number of levels.
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attn_resolutions: resolutions (heights of the padded feature maps) with self-attention.
        dropout: dropout rate inside the residual blocks, in ``[0, 1)``.
        embedding, fourier_scale, time_scale: the time embedding, as for the MLP
            (:func:`~scoresde.nets.embeddings.time_embedding`), of width ``ch``.
        num_classes: the number of classes of an optional label ``y``; ``None``: no labels.
        generator: the source of the initial weights, Fourier frequencies and label vectors.
    """

    def __init__(
        self,
        shape: Sequence[int],
        ch: int = 64,
        ch_mult: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (),
        dropout: float = 0.1,
        embedding: str = "fourier",
        fourier_scale: float = 16.0,
        time_scale: float = 999.0,
        num_classes: int | None = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__(
            shape,
            ch,
            ch_mult,
            num_res_blocks,
            attn_resolutions,
            dropout,
            embedding,
            fourier_scale,
            time_scale,
            num_classes,
            generator,
        )
        widths, width = list(self.skip_widths), self.width  # checked by the first half
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(len(self.resolutions))):
            stages = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                c_out, attention = ch * ch_mult[level], self.resolutions[level] in attn_resolutions
                c_in = width + widths.pop()
                stages.append(_stage(c_in, c_out, self.emb_dim, dropout, attention, generator))
                width = c_out
            self.up.append(stages)
            if level > 0:
                self.upsample.append(
                    nn.Sequential(nn.Upsample(scale_factor=2.0), _conv(width, width, generator))
                )
        self.output = nn.Sequential(
            _norm(width), nn.SiLU(), _conv(width, self.shape[0], generator, zero=True)
        )

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """The output, shaped like ``x`` ``(B, C, H, W)``, at times ``t`` ``(B,)``, with labels
        ``y`` ``(B,)`` (``-1``: none) or ``None`` if the network has ``num_classes``."""
        h, skips, e = self._encode(x, t, y)
        for level, stages in enumerate(self.up):
            for stage in stages:
                h = stage(torch.cat([h, skips.pop()], dim=1), e)
            if level < len(self.upsample):
                h = self.upsample[level](h)
        height, width = x.shape[2:]
        return self.output(h)[:, :, :height, :width]


class UNetClassifier(_Encoder):
    """A noise-conditional classifier ``(x (B, C, H, W), t (B,)) -> (B, num_classes)`` logits:
    the U-Net's first half (down levels and middle, with its time embedding), then
    ``W mean_{h, w}(act(h))``, a linear head on the average over positions (Dhariwal & Nichol
    2021's classifier, average-pooled, without their last GroupNorm, which measured 2-100x
    further from the exact posterior of a 16-D mixture). ``W`` starts at zero: the uniform
    posterior.

    Trained by :func:`scoresde.losses.classifier_loss_fn`, its log-softmax estimates the noisy
    class posterior ``log p_t(y | x)``, the classifier of
    :func:`scoresde.guidance.classifier_guidance`.

    Arguments:
        shape: ``(C, H, W)`` of one image.
        num_classes: the number of classes (at least 2).
        ch, ch_mult, num_res_blocks, attn_resolutions, dropout, embedding, fourier_scale,
            time_scale, generator: as for :class:`UNet` (whose first half this is).
    """

    def __init__(
        self,
        shape: Sequence[int],
        num_classes: int,
        ch: int = 64,
        ch_mult: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (),
        dropout: float = 0.1,
        embedding: str = "fourier",
        fourier_scale: float = 16.0,
        time_scale: float = 999.0,
        generator: torch.Generator | None = None,
    ):
        num_classes = check_int("num_classes", num_classes, 2)
        super().__init__(
            shape,
            ch,
            ch_mult,
            num_res_blocks,
            attn_resolutions,
            dropout,
            embedding,
            fourier_scale,
            time_scale,
            None,
            generator,
        )
        self.num_classes = num_classes
        self.head = _init(nn.Linear(self.width, num_classes), generator, zero=True)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` of images ``x`` ``(B, C, H, W)`` at times ``t`` ``(B,)``."""
        h = self._encode(x, t, None)[0]
        return self.head(F.silu(h).mean(dim=(2, 3)))
