"""The toy job over 1 and 2 processes (torchrun, gloo) and in fp32 and bf16: speed and quality.

Each row is one ``python -m scoresde.run`` job (train, sample, evaluate), started as a user would:
alone for 1 process, under ``python -m torch.distributed.run --standalone --nproc-per-node=2`` for
2. The same global batch (512) and number of updates in every row, so every row's model sees as
many samples. From each job's ``metrics.json``:

* training: updates/s and training samples/s (global batch x updates/s), from the loop's own wall
  time (start-up excluded), and the loop's time as a multiple of the **bare loop** (2000 Adam
  steps of a 3 x 256 MLP at batch 512, plain PyTorch, one thread, timed in this process before and
  after the jobs: ``benchmarks/main_job.py``);
* sampling: samples/s of the sampler (``sampling.n_samples`` over its wall time) and of the
  held-out likelihood (``eval.n_eval`` points over its wall time);
* quality: held-out NLL - entropy (nats) and the samples' energy distance to fresh data.

Then, in this process, fp32 and bf16 updates of the default networks are timed interleaved (the
toy MLP: 5 rounds of 100 updates; the digits U-Net at its batch of 128: 3 rounds of 10; the best
round of each), which is fairer than separate jobs on a busy machine.

    python benchmarks/distributed.py                     # 8gaussians, 2000 updates, ~4 minutes
    python benchmarks/distributed.py --n-iters 500 --processes 1 2 --precisions fp32
    python benchmarks/distributed.py --only-update-times   # fp32 against bf16 per update

On a machine with few cores the processes share them: with 2 cores and 2 ranks each rank has
one, and nothing else may run. What such a machine can show is that the run is correct and what
the communication costs, not a speed-up (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from main_job import bare_loop

from scoresde import pipeline, training
from scoresde.config import REPOSITORY_CONFIGS, load_config_file

ROOT = Path(__file__).resolve().parents[1]
BATCH = 512


def run_job(processes: int, precision: str, n_iters: int, dataset: str, workdir: Path) -> dict:
    """One job; its ``metrics.json`` and wall time."""
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    command = [
        *launcher, "-m", "scoresde.run", f"--workdir={workdir}", f"--dataset={dataset}",
        f"--config.training.n_iters={n_iters}", f"--config.training.precision={precision}",
        f"--config.training.batch_size={BATCH}", f"--config.training.checkpoint_every={n_iters}",
    ]  # fmt: skip
    began = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True)
    metrics = json.loads((workdir / "metrics.json").read_text())
    metrics["job_wall_s"] = time.perf_counter() - began
    return metrics


def update_times(family: str, rounds: int = 5, updates: int = 100) -> dict[str, float]:
    """Seconds per update of the default network of ``configs/<family>/vp.py`` (its own batch
    size) in each precision, best of ``rounds``."""
    torch.set_num_threads(1)
    parts = pipeline.build(load_config_file(REPOSITORY_CONFIGS / family / "vp.py"))
    batches = parts.dataset.batches(parts.config.training.batch_size)
    state = training.TrainState.fresh(parts.model, lr=1e-3, seed=0)
    best = dict.fromkeys(training.PRECISIONS, float("inf"))
    for _ in range(rounds):
        for precision in best:
            began = time.perf_counter()
            for _ in range(updates):
                batch = batches(state.generator)
                training.train_step(
                    state, parts.loss_fn, batch, lr=1e-3, grad_clip=1.0, precision=precision
                )
            best[precision] = min(best[precision], (time.perf_counter() - began) / updates)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-iters", type=int, default=2000)
    p.add_argument("--dataset", default="8gaussians")
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--only-update-times", action="store_true", help="skip the jobs")
    args = p.parse_args()
    if not args.only_update_times:
        jobs(args)
    for family, rounds, updates in (("toy", 5, 100), ("digits", 3, 10)):
        times = update_times(family, rounds, updates)
        print(
            f"\nOne update of the default {family} network, interleaved, best of {rounds} x "
            f"{updates}: fp32 {times['fp32'] * 1e3:.1f} ms, bf16 {times['bf16'] * 1e3:.1f} ms "
            f"(bf16 / fp32 = {times['bf16'] / times['fp32']:.2f})."
        )


def jobs(args: argparse.Namespace) -> None:
    """The jobs' table."""
    bare = [bare_loop(threads=1)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for precision in args.precisions:
            for n in args.processes:
                workdir = Path(tmp) / f"{precision}-{n}"
                rows.append(
                    (n, precision, run_job(n, precision, args.n_iters, args.dataset, workdir))
                )
    bare.append(bare_loop(threads=1))
    reference = min(bare)

    print(f"### {args.dataset}, VP, {args.n_iters} updates of global batch {BATCH}\n")
    print(
        f"Bare loop (2000 steps, 1 thread): {reference:.1f} s "
        f"(runs: {bare[0]:.1f}, {bare[1]:.1f}).\n"
    )
    print(
        "| processes | precision | updates/s | train samples/s | training (bare loops) "
        "| sampler samples/s | likelihood points/s | job (s) | NLL - entropy (nats) "
        "| energy distance |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n, precision, m in rows:
        t, s, lk = m["training"], m["sampling"], m["likelihood"]
        rate = t["steps"] / t["wall_time_s"]
        gap = f"{lk['nll_minus_entropy']:.3f} +- {lk['nll_minus_entropy_stderr']:.3f}"
        print(
            f"| {n} | {precision} | {rate:.0f} | {rate * BATCH:,.0f} "
            f"| {t['wall_time_s'] / reference * 2000 / args.n_iters:.2f} "
            f"| {s['n_samples'] / s['wall_time_s']:,.0f} | {lk['n_eval'] / lk['wall_time_s']:,.0f} "
            f"| {m['job_wall_s']:.1f} | {gap} | {m['samples']['energy_distance']:.4f} |"
        )
    print("\n(training in bare loops: the loop's time per 2000 updates over the bare loop's.)")


if __name__ == "__main__":
    main()
