"""Is the density figure the model's or the solver's? The grid of ``density.png`` solved 3 ways.

The likelihood solver (``dopri5``) chooses one step size for a whole batch, from the error of its
worst point. For the trained model of a run directory this script evaluates the figure's grid
(as ``scoresde.pipeline.evaluate`` does) and compares, on the points the figure colours (within
``floor`` nats of the maximum):

* the figure's own solve: the whole grid in one batch at the config's tolerances;
* the reference: the whole grid in float64 at ``rtol = atol = 1e-9``;
* each point of two grid rows solved alone at the config's tolerances (its own step sizes).

If the batch agrees with the reference to a small fraction of the colour scale, whatever the
figure shows (edges included) is the model's density, not the solver's.

    python -m scoresde.run --workdir runs/main                      # a trained run
    python benchmarks/density_grid.py --workdir runs/main           # about a minute
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
from ml_collections import ConfigDict

from scoresde import pipeline
from scoresde.checkpoint import latest_checkpoint, load_checkpoint
from scoresde.likelihood import log_likelihood


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="a trained run directory")
    parser.add_argument("--floor", type=float, default=12.0, help="the figure's colour range")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    config = ConfigDict(json.loads((workdir / "config.json").read_text()))
    parts = pipeline.build(config)
    checkpoint = load_checkpoint(latest_checkpoint(workdir / "checkpoints"))
    ema = pipeline.load_trained(parts, checkpoint).ema_model
    torch.set_num_threads(max(config.threads, 1))
    models = {torch.float32: ema, torch.float64: copy.deepcopy(ema).double()}

    held_out = parts.dataset.sample(config.eval.n_eval, parts.generator("eval"))
    lim, g = 1.1 * float(held_out.abs().max()), config.eval.density_grid
    axis = torch.linspace(-lim, lim, g)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    grid = torch.stack([xs.flatten(), ys.flatten()], dim=1)

    def solve(points: torch.Tensor, tol: float | None = None) -> torch.Tensor:
        options = dict(parts.likelihood)
        if tol is not None:
            options.update(rtol=tol, atol=tol)
        score_fn = parts.score_fn(models[points.dtype])
        generator = torch.Generator().manual_seed(0)
        return log_likelihood(parts.sde, score_fn, points, generator=generator, **options)

    batch = solve(grid)
    reference = solve(grid.double(), tol=1e-9).float()
    coloured = batch > float(batch.max()) - args.floor
    gap = (batch - reference).abs()[coloured]
    print(f"{int(coloured.sum())} of {g * g} grid points coloured; colour range {args.floor} nats")
    print("| solve | max abs error (nats) | median abs error (nats) |")
    print("|---|---:|---:|")
    print(f"| one batch, config tolerances | {float(gap.max()):.3g} | {float(gap.median()):.3g} |")
    for row in (g // 2, g // 4):
        index = torch.arange(row * g, (row + 1) * g)
        alone = torch.stack([solve(grid[i : i + 1])[0] for i in index])
        err = (alone - reference[index]).abs()
        worst, typical = float(err.max()), float(err.median())
        print(f"| row {row}, each point alone | {worst:.3g} | {typical:.3g} |")


if __name__ == "__main__":
    main()
