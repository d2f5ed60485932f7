"""Accuracy and cost of ``scoresde.log_likelihood`` against the Gaussian-mixture oracle.

For VP, sub-VP and VE SDEs with the oracle's exact score on the 8-Gaussian ring, each solver
setting (the adaptive ``dopri5`` at four tolerances; the fixed-step ``midpoint`` and ``rk4`` on
every kind of time grid, walked from ``eps`` up to ``T``) gives:

* solver error: mean ``|log_likelihood - log p_eps|`` with the prior's mismatch taken out, i.e.
  ``delta_logp + log p_T(z)`` with the oracle's exact ``p_T`` in place of the SDE's prior;
* prior mismatch: mean ``|log prior(z) - log p_T(z)|``, the model's error, not the solver's;
* NFE (score evaluations) and wall time of one call on the whole batch.

Errors are in nats, means of absolute values over the data points.

The issue's target is a solver error <= 1e-3 nats with <= 150 score evaluations; rows that meet
it are marked. Run: ``python benchmarks/likelihood.py [--n 1000] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

import torch

from scoresde import (
    SDE,
    VESDE,
    VPSDE,
    GaussianMixture,
    SubVPSDE,
    batch_broadcast,
    log_likelihood,
)

TARGET_ERROR, TARGET_NFE = 1e-3, 150
SETTINGS = [
    *({"method": "dopri5", "rtol": tol, "atol": tol} for tol in (1e-3, 1e-4, 1e-5, 1e-6)),
    *(
        {"method": method, "num_steps": n, "grid": grid}
        for method in ("midpoint", "rk4")
        for grid in ("uniform", "quadratic", "log_snr", "karras")
        for n in (5, 10, 20, 40)
    ),
]


def describe(setting: dict) -> str:
    if "num_steps" in setting:
        return f"{setting['method']}, {setting['num_steps']} steps, {setting['grid']} grid"
    return f"dopri5, rtol = atol = {setting['rtol']:g}"


def data_at_eps(oracle: GaussianMixture, sde: SDE, eps: float, n: int, seed: int) -> torch.Tensor:
    """``n`` exact samples of ``p_eps``, the oracle perturbed by ``sde`` to time ``eps``."""
    g = torch.Generator().manual_seed(seed)
    x0 = oracle.sample(n, g)
    mean, std = sde.marginal_prob(x0, torch.full((n,), eps, dtype=torch.float64))
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    return mean + batch_broadcast(std, x0) * noise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="number of data points")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eps", type=float, default=1e-5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("$ python " + shlex.join(sys.argv))
    print()
    print("| SDE | method | NFE | solver error | prior mismatch | wall (s) | target |")
    print("| --- | --- | ---: | ---: | ---: | ---: | :---: |")
    oracle = GaussianMixture.ring(8)
    for name, sde in (("VP", VPSDE()), ("sub-VP", SubVPSDE()), ("VE", VESDE())):
        x = data_at_eps(oracle, sde, args.eps, args.n, args.seed)
        truth = oracle.log_prob(x, args.eps, sde)
        for setting in SETTINGS:
            start = time.perf_counter()
            info = log_likelihood(
                sde,
                oracle.score_fn(sde),
                x,
                eps=args.eps,
                trace="exact",
                return_info=True,
                **setting,
            )
            wall = time.perf_counter() - start
            exact_prior = oracle.log_prob(info.z, sde.T, sde)
            error = (info.delta_logp + exact_prior - truth).abs().mean().item()
            mismatch = (info.prior_logp - exact_prior).abs().mean().item()
            met = "yes" if error <= TARGET_ERROR and info.nfe <= TARGET_NFE else ""
            print(
                f"| {name} | {describe(setting)} | {info.nfe} | {error:.1e} | {mismatch:.1e} "
                f"| {wall:.2f} | {met} |"
            )


if __name__ == "__main__":
    main()
