"""How a batch of data looks in a figure: points as a 2D histogram, images as a tiled grid.

Each dataset's ``show(ax, x)`` (:class:`scoresde.datasets.Dataset`) calls one of these, so figure
code draws samples, data and the diffusion process without asking what kind of data it holds. They
draw onto a matplotlib ``Axes`` the caller made and import nothing from matplotlib themselves.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = ["as_array", "points_limit", "show_points", "image_grid", "show_images"]


def as_array(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """``x`` as a float64 NumPy array (detached, on the CPU)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def points_limit(points: np.ndarray, margin: float = 1.15) -> float:
    """A symmetric axis limit holding 99.5% of the points in each coordinate (1 if none is)."""
    finite = points[np.isfinite(points).all(axis=1)]
    if len(finite) == 0:
        return 1.0
    return float(margin * np.quantile(np.abs(finite), 0.995)) or 1.0


def show_points(
    ax: Any, x: torch.Tensor | np.ndarray, *, limit: float | None = None, bins: int = 120
) -> None:
    """Draw 2D points ``(n, 2)`` as a histogram on ``[-limit, limit]^2`` (default: fit the points).

    A histogram shows a density faithfully where a scatter plot of thousands of points saturates.
    """
    points = as_array(x)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must have shape (n, 2); got {points.shape}")
    lim = points_limit(points) if limit is None else limit
    ax.hist2d(points[:, 0], points[:, 1], bins=bins, range=[[-lim, lim], [-lim, lim]], cmap="magma")
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def image_grid(
    x: torch.Tensor | np.ndarray,
    *,
    value_range: tuple[float, float],
    ncols: int | None = None,
    pad: int = 1,
) -> np.ndarray:
    """Images ``(n, C, H, W)`` tiled row by row into one ``(rows, cols, 3)`` array in ``[0, 1]``.

    Each value ``v`` becomes ``(v - lo) / (hi - lo)`` clipped to ``[0, 1]`` with
    ``(lo, hi) = value_range``; one channel is drawn grey, three as RGB. Tiles are separated by
    ``pad`` pixels of a mid grey (0.5), and empty cells of the last row are left grey too.

    Arguments:
        x: the images.
        value_range: the values drawn black and white.
        ncols: tiles per row; default ``ceil(sqrt(n))``.
        pad: pixels between tiles.
    """
    images = as_array(x)
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(
            f"images must have shape (n, C, H, W) with n >= 1, C 1 or 3; got {images.shape}"
        )
    lo, hi = value_range
    if not hi > lo:
        raise ValueError(f"value_range must be (lo, hi) with lo < hi; got {value_range!r}")
    n, c, h, w = images.shape
    ncols = math.ceil(math.sqrt(n)) if ncols is None else max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    tiles = np.clip((images - lo) / (hi - lo), 0.0, 1.0).transpose(0, 2, 3, 1)
    if c == 1:
        tiles = np.repeat(tiles, 3, axis=3)
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, 3), 0.5)
    for i in range(n):
        top, left = pad + (i // ncols) * (h + pad), pad + (i % ncols) * (w + pad)
        grid[top : top + h, left : left + w] = tiles[i]
    return grid


def show_images(
    ax: Any,
    x: torch.Tensor | np.ndarray,
    *,
    value_range: tuple[float, float],
    ncols: int | None = None,
) -> None:
    """Draw images ``(n, C, H, W)`` as one tiled grid (:func:`image_grid`), pixels unsmoothed."""
    ax.imshow(image_grid(x, value_range=value_range, ncols=ncols), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
