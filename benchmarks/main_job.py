"""The main job, timed against a bare-PyTorch loop: ``python -m scoresde.run`` per SDE and dataset.

Each run is the default job (train, sample, evaluate) started as its own process, as a user would
start it, so its wall time includes start-up. Beside each run, in this process, the script times a
**bare loop**: 2000 Adam steps of a 3 x 256 SiLU MLP on batches of 512 points, plain PyTorch, once
with torch's default threads and once with one thread, before and after the run; the faster mean of
the two is the reference, so the ratio never flatters the job. The tables (Markdown):

* quality: held-out NLL - entropy (nats, with its standard error), the samples' cross-entropy under
  the true density minus the entropy, the largest error of a mode's weight (8gaussians) or the
  fraction of samples inside the squares (checkerboard), the score evaluations, and the targets;
* time: the job's wall time, the bare loop's, their ratio, and where the job's time goes
  (start-up and build, training, sampling, held-out likelihood, density grid, the rest: sample
  metrics, figures and files), each as a multiple of the bare loop.

Targets of the default job (issue 8)::

    wall time <= 8 bare loops, and
    8gaussians:   NLL - entropy <= 0.05, cross-entropy - entropy within 0.10, modes within 0.03
    checkerboard: NLL - entropy <= 0.15, >= 95% of samples inside the squares

    python benchmarks/main_job.py --sdes vp --datasets 8gaussians      # the main job, ~1 minute
    python benchmarks/main_job.py                                      # 6 jobs
    python benchmarks/main_job.py --sdes vp --config.training.n_iters=2000

Arguments after the script's own are passed to every run (e.g. config overrides).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

MAX_RATIO = 8.0
TARGETS = {
    "8gaussians": {"nll_minus_entropy": 0.05, "cross_entropy_minus_entropy": 0.10, "mode": 0.03},
    "checkerboard": {"nll_minus_entropy": 0.15, "fraction_in_support": 0.95},
}


def bare_loop(steps: int = 2000, threads: int | None = None) -> float:
    """Seconds for ``steps`` Adam updates of a 3 x 256 MLP ``(x, t) -> x`` at batch 512."""
    default = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        net = nn.Sequential(
            nn.Linear(3, 256), nn.SiLU(),
            nn.Linear(256, 256), nn.SiLU(),
            nn.Linear(256, 256), nn.SiLU(),
            nn.Linear(256, 2),
        )  # fmt: skip
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        began = time.perf_counter()
        for _ in range(steps):
            x = torch.randn(512, 2, generator=generator)
            t = torch.rand(512, 1, generator=generator)
            loss = (net(torch.cat([x, t], dim=1)) - x).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return time.perf_counter() - began
    finally:
        torch.set_num_threads(default)


def run_job(
    sde: str, dataset: str, workdir: Path, extra: list[str]
) -> tuple[float, dict[str, Any]]:
    """Run the default job in a fresh process; its wall time and its metrics.json."""
    command = [sys.executable, "-m", "scoresde.run", "--sde", sde, "--dataset", dataset]
    command += ["--workdir", str(workdir), "--overwrite", *extra]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return wall, json.loads((workdir / "metrics.json").read_text())


def meets_quality(dataset: str, m: dict[str, Any]) -> bool:
    target = TARGETS.get(dataset)
    if target is None:
        return True
    samples = m["samples"]
    ok = m["likelihood"]["nll_minus_entropy"] <= target["nll_minus_entropy"]
    if "mode" in target:
        ce = samples["cross_entropy_minus_entropy"]
        ok = ok and ce is not None and abs(ce) <= target["cross_entropy_minus_entropy"]
        ok = ok and samples["max_mode_weight_error"] <= target["mode"]
    if "fraction_in_support" in target:
        ok = ok and samples["fraction_in_support"] >= target["fraction_in_support"]
    return ok


def quality_row(sde: str, dataset: str, m: dict[str, Any]) -> str:
    lk, s = m["likelihood"], m["samples"]
    ce = s.get("cross_entropy_minus_entropy")
    if "max_mode_weight_error" in s:
        shape = f"max mode error {s['max_mode_weight_error']:.3f}"
    else:
        shape = f"inside {s['fraction_in_support']:.3f}"
    cells = [
        dataset,
        sde,
        m["sampling"]["sampler"],
        f"{lk['nll_minus_entropy']:.3f} ± {lk['nll_minus_entropy_stderr']:.3f}",
        "inf" if ce is None else f"{ce:.3f}",
        shape,
        f"{s['energy_distance']:.4f}",
        str(m["sampling"]["nfe"]),
        str(lk["nfe"]),
        "yes" if meets_quality(dataset, m) else "no",
    ]
    return "| " + " | ".join(cells) + " |"


def time_row(sde: str, dataset: str, wall: float, bare: float, m: dict[str, Any]) -> str:
    stages = {
        "start-up": wall - m["run"]["wall_time_s"],
        "training": m["training"]["wall_time_s"],
        "sampling": m["sampling"]["wall_time_s"],
        "likelihood": m["likelihood"]["wall_time_s"],
        "density grid": m["density_grid"]["wall_time_s"],
    }
    stages["rest"] = wall - sum(stages.values())
    cells = [dataset, sde, f"{wall:.1f}", f"{bare:.2f}", f"**{wall / bare:.2f}**"]
    cells += [f"{v / bare:.2f}" for v in stages.values()]
    cells.append("yes" if wall / bare <= MAX_RATIO else "no")
    return "| " + " | ".join(cells) + " |"


QUALITY_HEADER = (
    "| dataset | SDE | sampler | NLL − entropy | sample CE − entropy | modes / support "
    "| energy dist. | NFE sample | NFE likelihood | quality met |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)
TIME_HEADER = (
    "| dataset | SDE | job (s) | bare loop (s) | ratio | start-up | training | sampling "
    "| likelihood | density grid | rest | ≤ 8 |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdes", nargs="+", default=["vp", "subvp", "ve"])
    parser.add_argument("--datasets", nargs="+", default=["8gaussians", "checkerboard"])
    parser.add_argument("--root", help="where the run directories go (default: a temporary one)")
    args, extra = parser.parse_known_args()
    root = Path(args.root or tempfile.mkdtemp(prefix="scoresde-main-job-"))
    quality, timing = [], []
    for dataset in args.datasets:
        for sde in args.sdes:
            before = {n: bare_loop(threads=n) for n in (None, 1)}
            wall, metrics = run_job(sde, dataset, root / f"{dataset}-{sde}", extra)
            after = {n: bare_loop(threads=n) for n in (None, 1)}
            means = {n: (before[n] + after[n]) / 2 for n in before}
            print(
                f"{dataset} {sde}: job {wall:.1f} s; bare loop {means[None]:.2f} s with "
                f"{torch.get_num_threads()} threads, {means[1]:.2f} s with 1",
                flush=True,
            )
            quality.append(quality_row(sde, dataset, metrics))
            timing.append(time_row(sde, dataset, wall, min(means.values()), metrics))
    print("\n" + QUALITY_HEADER, *quality, sep="\n")
    print("\nTimes as multiples of the bare loop:\n\n" + TIME_HEADER, *timing, sep="\n")
    print(f"\nrun directories in {root}")


if __name__ == "__main__":
    main()
