"""Loop overhead and accuracy of the reference samplers (em, pc, ode) against the mixture oracle.

For the VP and VE SDEs (``N = 1000``) and each sampler x number of steps (999 steps: the reference
implementation's grid of 1000 times), on 10,000 2-D points drawn towards an 8-mode ring with the
oracle's exact score, it prints a markdown table of:

* NFE: score evaluations the call made (as ``sample(..., return_info=True).nfe`` reports them);
* gap: ``mean(-log p_data(samples)) - H(p_data)`` in nats (0 for perfect samples, up to Monte-Carlo
  error ~0.01 at 10,000 samples);
* max |dw|: the largest error of a mode's weight (truth 1/8);
* wall time, and the loop overhead: sampling time / time of the same number of bare score calls on
  the same batch, timed right after each run (1.00 = the loop costs nothing beyond the score).

The oracle's score is expensive (float64, 8 components); a second table repeats the overhead with a
small MLP as the score, closer to the cost of a trained network on 2-D data (its samples are
meaningless: only time is measured).

Usage::

    python benchmarks/samplers.py            # the full table (several minutes on one core)
    python benchmarks/samplers.py --quick    # a smoke run: fewer points and steps
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

import torch

from scoresde import VESDE, VPSDE, GaussianMixture, sample
from scoresde.sde import SDE, ScoreFn, unchecked_times

CONFIGS: dict[str, dict] = {
    "em": {"sampler": "em"},
    "pc rd+langevin": {"sampler": "pc", "predictor": "reverse_diffusion", "corrector": "langevin"},
    "pc ancestral": {"sampler": "pc", "predictor": "ancestral_sampling", "corrector": "none"},
    "ode euler": {"sampler": "ode", "method": "euler"},
    "ode rk4": {"sampler": "ode", "method": "rk4"},
}
ADAPTIVE = {"ode dopri5 1e-3": {"rtol": 1e-3, "atol": 1e-3}, "ode dopri5 1e-5": {}}
SDES: dict[str, SDE] = {"VP": VPSDE(N=1000), "VE": VESDE(N=1000)}


def mlp_score(dim: int, width: int = 128, seed: int = 0) -> ScoreFn:
    """A randomly initialised MLP ``[x, t] -> score`` with two hidden SiLU layers of ``width``."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(dim + 1, width),
        torch.nn.SiLU(),
        torch.nn.Linear(width, width),
        torch.nn.SiLU(),
        torch.nn.Linear(width, dim),
    )

    def score_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return net(torch.cat([x, t[:, None]], dim=1))

    return score_fn


def bare_call_time(score_fn: ScoreFn, shape: tuple[int, ...], calls: int) -> float:
    """Seconds per score call on a batch of ``shape``, averaged over ``calls`` calls."""
    x = torch.randn(shape)
    t = torch.full((shape[0],), 0.5)
    with torch.no_grad(), unchecked_times():
        score_fn(x, t)
        start = time.perf_counter()
        for _ in range(calls):
            score_fn(x, t)
    return (time.perf_counter() - start) / calls


def run_row(
    sde: SDE, score_fn: ScoreFn, n: int, kwargs: dict, seed: int
) -> tuple[torch.Tensor, int, float, float]:
    """Samples, NFE, wall time and loop overhead of one sampler configuration.

    Each sampling run is followed by a bare-score timing on the same batch (``min(NFE, 200)``
    calls, scaled to NFE), so both see the same machine load. Short runs are repeated (same seed)
    until 0.5 s have passed; the overhead is total sampling time / total bare time.
    """
    walls, bares = [], []
    while sum(walls) < 0.5 and len(walls) < 20:
        generator = torch.Generator().manual_seed(seed)
        start = time.perf_counter()
        result = sample(sde, score_fn, (n, 2), generator=generator, return_info=True, **kwargs)
        walls.append(time.perf_counter() - start)
        bares.append(result.nfe * bare_call_time(score_fn, (n, 2), min(result.nfe, 200)))
    return result.samples, result.nfe, sum(walls) / len(walls), sum(walls) / sum(bares)


def quality_table(steps: list[int], n: int, seed: int) -> None:
    ring = GaussianMixture.ring(8)
    entropy, _ = ring.entropy(200_000, torch.Generator().manual_seed(seed))
    for sde_name, sde in SDES.items():
        per_call = bare_call_time(ring.score_fn(sde), (n, 2), calls=20)
        print(
            f"\n### {sde_name}: oracle score, {n} points, ~{per_call * 1e3:.2f} ms per score call\n"
        )
        print("| sampler | steps | NFE | gap (nats) | max abs dw | wall (s) | overhead |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        rows = [(name, k, {**kw, "num_steps": k}) for name, kw in CONFIGS.items() for k in steps]
        rows += [(name, "adaptive", {"sampler": "ode", **kw}) for name, kw in ADAPTIVE.items()]
        for name, k, kwargs in rows:
            x, nfe, wall, overhead = run_row(sde, ring.score_fn(sde), n, kwargs, seed)
            gap = float(-ring.log_prob(x).mean()) - entropy
            dw = float((ring.mode_weights(x) - 1 / 8).abs().max())
            print(
                f"| {name} | {k} | {nfe} | {gap:+.3f} | {dw:.3f} | {wall:.2f} | {overhead:.3f} |",
                flush=True,
            )


def mlp_table(steps: list[int], n: int, seed: int) -> None:
    score_fn = mlp_score(2)
    for sde_name, sde in SDES.items():
        per_call = bare_call_time(score_fn, (n, 2), calls=100)
        print(
            f"\n### {sde_name}: MLP score (2 x 128 SiLU), {n} points, ~"
            f"{per_call * 1e3:.2f} ms per score call\n"
        )
        print("| sampler | steps | NFE | wall (s) | overhead |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for name, kw in CONFIGS.items():
            for k in steps:
                _, nfe, wall, overhead = run_row(sde, score_fn, n, {**kw, "num_steps": k}, seed)
                print(f"| {name} | {k} | {nfe} | {wall:.2f} | {overhead:.3f} |", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 2000 points, 10/20 steps")
    parser.add_argument("--points", type=int, default=None, help="batch size (default 10000)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    steps = [10, 20] if args.quick else [10, 20, 50, 100, 999]
    n = args.points or (2000 if args.quick else 10_000)
    print("$ python " + " ".join(shlex.quote(a) for a in sys.argv))
    print(f"\ntorch {torch.__version__}, {args.threads} thread(s)")
    quality_table(steps, n, args.seed)
    mlp_table(steps[-2:], n, args.seed)


if __name__ == "__main__":
    main()
