"""Benchmark of conditional sampling against the Gaussian-mixture oracle's exact conditionals.

Two tables (issue 12, section 5), every number against closed-form truth:

1. **Classifier guidance at scale 1** with the oracle's exact noisy classifier
   (``classifier_guidance(oracle.score_fn(sde), oracle.classifier_fn(sde), label)``) must sample
   the class-conditional mixture ``p(x | y)``: the cross-entropy gap
   ``mean(-log p(x | y)) - H(p(x | y))`` (entropy by Monte Carlo, 400,000 exact draws) should be
   within 0.03 nats of 0.
2. **Inpainting** the 8-Gaussian ring observed in its first coordinate: the exact answer is the 1-D
   mixture ``oracle.condition``; the gap (entropy by quadrature) of the SMC inpainter for
   K = 1 ... 256 particles per observation at a fixed total number of particles (so every row
   costs the same), and of replacement with several samplers beside it. SMC's gap is estimated
   from each observation's weighted particles (what one draw per observation would give, in
   expectation, with less variance); its standard error is over observations.

Columns: ``gap`` +- its standard error; ``max |dw|``: the largest error of a conditional mode's
weight; ``resampled``: SMC's resampling steps per observation (of 100); wall time and overhead =
wall time / time of the same number of bare score calls on the same batch, timed in the same run
(the calls counted; an SMC call is on all B K particles at once).

Usage::

    python benchmarks/guidance.py            # the tables in docs/benchmarks.md (minutes, 1 core)
    python benchmarks/guidance.py --quick    # a smoke run: fewer particles and samples
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time

import torch

from scoresde import VPSDE, GaussianMixture, inpaint, inpaint_particles, sample
from scoresde.guidance import classifier_guidance
from scoresde.score_calls import CountedScore
from scoresde.sde import ScoreFn, unchecked_times

F64 = torch.float64
STEPS = 100
REPLACEMENT = {
    "em": {"sampler": "em"},
    "pc rd+langevin": {"sampler": "pc"},
    "ddim eta=1": {"sampler": "ddim", "eta": 1.0},
    "heun": {"sampler": "heun"},
}


def overlapping_classes() -> GaussianMixture:
    """docs/guidance.md's example: four overlapping Gaussians on a unit circle (std 0.6),
    alternating between two classes; class 1 has prior 0.4."""
    angles = torch.arange(4, dtype=F64) * math.pi / 2
    means = torch.stack([angles.cos(), angles.sin()], 1)
    return GaussianMixture([0.3, 0.2, 0.3, 0.2], means, 0.6**2, labels=[0, 1, 0, 1])


def ring_classes() -> GaussianMixture:
    """The 8-Gaussian ring (radius 4, std 0.5) with alternating classes."""
    ring = GaussianMixture.ring()
    return GaussianMixture(ring.weights, ring.means, 0.25, labels=[0, 1] * 4)


def bare_call_time(score_fn: ScoreFn, n: int, calls: int) -> float:
    """Seconds per score call on ``n`` 2-D float64 points, averaged over ``calls`` calls."""
    x = 3 * torch.randn(n, 2, dtype=F64)
    t = torch.full((n,), 0.5, dtype=F64)
    with torch.no_grad(), unchecked_times():
        score_fn(x, t)
        start = time.perf_counter()
        for _ in range(calls):
            score_fn(x, t)
    return (time.perf_counter() - start) / calls


def guidance_table(n: int) -> None:
    print("| mixture | sampler | samples | NFE | gap (nats) | wall (s) | overhead |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    sde = VPSDE()
    for name, oracle in (("4 overlapping", overlapping_classes()), ("ring", ring_classes())):
        target = oracle.given_label(1)
        entropy, entropy_se = target.entropy(400_000, torch.Generator().manual_seed(1))
        guided = classifier_guidance(oracle.score_fn(sde), oracle.classifier_fn(sde), 1)
        for sampler, options in (("ode dopri5", {"sampler": "ode"}), ("em", {"sampler": "em"})):
            start = time.perf_counter()
            result = sample(
                sde,
                guided,
                (n, 2),
                dtype=F64,
                generator=torch.Generator().manual_seed(0),
                return_info=True,
                **options,
            )
            wall = time.perf_counter() - start
            nll = -target.log_prob(result.samples)
            se = math.hypot(float(nll.std()) / math.sqrt(n), entropy_se)
            bare = result.nfe * bare_call_time(guided, n, min(result.nfe, 20))
            gap = float(nll.mean()) - entropy
            print(
                f"| {name} | {sampler} | {n} | {result.nfe} | {gap:+.3f} +- {se:.3f} | "
                f"{wall:.1f} | {wall / bare:.2f} |",
                flush=True,
            )


def conditional_entropy(cond: GaussianMixture) -> float:
    """``H`` of a 1-D mixture by the trapezoid rule on [-12, 12] (error < 1e-8)."""
    y = torch.linspace(-12, 12, 100_001, dtype=F64)[:, None]
    log_p = cond.log_prob(y)
    return float(-(log_p.exp() * log_p).sum() * (y[1, 0] - y[0, 0]))


def inpainting_table(total: int, x_observed: float) -> None:
    ring, sde = GaussianMixture.ring(), VPSDE()
    score = CountedScore(ring.score_fn(sde))
    observed = torch.tensor([x_observed, float("nan")], dtype=F64)
    mask = torch.tensor([True, False])
    cond = ring.condition(observed, mask)
    entropy = conditional_entropy(cond)
    kept = cond.weights > 1e-3
    pairs = zip(cond.means[kept, 0].tolist(), cond.weights[kept].tolist(), strict=True)
    modes = ", ".join(f"{m:+.2f} ({w:.3f})" for m, w in pairs)
    print(f"\n### Observed x = {x_observed}: conditional modes at y = {modes}\n")
    print(
        "| method | K | observations | particles | gap (nats) | max \\|dw\\| | resampled "
        "| wall (s) | overhead |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")

    def row(method, K, B, y, weights, resampled, wall):
        nll = -cond.log_prob(y.reshape(-1, 1)).reshape(weights.shape)
        per_observation = (weights * nll).sum(1)
        gap = float(per_observation.mean()) - entropy
        se = float(per_observation.std()) / math.sqrt(len(per_observation))
        r = cond.responsibilities(y.reshape(-1, 1)).reshape(*weights.shape, -1)
        shares = (weights[..., None] * r).sum(1).mean(0)
        dw = float((shares - cond.weights).abs().max())
        bare = score.calls * bare_call_time(ring.score_fn(sde), y.numel(), 5)
        print(
            f"| {method} | {K} | {B} | {y.numel()} | {gap:+.3f} +- {se:.3f} | {dw:.3f} | "
            f"{resampled} | {wall:.1f} | {wall / bare:.2f} |",
            flush=True,
        )

    for K in (1, 4, 16, 64, 256):
        B = total // K
        score.calls = 0
        start = time.perf_counter()
        cloud = inpaint_particles(
            sde,
            score,
            observed.expand(B, 2),
            mask,
            particles=K,
            generator=torch.Generator().manual_seed(7),
            num_steps=STEPS,
        )
        wall = time.perf_counter() - start
        resampled = f"{float(cloud.resampled.double().mean()):.1f}"
        row("smc", K, B, cloud.x[..., 1], cloud.log_weights.exp(), resampled, wall)
    n = total // 4
    for name, options in REPLACEMENT.items():
        score.calls = 0
        start = time.perf_counter()
        x = inpaint(
            sde,
            score,
            observed.expand(n, 2),
            mask,
            generator=torch.Generator().manual_seed(2),
            num_steps=STEPS,
            **options,
        )
        wall = time.perf_counter() - start
        ones = torch.ones(n, 1, dtype=F64)
        row(f"replacement {name}", "-", n, x[:, 1:], ones, "-", wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"`python {' '.join(shlex.quote(a) for a in ['benchmarks/guidance.py', *sys.argv[1:]])}`")
    print("\n## Classifier guidance at scale 1 (exact classifier), class 1, VP\n")
    guidance_table(2_000 if args.quick else 20_000)
    print("\n## Inpainting the ring observed in x, VP, 100 steps")
    for x_observed in (2.0, 1.5):
        inpainting_table(4_096 if args.quick else 131_072, x_observed)


if __name__ == "__main__":
    main()
