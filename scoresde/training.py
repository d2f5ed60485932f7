"""The training loop: Adam with warm-up and clipping, EMA weights, evaluation, exact resume.

Update ``k = 1, ..., n_iters`` of :func:`train` is::

    x_k      = sample_batch(generator)
    L_k      = loss_fn(model, x_k, generator)
    g_k      = grad L_k * min(1, c / ||grad L_k||)        gradient-norm clipping at c = grad_clip
    lr_k     = lr * min(1, k / warmup)                     linear warm-up (see warmup_lr)
    theta_k  = Adam(theta_{k-1}, g_k, lr_k)
    ema_k    = d_k ema_{k-1} + (1 - d_k) theta_k           see EMA

The EMA weights are the ones to sample with (Song et al. 2021 use decay 0.999 to 0.9999).

Reproducibility: one ``torch.Generator`` seeded from ``seed`` draws every batch and all the loss's
noise, and torch's global RNG (which in-model randomness such as dropout uses) is seeded from the
same seed, so a run is a function of its arguments and seed. Evaluation runs with the global RNG
forked, so evaluating does not change training. A checkpoint holds the model, EMA, optimizer, step,
config, loss history and both RNG states; a run resumed from it reproduces the uninterrupted run
bitwise on the CPU.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from scoresde.checkpoint import (
    Checkpoint,
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)

__all__ = [
    "EMA",
    "TrainResult",
    "NonFiniteLossError",
    "ConfigMismatchError",
    "train",
    "warmup_lr",
]

logger = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, Tensor, torch.Generator], Tensor]
"""``loss_fn(model, batch, generator) -> scalar loss``, all its noise drawn from ``generator``."""

BatchSampler = Callable[[torch.Generator], Tensor]
"""``sample_batch(generator) -> batch`` of shape ``(B, *D)``, drawn with ``generator``."""

EvalFn = Callable[[nn.Module, int], dict[str, float]]
"""``eval_fn(ema_model, step) -> {metric name: value}``."""


class NonFiniteLossError(RuntimeError):
    """Training stopped because update ``step`` met a non-finite loss or gradient norm.

    The update was not applied and no checkpoint of it was written.

    Attributes:
        step: the update (1-based) that failed.
        loss: its loss value.
        grad_norm: its gradient norm (``None`` when the loss itself was not finite).
        checkpoint: the last good checkpoint, or ``None``.
    """

    def __init__(self, step: int, loss: float, grad_norm: float | None, checkpoint: Path | None):
        self.step, self.loss, self.grad_norm, self.checkpoint = step, loss, grad_norm, checkpoint
        what = f"loss is {loss}" if grad_norm is None else f"gradient norm is {grad_norm}"
        kept = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint kept"
        super().__init__(f"training stopped at step {step}: the {what} ({kept})")


class ConfigMismatchError(ValueError):
    """A workdir's checkpoint was written by a run with a different config or loop settings.

    Attributes:
        checkpoint: the checkpoint that was to be resumed.
        differences: one line per differing entry, ``name: value in the checkpoint, value now``.
    """

    def __init__(self, checkpoint: Path, differences: list[str]):
        self.checkpoint, self.differences = checkpoint, differences
        super().__init__(
            f"{checkpoint} was written with different settings; refusing to mix two runs "
            "(use another workdir, or allow_config_change=True to continue with the new ones): "
            + "; ".join(differences)
        )


def warmup_lr(step: int, lr: float, warmup: int) -> float:
    """The learning rate of update ``step`` (1-based): ``lr * min(1, step / warmup)``.

    The rate climbs linearly from ``lr / warmup`` at the first update to ``lr`` at update
    ``warmup`` and stays there; ``warmup = 0`` means the full rate from the start.
    """
    return lr if warmup == 0 else lr * min(1.0, step / warmup)


class EMA:
    """An exponential moving average of a model's parameters, held in a copy of the model.

    Each :meth:`update` after a training step folds in the current parameters ``theta``::

        ema <- d ema + (1 - d) theta,

    with ``d = decay``, or with ``warmup=True`` ``d = min(decay, (1 + n) / (10 + n))`` where ``n``
    counts the earlier updates (so the average forgets its random start quickly). With a constant
    ``d`` and ``ema_0 = theta_0``, after ``k`` updates with parameters ``theta_1 .. theta_k``::

        ema_k = d^k theta_0 + (1 - d) sum_{i=1}^{k} d^(k-i) theta_i.

    Buffers (e.g. normalisation statistics) are copied, not averaged.

    Arguments:
        model: the trained model; the average starts at its current parameters.
        decay: ``d`` in ``[0, 1)``; ``0`` makes the average the current parameters.
        warmup: ramp the decay up over the first updates, as above.

    Attributes:
        model: the averaged copy, in eval mode with gradients off: sample with it.
        num_updates: how many updates have been folded in.
    """

    def __init__(self, model: nn.Module, decay: float, *, warmup: bool = False):
        if not (isinstance(decay, (int, float)) and 0 <= decay < 1):
            raise ValueError(f"EMA decay must be a number in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.warmup = warmup
        self.num_updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        """The decay ``d`` the next :meth:`update` uses."""
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold ``model``'s parameters into the average and copy its buffers."""
        d = self.current_decay()
        for avg, param in zip(self.model.parameters(), model.parameters(), strict=True):
            avg.lerp_(param.detach(), 1.0 - d)
        for avg_buf, buf in zip(self.model.buffers(), model.buffers(), strict=True):
            avg_buf.copy_(buf)
        self.num_updates += 1

    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged parameters and buffers into ``model`` (same architecture)."""
        model.load_state_dict(self.model.state_dict())


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        model: the trained model (the same object that was passed in).
        ema_model: its EMA copy, to sample with.
        optimizer: the Adam optimizer, in its final state.
        losses: the loss of every update of the run, resumed parts included: ``losses[k - 1]``.
        evals: every evaluation so far, each ``{"step": k, **eval_fn(ema_model, k)}``.
        step: the number of updates done in total.
        steps_run: the number of updates done by this call.
        wall_time: seconds this call spent in the loop (evaluation and checkpoints included).
        checkpoint: the last checkpoint written or resumed from, or ``None``.
    """

    model: nn.Module
    ema_model: nn.Module
    optimizer: torch.optim.Optimizer
    losses: list[float]
    evals: list[dict[str, float]]
    step: int
    steps_run: int
    wall_time: float
    checkpoint: Path | None


def train(
    model: nn.Module,
    loss_fn: LossFn,
    sample_batch: BatchSampler,
    *,
    n_iters: int,
    lr: float,
    seed: int,
    warmup: int = 0,
    grad_clip: float | None = 1.0,
    ema_decay: float = 0.999,
    ema_warmup: bool = False,
    weight_decay: float = 0.0,
    workdir: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 1000,
    keep: int | None = 3,
    eval_every: int | None = None,
    eval_fn: EvalFn | None = None,
    config: dict[str, Any] | None = None,
    allow_config_change: bool = False,
    progress: bool = True,
    log_every: int = 100,
) -> TrainResult:
    """Train ``model`` to minimise ``loss_fn`` for ``n_iters`` updates in total.

    With a ``workdir`` that already holds checkpoints, training resumes from the newest one (its
    model, EMA, optimizer, RNG states and histories replace the current ones) and runs the
    remaining updates; the result is bitwise the one of an uninterrupted run on the CPU.

    Arguments:
        model: the network; its parameters' device is where batches go and the generator lives.
        loss_fn: ``loss_fn(model, batch, generator) -> scalar tensor``.
        sample_batch: ``sample_batch(generator) -> batch``; moved to the model's device.
        n_iters: total number of updates, resumed ones included.
        lr: Adam's learning rate after warm-up.
        seed: seeds the generator and torch's global RNG of a fresh run.
        warmup: number of updates of linear learning-rate warm-up (:func:`warmup_lr`).
        grad_clip: clip the gradient's global 2-norm to this value; ``None`` does not clip.
        ema_decay, ema_warmup: see :class:`EMA`.
        weight_decay: Adam's L2 penalty.
        workdir: where checkpoints go (``workdir/checkpoints``); ``None`` writes nothing.
        checkpoint_every: write a checkpoint every this many updates, and after the last.
        keep: how many checkpoints to keep (``None`` keeps all).
        eval_every, eval_fn: call ``eval_fn(ema_model, step)`` at every multiple of ``eval_every``
            (not specially after the last update, so that a run's history does not depend on
            where it was interrupted); the returned numbers are logged and kept in the history.
        config: the run's JSON-able configuration, stored in each checkpoint.
        allow_config_change: resume even if the checkpoint's config or loop settings (``lr``,
            ``warmup``, ``grad_clip``, ``ema_decay``, ``ema_warmup``, ``weight_decay``, ``seed``)
            differ from these; otherwise that raises :class:`ConfigMismatchError`. ``n_iters``
            may always change, to train longer.
        progress: show a tqdm progress bar with the loss.
        log_every: log the mean loss of the last this many updates (logger ``scoresde.training``).

    Returns:
        A :class:`TrainResult`.

    Raises:
        NonFiniteLossError: a loss or gradient norm was NaN or infinite; the failed update was not
            applied, and the last good checkpoint is kept.
        CheckpointError: the newest checkpoint in ``workdir`` is incomplete or corrupt; nothing on
            disk is changed.
        ConfigMismatchError: see ``allow_config_change``.
        ValueError: an argument is invalid.
    """
    _check_int("n_iters", n_iters, 1)
    _check_positive("lr", lr)
    _check_int("seed", seed, 0)
    _check_int("warmup", warmup, 0)
    if grad_clip is not None:
        _check_positive("grad_clip", grad_clip)
    if not (isinstance(weight_decay, (int, float)) and 0 <= weight_decay < math.inf):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    _check_int("checkpoint_every", checkpoint_every, 1)
    if keep is not None:
        _check_int("keep", keep, 1)
    _check_int("log_every", log_every, 1)
    if (eval_every is None) != (eval_fn is None):
        raise ValueError(
            f"eval_every and eval_fn go together, got eval_every={eval_every!r} and "
            f"eval_fn={'None' if eval_fn is None else 'a function'}"
        )
    if eval_every is not None:
        _check_int("eval_every", eval_every, 1)
    if config is not None and not isinstance(config, dict):
        raise ValueError(f"config must be a JSON-able dict or None, got {type(config).__name__}")
    config = _json_roundtrip("config", config)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")

    device = params[0].device
    settings = {
        "lr": lr,
        "warmup": warmup,
        "grad_clip": grad_clip,
        "ema_decay": ema_decay,
        "ema_warmup": ema_warmup,
        "weight_decay": weight_decay,
        "seed": seed,
    }
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    ema = EMA(model, ema_decay, warmup=ema_warmup)
    generator = torch.Generator(device=device)
    ckpt_dir = None if workdir is None else Path(workdir) / "checkpoints"
    losses: list[float] = []
    evals: list[dict[str, float]] = []
    start = 0
    last_ckpt = None if ckpt_dir is None else latest_checkpoint(ckpt_dir)
    if last_ckpt is None:
        generator.manual_seed(seed)
        torch.manual_seed(_global_seed(seed))
    else:
        ckpt = _load_for_resume(last_ckpt, config, settings, device, allow_config_change)
        model.load_state_dict(ckpt.model)
        ema.model.load_state_dict(ckpt.ema)
        ema.num_updates = ckpt.loop["ema_updates"]
        optimizer.load_state_dict(ckpt.optimizer)
        for group in optimizer.param_groups:  # the checkpoint's values, unless changed on purpose
            group["weight_decay"] = weight_decay
        _set_rng_states(ckpt.rng, generator, device)
        losses, evals, start = ckpt.losses, ckpt.evals, ckpt.step
        logger.info("resuming from %s at step %d", last_ckpt, start)

    def snapshot(step: int) -> Checkpoint:
        return Checkpoint(
            step=step,
            model=model.state_dict(),
            ema=ema.model.state_dict(),
            optimizer=optimizer.state_dict(),
            rng=_rng_states(generator, device),
            config=config,
            losses=losses,
            evals=evals,
            loop={"settings": settings, "ema_updates": ema.num_updates, "device": device.type},
        )

    model.train()
    began = time.perf_counter()
    bar = tqdm(total=n_iters, initial=start, disable=not progress, desc="training", unit="step")
    with bar:
        for step in range(start + 1, n_iters + 1):
            loss = loss_fn(model, sample_batch(generator).to(device), generator)
            if not (isinstance(loss, Tensor) and loss.ndim == 0):
                shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
                raise ValueError(f"loss_fn must return a scalar tensor, got {shape}")
            value = loss.item()
            if not math.isfinite(value):
                raise NonFiniteLossError(step, value, None, last_ckpt)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            max_norm = math.inf if grad_clip is None else grad_clip
            grad_norm = nn.utils.clip_grad_norm_(params, max_norm).item()
            if not math.isfinite(grad_norm):
                raise NonFiniteLossError(step, value, grad_norm, last_ckpt)
            for group in optimizer.param_groups:
                group["lr"] = warmup_lr(step, lr, warmup)
            optimizer.step()
            ema.update(model)
            losses.append(value)

            bar.set_postfix(loss=f"{value:.4g}", refresh=False)
            bar.update(1)
            if step % log_every == 0:
                recent = losses[-log_every:]
                logger.info(
                    "step %d/%d  loss %.5g (mean of last %d)  lr %.3g  grad norm %.3g",
                    step, n_iters, sum(recent) / len(recent), len(recent),
                    warmup_lr(step, lr, warmup), grad_norm,
                )  # fmt: skip
            if eval_fn is not None and step % eval_every == 0:
                evals.append(_evaluate(eval_fn, ema.model, step, device))
                logger.info("step %d  eval %s", step, evals[-1])
            if ckpt_dir is not None and (step % checkpoint_every == 0 or step == n_iters):
                last_ckpt = save_checkpoint(ckpt_dir, snapshot(step), keep=keep)
                logger.info("step %d  saved %s", step, last_ckpt)
    return TrainResult(
        model=model,
        ema_model=ema.model,
        optimizer=optimizer,
        losses=losses,
        evals=evals,
        step=max(start, n_iters),
        steps_run=max(0, n_iters - start),
        wall_time=time.perf_counter() - began,
        checkpoint=last_ckpt,
    )


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _json_roundtrip(name: str, value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), to compare like with like."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be JSON-able (checkpoints store it as JSON): {err}") from err


def _global_seed(seed: int) -> int:
    """A seed for torch's global RNG drawn from ``seed``, so its stream is not the generator's."""
    seeder = torch.Generator().manual_seed(seed)
    return int(torch.randint(2**62, (), generator=seeder))


def _rng_states(generator: torch.Generator, device: torch.device) -> dict[str, Tensor]:
    states = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["torch_cuda"] = torch.cuda.get_rng_state(device)
    return states


def _set_rng_states(
    states: dict[str, Tensor], generator: torch.Generator, device: torch.device
) -> None:
    generator.set_state(states["generator"])
    torch.set_rng_state(states["torch"])
    if device.type == "cuda":
        torch.cuda.set_rng_state(states["torch_cuda"], device)


@contextlib.contextmanager
def _global_rng_forked(device: torch.device) -> Iterator[None]:
    """Restore torch's global RNG (CPU, and ``device``'s if an accelerator) on leaving the block."""
    accelerator = device.type != "cpu"
    devices = [device] if accelerator else []
    with torch.random.fork_rng(devices, device_type=device.type if accelerator else "cuda"):
        yield


def _evaluate(
    eval_fn: EvalFn, ema_model: nn.Module, step: int, device: torch.device
) -> dict[str, float]:
    with _global_rng_forked(device):
        metrics = eval_fn(ema_model, step)
    if not isinstance(metrics, dict):
        raise ValueError(f"eval_fn must return a dict of numbers, got {type(metrics).__name__}")
    try:
        return {"step": step, **{str(k): float(v) for k, v in metrics.items()}}
    except (TypeError, ValueError) as err:
        raise ValueError(f"eval_fn must return a dict of numbers, got {metrics!r}") from err


def _load_for_resume(
    path: Path,
    config: dict[str, Any] | None,
    settings: dict[str, Any],
    device: torch.device,
    allow_config_change: bool,
) -> Checkpoint:
    """Load the checkpoint to resume from, refusing a corrupt one or one of a different run."""
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as err:
        older = list_checkpoints(path.parent)[:-1]
        instead = f"resume from {older[-1].name}" if older else "start afresh"
        raise CheckpointError(
            err.path, f"{err.reason}; nothing was changed (move {path} aside to {instead})"
        ) from err
    missing = sorted({"settings", "ema_updates", "device"} - ckpt.loop.keys())
    if missing:
        raise CheckpointError(path, f"not written by train(): its loop state lacks {missing}")
    if ckpt.loop["device"] != device.type:
        raise ValueError(
            f"{path} was written on device type {ckpt.loop['device']!r} and the model is on "
            f"{device.type!r}; the random streams of a run continue only on the same device type"
        )
    differences = _differences(
        {"config": ckpt.config, "train": ckpt.loop["settings"]},
        {"config": config, "train": _json_roundtrip("settings", settings)},
    )
    if differences and not allow_config_change:
        raise ConfigMismatchError(path, differences)
    for line in differences:
        logger.warning("resuming with a changed setting: %s", line)
    return ckpt


def _differences(old: Any, new: Any, name: str = "") -> list[str]:
    """Where two JSON values differ: ``dotted.name: old in the checkpoint, now new`` each."""
    if isinstance(old, dict) and isinstance(new, dict):
        lines = []
        for key in sorted(old.keys() | new.keys()):
            sub = f"{name}.{key}" if name else key
            if key not in old:
                lines.append(f"{sub}: absent in the checkpoint, now {new[key]!r}")
            elif key not in new:
                lines.append(f"{sub}: {old[key]!r} in the checkpoint, now absent")
            else:
                lines.extend(_differences(old[key], new[key], sub))
        return lines
    return [] if old == new else [f"{name}: {old!r} in the checkpoint, now {new!r}"]
