"""The default digits job, timed against the bare loop: ``python -m scoresde.run --dataset digits``.

The job is the command a user runs (``configs/digits/<sde>.py`` through the pipeline), started as
its own process by :func:`main_job.run_job`; the bare loop (2000 Adam steps of a 3 x 256 MLP at
batch 512, :func:`main_job.bare_loop`) is timed before and after it in this process, with one
thread and with torch's default threads (one per core, as the digits job runs:
``configs/default_digits.py``); the faster of the two means is the unit, as for the toy job
(``benchmarks/main_job.py``), so the ratio never flatters the job. Prints a Markdown table of the
targets of issue 11::

    test bits/dim <= 2.2 (17 bins), FD <= 2 x the train-test floor, every class within
    10% +- 3% of the samples, near-copies < 1%, wall time <= 50 bare loops

and a second table with where the time went (training, sampling, bits/dim, the agreement check,
sample quality; each in bare loops).

    python benchmarks/images.py                      # the default job (VP, pc), 5 minutes
    python benchmarks/images.py --sde ve --sampler ode --config.training.n_iters=2000
    python benchmarks/images.py --dataset fashion_mnist --config.training.n_iters=1500 ...

Arguments after the script's own are passed to the run (e.g. config overrides).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch
from main_job import bare_loop, run_job

MAX_BARE_LOOPS = 50.0
TARGETS = {"bpd": 2.2, "fd_over_floor": 2.0, "class_error": 0.03, "near_copies": 0.01}


def rows(metrics: dict[str, Any], wall: float, bare: float) -> tuple[list[str], list[str]]:
    """The target table's rows and the time table's row (a dataset without an evaluation
    classifier, e.g. Fashion-MNIST, has no FD and class rows; no exact check without one)."""
    lk, q, b = metrics["likelihood"], metrics["samples"], metrics["baselines"]
    ratio = wall / bare

    def mark(ok: bool) -> str:
        return "met" if ok else "**missed**"

    check = lk.get("check", {})
    target = [
        f"| test bits/dim ({lk['method']}, {lk['n_eval']} images) | <= {TARGETS['bpd']} | "
        f"{lk['bpd']:.3f} +- {lk['bpd_stderr']:.3f} | {mark(lk['bpd'] <= TARGETS['bpd'])} |",
    ]
    if check.get("n"):
        target.append(
            f"| exact-trace check ({check['n']} images): Hutchinson - exact | ~0 | "
            f"{check['hutchinson_minus_exact']:+.3f} +- "
            f"{check['hutchinson_minus_exact_stderr']:.3f} | |"
        )
    target.append(
        f"| baselines: uniform / per-pixel categorical / Gaussian | - | {b['uniform']:.3f} / "
        f"{b['categorical']:.3f} / {b['gaussian']:.3f} | |"
    )
    if "fd" in q:
        shares = q["class_fractions"]
        target += [
            f"| FD (floor: {q['n']} training images vs test) | <= 2 x {q['fd_floor']:.1f} | "
            f"{q['fd']:.1f} ({q['fd'] / q['fd_floor']:.2f} x) | "
            f"{mark(q['fd'] <= TARGETS['fd_over_floor'] * q['fd_floor'])} |",
            f"| class shares (min / max) | 0.07-0.13 | {min(shares):.3f} / {max(shares):.3f} | "
            f"{mark(q['max_class_error'] <= TARGETS['class_error'])} |",
        ]
    target += [
        f"| precision / recall (pixel space, k = 3) | - | {q['precision']:.3f} / "
        f"{q['recall']:.3f} | |",
        f"| near-copies | < 1% | {100 * q['near_copy_fraction']:.2f}% | "
        f"{mark(q['near_copy_fraction'] < TARGETS['near_copies'])} |",
        f"| wall time | <= {MAX_BARE_LOOPS:.0f} bare loops | {ratio:.1f} bare loops "
        f"({wall:.0f} s / {bare:.1f} s) | {mark(ratio <= MAX_BARE_LOOPS)} |",
    ]
    stages = [
        metrics["training"]["wall_time_s"],
        metrics["sampling"]["wall_time_s"],
        lk["wall_time_s"],
        check.get("wall_time_exact_s", 0.0),
        q["wall_time_s"],
    ]
    rest = wall - sum(stages)
    timing = [
        f"| {ratio:.1f} | "
        + " | ".join(f"{s / bare:.1f}" for s in (*stages, rest))
        + f" | {metrics['training']['steps']} | {metrics['sampling']['nfe']} | {lk['nfe']} |"
    ]
    return target, timing


def seconds_by_threads(times: dict[int, float]) -> str:
    """``{threads: seconds}`` as ``"8.6 s on 1 thread(s), 5.6 s on 2 thread(s)"``."""
    return ", ".join(f"{t:.1f} s on {n} thread(s)" for n, t in times.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sde", default="vp")
    parser.add_argument("--sampler", default="pc")
    parser.add_argument("--dataset", default="digits", help="digits, fashion_mnist, mnist, npz")
    parser.add_argument("--workdir", help="the run directory (default: a temporary one)")
    args, extra = parser.parse_known_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="scoresde-images-")) / args.dataset
    threads = torch.get_num_threads()  # torch's default, the digits job's
    torch.set_num_threads(1)
    before = {n: bare_loop(threads=n) for n in (1, threads)}
    print(f"bare loop before: {seconds_by_threads(before)}", flush=True)
    wall, metrics = run_job(args.sde, args.dataset, workdir, ["--sampler", args.sampler, *extra])
    after = {n: bare_loop(threads=n) for n in (1, threads)}
    means = {n: (before[n] + after[n]) / 2 for n in before}
    bare = min(means.values())
    print(
        f"job {wall:.0f} s; bare loop before: {seconds_by_threads(before)}, after: "
        f"{seconds_by_threads(after)}; the job is "
        + ", ".join(f"{wall / m:.1f} bare loops of {n} thread(s)" for n, m in means.items()),
        flush=True,
    )
    target, timing = rows(metrics, wall, bare)
    print(f"\n{args.dataset}, {args.sde} SDE, {args.sampler} sampler\n")
    print("| measure | target | reached | |\n| --- | --- | --- | --- |", *target, sep="\n")
    print("\nTimes as multiples of the bare loop:\n")
    print(
        "| job | training | sampling | bits/dim | exact check | sample quality | rest "
        "| updates | sampling NFE | bits/dim NFE |\n"
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *timing,
        sep="\n",
    )
    print(f"\nrun directory {workdir}")


if __name__ == "__main__":
    main()
