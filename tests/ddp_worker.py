"""One rank of the 2-process tests of tests/test_distributed.py, run by ``torchrun``.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/ddp_worker.py MODE OUT

``checks``: the gradient, the seeds, a short training run into ``OUT/train`` and a CLI run into
``OUT/cli``; each rank writes what it saw to ``OUT/rank<r>.json``, with every write it made under
``OUT/train`` and ``OUT/cli`` (recorded by an audit hook). ``kill``: rank 1 kills
itself with SIGKILL during update :data:`KILL_AT` of a CLI run checkpointing every 3 updates.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn

from scoresde import distributed, training
from scoresde.datasets import EpochBatches, Shard, get_dataset

SEED = 7
GLOBAL_BATCH = 32
N_ITERS = 6
KILL_AT = 7
TRAIN = {
    "n_iters": N_ITERS,
    "lr": 1e-2,
    "seed": SEED,
    "ema_decay": 0.5,
    "checkpoint_every": N_ITERS,
    "progress": False,
}


def net() -> nn.Module:
    """The same small network on every rank (its own seeded generator)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2)).double()


def data() -> torch.Tensor:
    """128 points, 4 batches of 32 per epoch."""
    return torch.randn(128, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def regression_loss(model: nn.Module, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A loss without noise, so that runs over any number of processes see the same numbers."""
    target = torch.stack([x[:, 1].sin(), x[:, 0] * x[:, 1]], dim=1)
    return ((model(x) - target) ** 2).mean()


def sharded_batches(shard: Shard | None) -> EpochBatches:
    return EpochBatches(data(), GLOBAL_BATCH, shard=shard)


def flat(module: nn.Module) -> list[float]:
    return torch.cat([p.detach().flatten() for p in module.parameters()]).tolist()


def watch_writes(directories: list[Path], seen: list[str]) -> None:
    """Record every file-system change under ``directories`` (open for writing, rename, remove,
    mkdir) in ``seen``."""
    roots = [str(d.resolve()) for d in directories]
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND
    changes = {"os.rename", "os.replace", "os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree"}

    def under(path: object) -> bool:
        if not isinstance(path, (str, bytes, os.PathLike)):
            return False
        return os.path.abspath(os.fsdecode(path)).startswith(tuple(roots))

    def hook(event: str, args: tuple) -> None:
        if event == "open" and under(args[0]):
            mode, flags = args[1], args[2]
            if (mode and any(c in mode for c in "wax+")) or (flags or 0) & writing:
                seen.append(f"open {args[0]} {mode}")
        elif event in changes and args and under(args[0]):
            seen.append(f"{event} {args[0]}")

    sys.addaudithook(hook)


def checks(out: Path) -> None:
    rank = distributed.rank()
    report: dict[str, object] = {"rank": rank, "world": distributed.world_size()}
    writes: list[str] = []
    watch_writes([out / "train", out / "cli"], writes)
    report["gathered"] = distributed.gather(torch.arange(5)[distributed.shard(5)]).tolist()

    # the DDP gradient on this rank's share against the gradient of the whole batch
    x = data()[:GLOBAL_BATCH]
    model = net()
    ddp = distributed.wrap(model)
    shard = Shard(rank, distributed.world_size(), SEED)
    regression_loss(ddp, x[shard.rows(GLOBAL_BATCH)], None).backward()
    single = net()
    regression_loss(single, x, None).backward()
    report["grad_error"] = max(
        float((p.grad - q.grad).abs().max())
        for p, q in zip(model.parameters(), single.parameters(), strict=True)
    )
    report["grad_scale"] = max(float(q.grad.abs().max()) for q in single.parameters())

    # seeds and streams
    state = training.TrainState.fresh(net(), lr=1e-3, seed=SEED)
    report["generator_seed"] = state.generator.initial_seed()
    toy = get_dataset("8gaussians").batches(GLOBAL_BATCH, shard=shard)
    report["toy_batch"] = toy(torch.Generator().manual_seed(training_seed())).tolist()
    batches = sharded_batches(shard)
    report["rows"] = [batches.indices(SEED, k)[shard.rows(GLOBAL_BATCH)].tolist() for k in range(4)]

    # a short run: the replicas, their EMA, the files
    result = training.train(
        net(), regression_loss, sharded_batches(shard), workdir=out / "train", **TRAIN
    )
    report["params"] = flat(result.model)
    report["ema"] = flat(result.ema_model)
    report["losses"] = result.losses

    # the command line, 2 processes, recording the points of every likelihood this rank solves
    from scoresde import pipeline
    from scoresde.run import main

    solve, report["likelihood_rows"] = pipeline.log_likelihood, []

    def counted(sde: object, score_fn: object, x: torch.Tensor, **options: object) -> object:
        report["likelihood_rows"].append(x.shape[0])
        return solve(sde, score_fn, x, **options)

    pipeline.log_likelihood = counted
    report["cli_status"] = main([f"--workdir={out / 'cli'}", *CLI])
    report["writes"] = writes
    (out / f"rank{rank}.json").write_text(json.dumps(report))


def training_seed() -> int:
    return distributed.rank_seed(SEED)


#: A tiny run of the command line: 2 x 12 updates of a 16-wide network, 40 samples.
CLI = [
    "--mode=all",
    "--config.training.n_iters=12",
    "--config.training.batch_size=32",
    "--config.training.checkpoint_every=6",
    "--config.model.hidden=16",
    "--config.model.depth=1",
    "--config.sampling.sampler=em",
    "--config.sampling.n_samples=40",
    "--config.sampling.num_steps=10",
    "--config.eval.n_eval=20",
    "--config.eval.density_grid=4",
    "--config.eval.method=euler",
    "--config.eval.n_process_times=2",
    "--config.sde.N=50",
    "--config.training.eval_every=6",
    "--config.eval.n_curve=5",
]


def kill(out: Path) -> None:
    """The command line, 2 processes, checkpointing every 3 updates; rank 1 dies in update 7."""
    step = training.train_step

    def dying_step(state: training.TrainState, *args: object, **kwargs: object) -> float:
        if distributed.rank() == 1 and state.step + 1 == KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)
        return step(state, *args, **kwargs)

    training.train_step = dying_step
    from scoresde.run import main

    sys.exit(main([f"--workdir={out / 'cli'}", *CLI, "--config.training.checkpoint_every=3"]))


if __name__ == "__main__":
    torch.set_num_threads(1)
    mode, out = sys.argv[1], Path(sys.argv[2])
    with distributed.process_group():
        {"checks": checks, "kill": kill}[mode](out)
