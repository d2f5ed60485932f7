"""Sample quality per score evaluation of every sampler, on every kind of time grid, against the
exact score of a Gaussian mixture.

For the VP, sub-VP and VE SDEs (``VESDE(sigma_min=0.01, sigma_max=50)``) and the exact score of
the 8-Gaussians ring (radius 4, std 0.5), each sampler draws ``--n`` samples (float64, seed 0)
with a budget of ``NFE`` score evaluations in {5, 10, 20, 50} (``denoise=False``, so the budget is
the steps times the evaluations per step: 2 for Heun, 1 for the others), on each grid:

* ``uniform``, ``quadratic``, ``log_snr``, ``karras``: :func:`scoresde.time_grid` from ``T`` to
  the SDE's ``sampling_eps``;
* ``log_snr*``: ``log_snr`` with noise-level ends ``sigma_max = 20``, ``sigma_min = 0.03``
  (``sigma / alpha``): one step from ``T`` to ``sigma_max``, the rest uniform in log-SNR below it.

gap = mean ``-log p(samples) - H`` in nats, ``H`` the mixture's entropy (Monte Carlo on 2 million
points, standard error 0.0007); the gap's own standard error at ``--n 20000`` is 0.007. The peers'
numbers (DPM-Solver++(3M), k-diffusion's ``lms`` and ``dpmpp_2m``, EDM's Heun, Euler on the Karras
grid) were measured on the same mixture and score and are quoted from the issue.

    python benchmarks/fast_samplers.py [--n 20000] [--threads 1]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

import torch

from scoresde import VESDE, VPSDE, GaussianMixture, SubVPSDE, sample

BUDGETS = (5, 10, 20, 50)
NOISE_ENDS = {"sigma_max": 20.0, "sigma_min": 0.03}
GRIDS = {
    "uniform": {"grid": "uniform"},
    "quadratic": {"grid": "quadratic"},
    "log_snr": {"grid": "log_snr"},
    "karras": {"grid": "karras"},
    "log_snr*": {"grid": "log_snr", **NOISE_ENDS},
}
# name: (sampler options, score evaluations per step)
SOLVERS = {
    "em": ({"sampler": "em"}, 1),
    "ddim": ({"sampler": "ddim"}, 1),
    "heun": ({"sampler": "heun"}, 2),
    "dpm_solver-2": ({"sampler": "dpm_solver", "order": 2}, 1),
    "dpm_solver-3": ({"sampler": "dpm_solver", "order": 3}, 1),
    "unipc-3": ({"sampler": "unipc", "order": 3}, 1),
    "ipndm-4": ({"sampler": "ipndm", "order": 4}, 1),
}
PEERS = {
    "DPM-Solver++(3M)": {10: -0.034, 20: 0.041},
    "k-diffusion lms": {10: 0.254, 20: 0.055},
    "k-diffusion dpmpp_2m": {10: 0.766, 20: 0.071},
    "EDM Heun": {10: 20.4, 20: 0.337},
    "Euler, Karras grid": {10: 0.612, 20: 0.197},
}
SDES = {
    "VP": VPSDE(),
    "sub-VP": SubVPSDE(),
    "VE": VESDE(sigma_min=0.01, sigma_max=50.0),
}


def gap(sde, ring, entropy, n, options, grid, steps) -> float:
    x = sample(
        sde,
        ring.score_fn(sde),
        (n, 2),
        num_steps=steps,
        denoise=False,
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(0),
        **options,
        **grid,
    )
    return float(-ring.log_prob(x).mean()) - entropy


def cell(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if abs(value) < 10 else f"{value:+.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="samples per run")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("$ python " + shlex.join(sys.argv) + "\n")
    ring = GaussianMixture.ring(k=8, radius=4.0, std=0.5)
    entropy, entropy_se = ring.entropy(2_000_000, torch.Generator().manual_seed(1))
    print(f"entropy H = {entropy:.5f} +- {entropy_se:.5f} nats\n")
    began = time.perf_counter()
    best: dict[tuple[str, int], tuple[float, str]] = {}
    for sde_name, sde in SDES.items():
        print(f"### {sde_name}: gap (nats) at NFE " + " / ".join(map(str, BUDGETS)) + "\n")
        print("| sampler | grid | " + " | ".join(f"NFE {b}" for b in BUDGETS) + " |")
        print("| --- | --- |" + " ---: |" * len(BUDGETS))
        for solver, (options, per_step) in SOLVERS.items():
            for grid_name, grid in GRIDS.items():
                row = []
                for budget in BUDGETS:
                    steps = budget // per_step
                    try:
                        value = gap(sde, ring, entropy, args.n, options, grid, steps)
                    except ValueError:  # a grid the sampler cannot take at this budget
                        value = None
                    row.append(value)
                    if value is not None:
                        key = (sde_name, budget)
                        if key not in best or abs(value) < abs(best[key][0]):
                            best[key] = (value, f"{solver}, {grid_name}")
                print(
                    f"| {solver} | {grid_name} | " + " | ".join(map(cell, row)) + " |", flush=True
                )
        print()
    targets = "issue 9's targets: |gap| <= 0.02 at <= 10 evaluations, <= 0.01 at <= 20"
    print(f"### Best per SDE and budget, beside the peers ({targets})\n")
    print("| sampler | gap @ 10 NFE | gap @ 20 NFE |")
    print("| --- | ---: | ---: |")
    for s in SDES:
        cells = [f"{cell(best[(s, b)][0])} ({best[(s, b)][1]})" for b in (10, 20)]
        print(f"| scoresde's best, {s} | " + " | ".join(cells) + " |")
    for peer, values in PEERS.items():
        print(f"| {peer} (issue 9) | {cell(values[10])} | {cell(values[20])} |")
    print(f"\n(wall time {time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
