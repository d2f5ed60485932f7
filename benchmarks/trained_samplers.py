"""Fast solvers on the trained main-job models: 1000-step PC against a few score evaluations.

For each SDE the script trains the default toy job's model (``configs/toy/<sde>.py`` on
8gaussians, the CLI's own config through :func:`scoresde.pipeline.build` and
:func:`scoresde.pipeline.train`), then draws ``--n`` samples from its EMA score with

* ``pc`` at 1000 steps (the reference's step count) and at the job's own 200 steps, with the job's
  settings (Euler-Maruyama predictor, no corrector, its ``eps`` and Tweedie's denoising step);
* DPM-Solver++ of order 3 on the log-SNR grid with noise-level ends (``sigma_max = 20``,
  ``sigma_min = 0.03``; the best at 10 evaluations in ``benchmarks/fast_samplers.py``; no
  ``sigma_max`` for the toy VE, whose prior is at 10) at 10, 20 and 50 score evaluations, without
  denoising;
* the same solver on the log-SNR grid from ``T`` (no ``sigma_max``): the one step from ``T`` to
  ``sigma_max`` above assumes that the data prediction hardly changes up there, true for the exact
  score but not for every trained network;
* the probability-flow ODE solved to ``rtol = atol = 1e-5`` (dopri5) to the same ``sigma_min``:
  what the fast solver converges to, so that its own error is the distance to this row;
* the same solver on the job's own ``eps`` with the denoising step (its NFE counts that step).

Each row gives the samples' cross-entropy under the true density minus its entropy (nats, with its
standard error), the energy distance to as many fresh data points (squared, unbiased: it can be
negative near 0) and the largest error of a mode's weight. The 8-Gaussians model's own error (its
held-out NLL - entropy is about 0.03 nats, ``docs/benchmarks.md``) bounds what any solver can
reach, so the question is at what budget a solver matches 1000 PC steps, not whether it reaches 0.

    python benchmarks/trained_samplers.py [--sdes vp subvp ve] [--n 20000] [--n-iters 10000]
"""

from __future__ import annotations

import argparse
import time

import torch

from scoresde import metrics
from scoresde.config import REPOSITORY_CONFIGS, load_config_file, validate_config
from scoresde.pipeline import build, train
from scoresde.sampling import sample

BUDGETS = (10, 20, 50)
FAST = {"sampler": "dpm_solver", "order": 3, "grid": "log_snr", "sigma_max": 20.0,
        "sigma_min": 0.03, "denoise": False}  # fmt: skip


CONVERGED_ODE = {"sampler": "ode", "rtol": 1e-5, "atol": 1e-5, "sigma_min": 0.03, "denoise": False}


def settings(job: dict, fast: dict) -> list[tuple[str, dict]]:
    """(row label, keyword arguments of :func:`scoresde.sample`) for every row of one SDE."""
    rows = [
        (f"pc, {steps} steps (job's settings)", {**job, "num_steps": steps})
        for steps in (1000, 200)
    ]
    rows += [(f"dpm_solver-3, log_snr*, {nfe} NFE", {**fast, "num_steps": nfe}) for nfe in BUDGETS]
    if "sigma_max" in fast:
        from_T = {k: v for k, v in fast.items() if k != "sigma_max"}
        rows += [
            (f"dpm_solver-3, log_snr from T to sigma_min, {nfe} NFE", {**from_T, "num_steps": nfe})
            for nfe in BUDGETS
        ]
    rows.append(("ode, dopri5 (rtol = atol = 1e-5) to sigma_min = 0.03", CONVERGED_ODE))
    fast_on_job_grid = {**fast, "eps": job["eps"], "denoise": True}
    del fast_on_job_grid["sigma_min"]
    rows += [
        (f"dpm_solver-3, log_snr to the job's eps + denoise, {nfe} NFE",
         {**fast_on_job_grid, "num_steps": nfe - 1})
        for nfe in BUDGETS
    ]  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sdes", nargs="+", default=["vp", "subvp", "ve"])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--n-iters", type=int, default=None, help="default: the job's")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    for name in args.sdes:
        config = load_config_file(REPOSITORY_CONFIGS / "toy" / f"{name}.py")
        if args.n_iters is not None:
            config.training.n_iters = args.n_iters
        validate_config(config)
        parts = build(config)
        trained = train(parts)
        score_fn = parts.score_fn(trained.ema_model)
        dataset = parts.dataset
        entropy, _ = dataset.entropy()
        data = dataset.sample(args.n, torch.Generator().manual_seed(1))
        job = {k: v for k, v in parts.sampling.items() if k != "num_steps"}
        fast = dict(FAST)
        s_T = float(torch.exp(-parts.sde.log_snr(torch.tensor([parts.sde.T])) / 2))
        if s_T <= fast["sigma_max"]:  # the toy VE's sigma_max = 10: no step above 20 to skip
            del fast["sigma_max"]
        print(f"\n### {name}: 8gaussians, {config.training.n_iters} updates, {args.n} samples\n")
        print("| sampler | NFE | CE − H (nats) | energy distance | max mode error |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for label, kwargs in settings(job, fast):
            generator = torch.Generator().manual_seed(0)
            result = sample(parts.sde, score_fn, (args.n, 2), generator=generator,
                            return_info=True, **kwargs)  # fmt: skip
            x = result.samples.to(torch.float64)
            ce, se = metrics.mean_and_stderr(-dataset.log_prob(x))
            mode = float((dataset.mixture.mode_weights(x) - dataset.mixture.weights).abs().max())
            ed = metrics.energy_distance(result.samples, data)
            cells = [label, str(result.nfe), f"{ce - entropy:+.3f} ± {se:.3f}", f"{ed:.4f}"]
            print("| " + " | ".join([*cells, f"{mode:.3f}"]) + " |")
    print(f"\n(wall time {time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
