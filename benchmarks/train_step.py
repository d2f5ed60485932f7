"""Where a training update's time goes, against a bare-PyTorch step timed in the same process.

One update of ``scoresde.training.train_step`` for the default config (or the config the
overrides make) is split into its parts, each timed over many repetitions on the same state: the
batch draw, the loss's forward pass (``t``, noise, perturbation, the network, the weighting), its
backward pass, gradient clipping, the Adam step and the EMA update. The bare step is one Adam
update of a 3 x 256 SiLU MLP ``(x, t) -> x`` on 512 points, the unit of ``benchmarks/main_job.py``.
The table gives milliseconds and the ratio to the bare step, per thread count.

    python benchmarks/train_step.py                                  # threads 1 and 2
    python benchmarks/train_step.py --config.model.hidden=128        # another network
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn

from scoresde import pipeline, training
from scoresde import run as cli
from scoresde.datasets.toy import batch_sampler


def per_call(fn: Callable[[], object], repeats: int) -> float:
    """Seconds per call of ``fn``, the best of three rounds of ``repeats`` calls."""
    best = float("inf")
    for _ in range(3):
        began = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - began) / repeats)
    return best


def bare_step() -> Callable[[], None]:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(3, 256), nn.SiLU(),
        nn.Linear(256, 256), nn.SiLU(),
        nn.Linear(256, 256), nn.SiLU(),
        nn.Linear(256, 2),
    )  # fmt: skip
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(512, 2)

    def step() -> None:
        loss = (net(torch.cat([x, torch.rand(512, 1)], dim=1)) - x).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def parts_of_an_update(argv: list[str], repeats: int) -> dict[str, float]:
    parts = pipeline.build(cli.resolve_config(*cli.parse_args(argv)))
    c = parts.config.training
    state = training.TrainState.fresh(parts.model, lr=c.lr, seed=0, ema_warmup=True)
    draw = batch_sampler(parts.dataset, c.batch_size)
    batch = draw(state.generator)

    def loss() -> torch.Tensor:
        return parts.loss_fn(state.model, batch, state.generator)

    def backward() -> None:
        state.optimizer.zero_grad(set_to_none=True)
        loss().backward()

    backward()
    times = {
        "whole update": per_call(
            lambda: training.train_step(
                state, parts.loss_fn, draw(state.generator), lr=c.lr, grad_clip=c.grad_clip
            ),
            repeats,
        ),
        "batch draw": per_call(lambda: draw(state.generator), repeats),
        "loss forward": per_call(loss, repeats),
        "loss forward + backward": per_call(backward, repeats),
        "gradient clipping": per_call(
            lambda: nn.utils.clip_grad_norm_(state.params, c.grad_clip, foreach=True), repeats
        ),
        "Adam step": per_call(state.optimizer.step, repeats),
        "EMA update": per_call(lambda: state.ema.update(state.model), repeats),
    }
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=100)
    args, overrides = parser.parse_known_args()
    default = torch.get_num_threads()
    rows: dict[str, list[str]] = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        bare = per_call(bare_step(), args.repeats)
        rows.setdefault("bare step (3 x 256 MLP, batch 512)", []).append(f"{bare * 1e3:.2f} | 1")
        for name, seconds in parts_of_an_update(overrides, args.repeats).items():
            rows.setdefault(name, []).append(f"{seconds * 1e3:.2f} | {seconds / bare:.2f}")
    torch.set_num_threads(default)
    heads = " | ".join(f"ms ({n} thr.) | / bare" for n in args.threads)
    print(f"| part | {heads} |")
    print("|---|" + "---:|---:|" * len(args.threads))
    for name, cells in rows.items():
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
