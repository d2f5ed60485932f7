"""The main job, timed: ``python -m scoresde.run`` on 8gaussians and checkerboard for each SDE.

Each run is the default job (train, sample, evaluate) started as its own process, as a user would
start it, so its wall time includes start-up. The table (Markdown) has, per run: wall time, held-out
NLL - entropy (nats, with its standard error), the samples' cross-entropy under the true density
minus the entropy, the largest error of a mode's weight (8gaussians) or the fraction of samples
inside the squares (checkerboard), the energy distance of the samples to fresh data, and the
score evaluations of sampling and likelihood. The last column checks the targets of the default
job::

    wall time <= 180 s on 2 CPU cores, and
    8gaussians:   NLL - entropy <= 0.05, cross-entropy - entropy <= 0.10, mode weights within 0.03
    checkerboard: NLL - entropy <= 0.15, >= 95% of samples inside the squares

    python benchmarks/main_job.py                          # 6 runs of about 3 minutes each
    python benchmarks/main_job.py --sdes vp --datasets 8gaussians --config.training.n_iters=2000

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

TARGETS = {
    "wall_time_s": 180.0,
    "8gaussians": {"nll_minus_entropy": 0.05, "cross_entropy_minus_entropy": 0.10, "mode": 0.03},
    "checkerboard": {"nll_minus_entropy": 0.15, "fraction_in_support": 0.95},
}


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


def meets_targets(dataset: str, wall: float, m: dict[str, Any]) -> bool:
    gap = m["likelihood"]["nll_minus_entropy"]
    samples = m["samples"]
    ok = wall <= TARGETS["wall_time_s"]
    target = TARGETS.get(dataset)
    if target is None:
        return ok
    ok = ok and gap <= target["nll_minus_entropy"]
    if "mode" in target:
        ce = samples["cross_entropy_minus_entropy"]
        ok = ok and ce is not None and ce <= target["cross_entropy_minus_entropy"]
        ok = ok and samples["max_mode_weight_error"] <= target["mode"]
    if "fraction_in_support" in target:
        ok = ok and samples["fraction_in_support"] >= target["fraction_in_support"]
    return ok


def row(sde: str, dataset: str, wall: float, m: dict[str, Any]) -> str:
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
        f"{wall:.0f}",
        f"{lk['nll_minus_entropy']:.3f} ± {lk['nll_minus_entropy_stderr']:.3f}",
        "inf" if ce is None else f"{ce:.3f}",
        shape,
        f"{s['energy_distance']:.4f}",
        str(m["sampling"]["nfe"]),
        str(lk["nfe"]),
        "yes" if meets_targets(dataset, wall, m) else "no",
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| dataset | SDE | sampler | wall (s) | NLL − entropy | sample CE − entropy | modes / support "
    "| energy dist. | NFE sample | NFE likelihood | targets met |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdes", nargs="+", default=["vp", "subvp", "ve"])
    parser.add_argument("--datasets", nargs="+", default=["8gaussians", "checkerboard"])
    parser.add_argument("--root", help="where the run directories go (default: a temporary one)")
    args, extra = parser.parse_known_args()
    root = Path(args.root or tempfile.mkdtemp(prefix="scoresde-main-job-"))
    print(HEADER, flush=True)
    for dataset in args.datasets:
        for sde in args.sdes:
            wall, metrics = run_job(sde, dataset, root / f"{dataset}-{sde}", extra)
            print(row(sde, dataset, wall, metrics), flush=True)
    print(f"\nrun directories in {root}")


if __name__ == "__main__":
    main()
