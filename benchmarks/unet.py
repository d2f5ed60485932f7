"""U-Net candidates for digits: parameters and CPU training-step time, against the bare loop.

    python benchmarks/unet.py --threads 1                          # the table (a few minutes)
    python benchmarks/unet.py --threads 1 --compile --configs tiny # and torch.compile (minutes)

The **bare loop** is the project's unit of CPU time: 2000 Adam steps of a 3x256 SiLU MLP
(``(x, t) in R^3 -> R^2``) at batch 512 on random data, in bare PyTorch. It is timed before and
after the candidates, in the same process, and the table uses the mean of the two.

A **U-Net step** is one training update on digits as the training loop does it: a batch of
``--batch`` training images, the denoising loss (VP SDE, epsilon parameterisation, input
scaling), backward, gradient clipping, Adam and an EMA update. Each candidate is timed over
``--steps`` updates after 3 warm-up updates. Columns: parameters; milliseconds per step; the
step's cost in bare-loop steps (``step / (bare loop / 2000)``); how many U-Net steps one bare
loop buys; and how many fit in 50 bare loops (the digits job's budget, issue 11).

With ``--compile`` each candidate is also run through ``torch.compile`` (inductor, CPU); the
compile time is reported separately and the step time is measured after it.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from torch import nn

from scoresde.datasets import load_dataset
from scoresde.losses import dsm_loss
from scoresde.nets import UNet
from scoresde.score import get_score_fn
from scoresde.sde import VPSDE
from scoresde.training import EMA

CANDIDATES: dict[str, dict[str, Any]] = {
    "micro": {"ch": 16, "ch_mult": (1, 2), "num_res_blocks": 1, "attn_resolutions": ()},
    "tiny": {"ch": 32, "ch_mult": (1, 2), "num_res_blocks": 1, "attn_resolutions": ()},
    "small": {"ch": 32, "ch_mult": (1, 2), "num_res_blocks": 1, "attn_resolutions": (4,)},
    "medium": {"ch": 48, "ch_mult": (1, 2), "num_res_blocks": 2, "attn_resolutions": (4,)},
    "ddpm++": {"ch": 64, "ch_mult": (1, 2, 2), "num_res_blocks": 2, "attn_resolutions": (4,)},
}


def bare_loop(steps: int = 2000, batch: int = 512) -> float:
    """Seconds for ``steps`` Adam steps of a 3x256 MLP at ``batch`` (data drawn beforehand)."""
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(
        nn.Linear(3, 256), nn.SiLU(), nn.Linear(256, 256), nn.SiLU(),
        nn.Linear(256, 256), nn.SiLU(), nn.Linear(256, 2),
    )  # fmt: skip
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    inputs, targets = torch.randn(64, batch, 3, generator=g), torch.randn(64, batch, 2, generator=g)
    start = time.perf_counter()
    for i in range(steps):
        loss = (net(inputs[i % 64]) - targets[i % 64]).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def unet_steps(model: nn.Module, batches, steps: int, warmup: int = 3) -> float:
    """Seconds per training update of ``model`` (after ``warmup`` untimed updates)."""
    sde = VPSDE()
    score_fn = get_score_fn(sde, model)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    ema = EMA(model, 0.999)
    g = torch.Generator().manual_seed(0)
    start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        loss = dsm_loss(sde, score_fn, batches(g), eps=1e-3, generator=g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.update(model)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--configs", nargs="+", choices=tuple(CANDIDATES), default=list(CANDIDATES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("digits")
    before = bare_loop()
    rows = []
    for name in args.configs:
        config = CANDIDATES[name]
        model = UNet((1, 8, 8), dropout=0.1, **config, generator=torch.Generator().manual_seed(0))
        params = sum(p.numel() for p in model.parameters())
        eager = unet_steps(model, data.batches(args.batch), args.steps)
        compiled = compile_time = None
        if args.compile:
            began = time.perf_counter()
            fast = torch.compile(model)
            unet_steps(fast, data.batches(args.batch), 1, warmup=2)  # compiles forward+backward
            compile_time = time.perf_counter() - began
            compiled = unet_steps(fast, data.batches(args.batch), args.steps)
        rows.append((name, config, params, eager, compiled, compile_time))
    after = bare_loop()
    bare = (before + after) / 2
    bare_step = bare / 2000
    print(
        f"bare loop: {before:.2f} s before, {after:.2f} s after ({torch.get_num_threads()} threads)"
    )
    print(f"U-Net steps at batch {args.batch}, {args.steps} timed updates each\n")
    head = (
        "| config | ch, ch_mult, blocks, attn | params | ms/step | bare steps/step "
        "| steps per bare loop | steps in 50 bare loops |"
    )
    if args.compile:
        head += " compiled ms/step | compile s |"
    print(head)
    print("|" + " --- |" * 2 + " ---: |" * (5 + 2 * args.compile))
    for name, c, params, eager, compiled, compile_time in rows:
        shape = f"{c['ch']}, {c['ch_mult']}, {c['num_res_blocks']}, {c['attn_resolutions']}"
        cells = [
            name, shape, f"{params / 1e6:.2f} M", f"{eager * 1e3:.1f}", f"{eager / bare_step:.0f}",
            f"{bare / eager:.0f}", f"{50 * bare / eager:,.0f}",
        ]  # fmt: skip
        if args.compile:
            cells += [f"{compiled * 1e3:.1f}", f"{compile_time:.0f}"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
