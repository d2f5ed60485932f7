"""Matplotlib figures of a run: samples, densities, the diffusion process and the loss.

Figures are built on :class:`matplotlib.figure.Figure` directly, without ``pyplot``: no global
figure state, no GUI backend (``fig.savefig`` renders with Agg), safe in scripts, tests and threads.
Every function returns the figure; the caller saves it (``fig.savefig(path)``).

Every figure has a title, axes with their units and a colour bar for its colours. Point clouds are
tensors or arrays of shape ``(n, 2)``; they are drawn as 2D histograms, normalised to a density
(points per unit area over all ``n`` points, so points outside the panel lower it) on one
logarithmic colour scale for the whole figure: a scatter plot of thousands of points saturates,
and a linear scale hides the tails. The toy densities have no physical units: coordinates are in
the data's own units. Any other data (images) are drawn by their dataset's ``show(ax, x)`` in a
grid of panels (:func:`shown_grid`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator

from scoresde.display import points_limit

__all__ = [
    "point_grid",
    "plot_samples",
    "plot_process",
    "plot_density",
    "plot_loss",
    "shown_grid",
]

PANEL_INCHES = 2.6
COORDINATES = ("$x_1$", "$x_2$")
#: The density colour scale spans this many decades below the figure's largest density.
DECADES = 4


def _as_points(name: str, x: torch.Tensor | np.ndarray) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"{name} must be 2D points of shape (n, 2); got {a.shape}")
    return a.astype(np.float64)


def _histogram(points: np.ndarray, lim: float, bins: int) -> np.ndarray:
    """Points per unit area in ``bins x bins`` cells of ``[-lim, lim]^2``, over all points; rows
    are y (bottom to top), columns x."""
    counts, _, _ = np.histogram2d(
        points[:, 0], points[:, 1], bins=bins, range=[[-lim, lim], [-lim, lim]]
    )
    cell = (2 * lim / bins) ** 2
    return counts.T / (len(points) * cell)


def point_grid(
    points: Sequence[Sequence[torch.Tensor | np.ndarray]],
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    shared_limits: bool = True,
    bins: int | None = None,
    title: str = "",
) -> Figure:
    """A grid of 2D histograms, ``points[i][j]`` in row ``i`` and column ``j``, one colour bar.

    Arguments:
        points: rows of ``(n, 2)`` point clouds (every row the same length).
        row_labels: a label per row, drawn beside the row's y axis.
        col_labels: a label per column, drawn as the top row's titles.
        shared_limits: one axis range for each column (from its first panel, which is usually
            the data) rather than one per panel.
        bins: histogram bins per axis; by default ``1.2 sqrt(n)`` within ``[30, 120]`` for the
            largest panel's ``n`` points, so that a cell of the data's mass holds several points.
        title: the figure's title.
    """
    rows = [
        [_as_points(f"points[{i}][{j}]", p) for j, p in enumerate(row)]
        for i, row in enumerate(points)
    ]
    if not rows or not rows[0] or any(len(r) != len(rows[0]) for r in rows):
        raise ValueError(
            "points must be a non-empty grid with the same number of panels in every row"
        )
    if bins is None:
        largest = max(len(p) for row in rows for p in row)
        bins = int(np.clip(1.2 * np.sqrt(largest), 30, 120))
    n_rows, n_cols = len(rows), len(rows[0])
    limits = [
        [
            points_limit(rows[0][j]) if shared_limits else points_limit(rows[i][j])
            for j in range(n_cols)
        ]
        for i in range(n_rows)
    ]
    images = [
        [_histogram(rows[i][j], limits[i][j], bins) for j in range(n_cols)] for i in range(n_rows)
    ]
    top = max(float(h.max()) for row in images for h in row) or 1.0
    norm = LogNorm(vmin=top * 10.0**-DECADES, vmax=top, clip=True)
    size = (PANEL_INCHES * n_cols + 0.9, PANEL_INCHES * n_rows + 0.4)
    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for i in range(n_rows):
        for j in range(n_cols):
            ax, lim = axes[i][j], limits[i][j]
            image = ax.imshow(
                np.ma.masked_equal(images[i][j], 0),
                origin="lower",
                extent=(-lim, lim, -lim, lim),
                norm=norm,
                cmap="magma",
                interpolation="nearest",
            )
            ax.set_facecolor("black")
            ax.tick_params(labelsize=7)
            if i == n_rows - 1:
                ax.set_xlabel(COORDINATES[0], fontsize=9)
            if j == 0:
                label = COORDINATES[1]
                if row_labels is not None:
                    label = f"{row_labels[i]}\n{label}"
                ax.set_ylabel(label, fontsize=9)
            if col_labels is not None and i == 0:
                ax.set_title(col_labels[j], fontsize=10)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.9, label="density (points / unit area)")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_samples(
    data: torch.Tensor | np.ndarray, samples: torch.Tensor | np.ndarray, *, title: str = ""
) -> Figure:
    """Data next to generated samples, on the data's axis range and one colour scale."""
    return point_grid(
        [[data, samples]],
        col_labels=[f"data ({len(data)} points)", f"samples ({len(samples)})"],
        title=title,
    )


def plot_process(
    forward: Sequence[torch.Tensor | np.ndarray],
    reverse: Sequence[torch.Tensor | np.ndarray],
    times: Sequence[float],
    *,
    title: str = "",
) -> Figure:
    """The forward diffusion (top row) and the reverse process (bottom row) at the same ``times``.

    Arguments:
        forward: ``x_t`` of the noised data at each time.
        reverse: the sampler's state at each time.
        times: the times, one per column.
        title: the figure's title.
    """
    if not (len(forward) == len(reverse) == len(times)):
        raise ValueError(
            "forward, reverse and times must have the same length; got "
            f"{len(forward)}, {len(reverse)}, {len(times)}"
        )
    return point_grid(
        [list(forward), list(reverse)],
        row_labels=["forward SDE", "reverse process"],
        col_labels=[f"t = {t:.3g}" for t in times],
        shared_limits=False,
        title=title,
    )


def plot_density(
    extent: tuple[float, float, float, float],
    model_log_prob: torch.Tensor | np.ndarray,
    true_log_prob: torch.Tensor | np.ndarray | None = None,
    *,
    floor: float = 12.0,
    title: str = "",
) -> Figure:
    """The model's log-density on a grid, next to the true one where it is known.

    Arguments:
        extent: ``(x_min, x_max, y_min, y_max)`` of the grid.
        model_log_prob: ``(H, W)`` log-densities, row ``i`` at the ``i``-th y value (bottom to top),
            column ``j`` at the ``j``-th x value.
        true_log_prob: the same for the true density (``-inf`` outside its support is fine).
        floor: the colour scale spans ``[max - floor, max]`` nats; lower values are clipped.
        title: the figure's title.
    """
    panels = [("model (probability-flow likelihood)", model_log_prob)]
    if true_log_prob is not None:
        panels.append(("true density", true_log_prob))
    grids = [
        np.asarray(p.detach().cpu() if isinstance(p, torch.Tensor) else p, dtype=np.float64)
        for _, p in panels
    ]
    if any(g.ndim != 2 or g.shape != grids[0].shape for g in grids):
        raise ValueError(
            f"log-density grids must be 2D and of one shape; got {[g.shape for g in grids]}"
        )
    top = max(float(np.nanmax(np.where(np.isfinite(g), g, -np.inf))) for g in grids)
    fig = Figure(
        figsize=(PANEL_INCHES * len(panels) + 1.0, PANEL_INCHES + 0.5), layout="constrained"
    )
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for j, (ax, (name, _), grid) in enumerate(zip(axes, panels, grids, strict=True)):
        image = ax.imshow(
            np.clip(np.nan_to_num(grid, nan=-np.inf), top - floor, top),
            origin="lower",
            extent=extent,
            cmap="viridis",
            vmin=top - floor,
            vmax=top,
        )
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(COORDINATES[0], fontsize=9)
        if j == 0:
            ax.set_ylabel(COORDINATES[1], fontsize=9)
        ax.tick_params(labelsize=7)
    fig.colorbar(image, ax=list(axes), shrink=0.9, label="log-density (nats)")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


#: The held-out likelihoods a training evaluation may hold, and their axis labels.
CURVES = {"test_bpd": "held-out bits/dim", "test_nll": "held-out NLL (nats)"}


def plot_loss(
    steps: Sequence[int] | np.ndarray,
    losses: Sequence[float] | np.ndarray,
    *,
    evals: Sequence[dict[str, float]] = (),
    smoothing: float = 0.98,
    title: str = "training loss",
) -> Figure:
    """Training loss per step (faint) and its exponential moving average; with ``evals`` (the
    periodic evaluations of :func:`scoresde.training.train`, each with its ``step``) also the EMA
    model's held-out loss, and a second panel with the held-out likelihood where they hold one
    (a key of :data:`CURVES`).

    The average is ``m_k = smoothing m_{k-1} + (1 - smoothing) loss_k``, bias-corrected by dividing
    by ``1 - smoothing^k`` as in Adam, so it starts at the first losses rather than at zero. A
    positive loss is drawn on a logarithmic axis with ticks at 1, 2 and 5 times each power of 10.
    """
    steps_a, losses_a = np.asarray(steps, dtype=np.float64), np.asarray(losses, dtype=np.float64)
    if steps_a.shape != losses_a.shape or steps_a.ndim != 1:
        raise ValueError(
            f"steps and losses must be 1D of one length; got {steps_a.shape} and {losses_a.shape}"
        )
    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must be a number in [0, 1); got {smoothing!r}")
    avg = np.empty_like(losses_a)
    m = 0.0
    for k, value in enumerate(losses_a, start=1):
        m = smoothing * m + (1 - smoothing) * value
        avg[k - 1] = m / (1 - smoothing**k)
    curve = next((key for key in CURVES if any(key in e for e in evals)), None)
    fig = Figure(figsize=(5.0, 5.4 if curve else 3.4), layout="constrained")
    axes = fig.subplots(2 if curve else 1, 1, sharex=True, squeeze=False)[:, 0]
    ax = axes[0]
    ax.plot(steps_a, losses_a, color="tab:blue", alpha=0.25, linewidth=0.7, label="loss per step")
    ax.plot(steps_a, avg, color="tab:blue", linewidth=1.5, label=f"moving average ({smoothing})")
    held_out = [(e["step"], e["ema_held_out_loss"]) for e in evals if "ema_held_out_loss" in e]
    if held_out:
        ax.plot(*zip(*held_out, strict=True), "o-", color="tab:orange", ms=4,
                label="held-out loss (EMA)")  # fmt: skip
    axes[-1].set_xlabel("training step")
    ax.set_ylabel("loss")
    if len(losses_a) and np.all(losses_a > 0):
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(frameon=False)
    ax.set_title(title, fontsize=10)
    if curve:
        points = [(e["step"], e[curve]) for e in evals if curve in e]
        axes[1].plot(*zip(*points, strict=True), "o-", color="tab:green", ms=4)
        axes[1].set_ylabel(f"{CURVES[curve]} (EMA)")
        axes[1].grid(True, alpha=0.3)
    return fig


def shown_grid(
    panels: Sequence[Sequence[torch.Tensor]],
    show: Callable[[Any, torch.Tensor], None],
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    title: str = "",
) -> Figure:
    """A grid of panels, ``panels[i][j]`` a batch drawn in row ``i``, column ``j`` by ``show``
    (a dataset's :meth:`~scoresde.datasets.Dataset.show`, e.g. a tiled grid of images)."""
    n_rows, n_cols = len(panels), len(panels[0])
    if n_rows == 0 or any(len(row) != n_cols for row in panels):
        raise ValueError("panels must be a non-empty list of rows of one length")
    fig = Figure(figsize=(PANEL_INCHES * n_cols, PANEL_INCHES * n_rows + 0.4), layout="constrained")
    axes = np.atleast_2d(fig.subplots(n_rows, n_cols, squeeze=False))
    for i, row in enumerate(panels):
        for j, batch in enumerate(row):
            show(axes[i, j], batch)
            if i == 0 and col_labels is not None:
                axes[i, j].set_title(col_labels[j], fontsize=9)
        if row_labels is not None:
            axes[i, 0].set_ylabel(row_labels[i], fontsize=9)
    fig.suptitle(title, fontsize=10)
    return fig
