"""Matplotlib figures of a toy 2D run: samples, densities, the diffusion process and the loss.

Figures are built on :class:`matplotlib.figure.Figure` directly, without ``pyplot``: no global
figure state, no GUI backend (``fig.savefig`` renders with Agg), safe in scripts, tests and threads.
Every function returns the figure; the caller saves it (``fig.savefig(path)``).

Point clouds are tensors or arrays of shape ``(n, 2)``; they are drawn as 2D histograms, which show
a density faithfully where a scatter plot of thousands of points saturates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from scoresde.display import points_limit, show_points

__all__ = ["point_grid", "plot_samples", "plot_process", "plot_density", "plot_loss"]

PANEL_INCHES = 2.6


def _as_points(name: str, x: torch.Tensor | np.ndarray) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"{name} must be 2D points of shape (n, 2), got {a.shape}")
    return a.astype(np.float64)


def point_grid(
    points: Sequence[Sequence[torch.Tensor | np.ndarray]],
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    shared_limits: bool = True,
    bins: int = 120,
) -> Figure:
    """A grid of 2D histograms, ``points[i][j]`` in row ``i`` and column ``j``.

    Arguments:
        points: rows of ``(n, 2)`` point clouds (every row the same length).
        row_labels: a label per row, drawn as the row's y-axis label.
        col_labels: a label per column, drawn as the top row's titles.
        shared_limits: one axis range for the whole grid (from the first panel of each column, which
            is usually the data) rather than one per panel.
        bins: histogram bins per axis.
    """
    rows = [
        [_as_points(f"points[{i}][{j}]", p) for j, p in enumerate(row)]
        for i, row in enumerate(points)
    ]
    if not rows or not rows[0] or any(len(r) != len(rows[0]) for r in rows):
        raise ValueError(
            "points must be a non-empty grid with the same number of panels in every row"
        )
    n_rows, n_cols = len(rows), len(rows[0])
    fig = Figure(figsize=(PANEL_INCHES * n_cols, PANEL_INCHES * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for j in range(n_cols):
        column_limit = points_limit(rows[0][j])
        for i in range(n_rows):
            pts = rows[i][j]
            ax = axes[i][j]
            show_points(ax, pts, limit=column_limit if shared_limits else None, bins=bins)
            if col_labels is not None and i == 0:
                ax.set_title(col_labels[j], fontsize=10)
            if row_labels is not None and j == 0:
                ax.set_ylabel(row_labels[i], fontsize=10)
    return fig


def plot_samples(
    data: torch.Tensor | np.ndarray, samples: torch.Tensor | np.ndarray, *, title: str = ""
) -> Figure:
    """Data next to generated samples, on the data's axis range."""
    fig = point_grid([[data, samples]], col_labels=["data", "samples"])
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_process(
    forward: Sequence[torch.Tensor | np.ndarray],
    reverse: Sequence[torch.Tensor | np.ndarray],
    times: Sequence[float],
) -> Figure:
    """The forward diffusion (top row) and the reverse process (bottom row) at the same ``times``.

    Arguments:
        forward: ``x_t`` of the noised data at each time.
        reverse: the sampler's state at each time.
        times: the times, one per column.
    """
    if not (len(forward) == len(reverse) == len(times)):
        raise ValueError(
            "forward, reverse and times must have the same length, got "
            f"{len(forward)}, {len(reverse)}, {len(times)}"
        )
    return point_grid(
        [list(forward), list(reverse)],
        row_labels=["forward SDE", "reverse process"],
        col_labels=[f"t = {t:.3g}" for t in times],
        shared_limits=False,
    )


def plot_density(
    extent: tuple[float, float, float, float],
    model_log_prob: torch.Tensor | np.ndarray,
    true_log_prob: torch.Tensor | np.ndarray | None = None,
    *,
    floor: float = 12.0,
) -> Figure:
    """The model's log-density on a grid, next to the true one where it is known.

    Arguments:
        extent: ``(x_min, x_max, y_min, y_max)`` of the grid.
        model_log_prob: ``(H, W)`` log-densities, row ``i`` at the ``i``-th y value (bottom to top),
            column ``j`` at the ``j``-th x value.
        true_log_prob: the same for the true density (``-inf`` outside its support is fine).
        floor: the colour scale spans ``[max - floor, max]`` nats; lower values are clipped.
    """
    panels = [("model log p (ODE likelihood)", model_log_prob)]
    if true_log_prob is not None:
        panels.append(("true log p", true_log_prob))
    grids = [
        np.asarray(p.detach().cpu() if isinstance(p, torch.Tensor) else p, dtype=np.float64)
        for _, p in panels
    ]
    if any(g.ndim != 2 or g.shape != grids[0].shape for g in grids):
        raise ValueError(
            f"log-density grids must be 2D and of one shape, got {[g.shape for g in grids]}"
        )
    top = max(float(np.nanmax(np.where(np.isfinite(g), g, -np.inf))) for g in grids)
    fig = Figure(figsize=(PANEL_INCHES * len(panels) + 0.8, PANEL_INCHES), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, _), grid in zip(axes, panels, grids, strict=True):
        image = ax.imshow(
            np.clip(np.nan_to_num(grid, nan=-np.inf), top - floor, top),
            origin="lower",
            extent=extent,
            cmap="viridis",
            vmin=top - floor,
            vmax=top,
        )
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=list(axes), shrink=0.9, label="nats")
    return fig


def plot_loss(
    steps: Sequence[int] | np.ndarray,
    losses: Sequence[float] | np.ndarray,
    *,
    smoothing: float = 0.98,
) -> Figure:
    """Training loss per step (faint) and its exponential moving average.

    The average is ``m_k = smoothing m_{k-1} + (1 - smoothing) loss_k``, bias-corrected by dividing
    by ``1 - smoothing^k`` as in Adam, so it starts at the first losses rather than at zero.
    """
    steps_a, losses_a = np.asarray(steps, dtype=np.float64), np.asarray(losses, dtype=np.float64)
    if steps_a.shape != losses_a.shape or steps_a.ndim != 1:
        raise ValueError(
            f"steps and losses must be 1D of one length, got {steps_a.shape} and {losses_a.shape}"
        )
    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must lie in [0, 1), got {smoothing!r}")
    avg = np.empty_like(losses_a)
    m = 0.0
    for k, value in enumerate(losses_a, start=1):
        m = smoothing * m + (1 - smoothing) * value
        avg[k - 1] = m / (1 - smoothing**k)
    fig = Figure(figsize=(5.0, 3.2), layout="constrained")
    ax = fig.subplots()
    ax.plot(steps_a, losses_a, color="tab:blue", alpha=0.25, linewidth=0.7, label="loss")
    ax.plot(steps_a, avg, color="tab:blue", linewidth=1.5, label="moving average")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    if len(losses_a) and np.all(losses_a > 0):
        ax.set_yscale("log")
    ax.legend(frameon=False)
    return fig
