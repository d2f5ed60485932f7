"""The training loop: Adam with warm-up and clipping, EMA weights, evaluation, exact resume.

Update ``k = 1, ..., n_iters`` of :func:`train` (:func:`train_step`) is::

    x_k      = sample_batch(generator)
    L_k      = loss_fn(model, x_k, generator)
    g_k      = grad L_k * min(1, c / ||grad L_k||)        gradient-norm clipping at c = grad_clip
    lr_k     = lr * min(1, k / warmup) * c_k                linear warm-up, then the schedule c_k
    theta_k  = Adam(theta_{k-1}, g_k, lr_k)
    ema_k    = d_k ema_{k-1} + (1 - d_k) theta_k           see EMA

with ``c_k = 1`` (schedule ``"constant"``) or a cosine decay from 1 towards 0 at ``n_iters``
(``"cosine"``; see :func:`learning_rate`). The EMA weights are the ones to sample with (Song et al.
2021 use decay 0.999 to 0.9999).

The loop is three parts, each usable alone: :class:`TrainState` (what an update changes, started
fresh by :meth:`TrainState.fresh` or from a checkpoint by :meth:`TrainState.resume`),
:func:`train_step` (one update) and the bookkeeping between updates (progress bar, log, periodic
evaluation, checkpoints, Ctrl-C). :func:`train` runs them.

Reproducibility: one ``torch.Generator`` seeded from ``seed`` draws every batch and all the loss's
noise, and torch's global RNG (which in-model randomness such as dropout uses) is seeded from the
same seed, so a run is a function of its arguments and seed. Evaluation runs with the global RNG
forked, so evaluating does not change training. A checkpoint holds the model, EMA, optimizer, step,
config, loss history and both RNG states; a run resumed from it reproduces the uninterrupted run
bitwise on the CPU.

Many processes (``torchrun``; :mod:`scoresde.distributed`): each rank's generator and global RNG
are seeded from :func:`~scoresde.distributed.rank_seed` (rank 0's from ``seed`` itself), the loss
runs through ``DistributedDataParallel``, which averages the gradients, so every rank applies the
same update; the logged loss is the mean over the ranks, only rank 0 writes checkpoints and logs,
and a checkpoint holds every rank's RNG states. Resumed with the same number of processes, a run
continues bitwise; with another number, the weights, EMA, optimizer and step continue exactly and
each rank's random stream continues where it has a saved state (a new rank starts its own).

Precision ``"bf16"`` runs the loss (the forward pass) under ``torch.autocast`` in bfloat16; the
weights, their gradients, Adam's moments and the EMA stay float32 (no loss scaling is needed:
bfloat16 has float32's exponent range).

Ctrl-C (SIGINT, in the main thread) lets the update under way finish, writes a checkpoint of it
(with a ``workdir``) and raises :class:`TrainingInterrupted`; a second Ctrl-C interrupts at once,
and the newest checkpoint on disk is then the previous one. Either way the run resumes.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from scoresde import distributed
from scoresde.checkpoint import (
    Checkpoint,
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from scoresde.validation import check_choice, check_int, check_number, check_positive

__all__ = [
    "EMA",
    "TrainState",
    "TrainResult",
    "TrainingLoss",
    "NonFiniteLossError",
    "PRECISIONS",
    "ConfigMismatchError",
    "TrainingInterrupted",
    "differences",
    "train",
    "train_step",
    "learning_rate",
    "LR_SCHEDULES",
]

logger = logging.getLogger(__name__)

#: ``precision`` -> the dtype the loss's forward pass is autocast to (``None``: none, float32).
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}

#: The learning-rate schedules after warm-up (:func:`learning_rate`).
LR_SCHEDULES = ("constant", "cosine")

TrainingLoss = Callable[[nn.Module, Tensor, torch.Generator], Tensor]
"""``loss_fn(model, batch, generator) -> scalar loss``, all its noise drawn from ``generator``.

(The losses of :mod:`scoresde.losses` take a score function instead of a model; wrap one with
:func:`scoresde.score.get_score_fn` to train with it.)"""

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
        differences: one line per differing entry (see :func:`differences`).
    """

    def __init__(self, checkpoint: Path, differences: list[str]):
        self.checkpoint, self.differences = checkpoint, differences
        super().__init__(
            f"{checkpoint} was written with different settings; refusing to mix two runs "
            "(use another workdir, or allow_config_change=True to continue with the new ones): "
            + "; ".join(differences)
        )


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training after update ``step``, whose checkpoint is ``checkpoint``.

    Attributes:
        step: the last update done.
        checkpoint: the checkpoint written for it (or the newest one, or ``None`` without a
            workdir).
    """

    def __init__(self, step: int, checkpoint: Path | None):
        self.step, self.checkpoint = step, checkpoint
        where = f"; its checkpoint is {checkpoint}" if checkpoint else ""
        super().__init__(f"training interrupted after step {step}{where}")


def learning_rate(
    step: int, lr: float, warmup: int, schedule: str = "constant", n_iters: int | None = None
) -> float:
    """The learning rate of update ``step`` (1-based), ``lr * min(1, k / warmup) * c_k``::

        c_k = 1                                                    schedule "constant"
        c_k = (1 + cos(pi * min(1, max(0, k - 1 - warmup) / (n_iters - warmup)))) / 2
                                                                   schedule "cosine"

    The rate climbs linearly from ``lr / warmup`` at the first update to ``lr`` at update
    ``warmup`` (``warmup = 0``: the full rate from the start). ``"constant"`` then stays there;
    ``"cosine"`` (Loshchilov & Hutter, 2017, without restarts) falls from ``lr`` at update
    ``warmup + 1`` to ``lr (1 - cos(pi / (n_iters - warmup))) / 2``, a little above 0, at the last
    update ``n_iters``, which it needs (above ``warmup``), and stays at 0 after it.
    """
    check_choice("schedule", schedule, LR_SCHEDULES)
    rate = lr if warmup == 0 else lr * min(1.0, step / warmup)
    if schedule == "constant":
        return rate
    if n_iters is None or n_iters <= warmup:
        raise ValueError(
            f"the cosine schedule needs n_iters above warmup = {warmup}; got n_iters = {n_iters}"
        )
    progress = min(1.0, max(0, step - 1 - warmup) / (n_iters - warmup))
    return rate * 0.5 * (1.0 + math.cos(math.pi * progress))


class EMA:
    """An exponential moving average of a model's parameters, held in a copy of the model.

    Each :meth:`update` after a training step folds in the current parameters ``theta``::

        ema <- d ema + (1 - d) theta,

    with ``d = decay``, or with ``warmup=True`` ``d = min(decay, (1 + n) / (10 + n))`` where ``n``
    counts the earlier updates (so the average forgets its random start quickly: after ``n``
    updates the start's weight is ``prod_k d_k ~ 9 / (n + 9)`` instead of ``decay^n``). With a
    constant ``d`` and ``ema_0 = theta_0``, after ``k`` updates with parameters
    ``theta_1 .. theta_k``::

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
        self.decay = check_number("EMA decay", decay, 0, 1, high_open=True)
        self.warmup = warmup
        self.num_updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self._averaged = list(self.model.parameters())

    def current_decay(self) -> float:
        """The decay ``d`` the next :meth:`update` uses."""
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold ``model``'s parameters into the average and copy its buffers."""
        weight = 1.0 - self.current_decay()
        torch._foreach_lerp_(self._averaged, [p.detach() for p in model.parameters()], weight)
        for avg_buf, buf in zip(self.model.buffers(), model.buffers(), strict=True):
            avg_buf.copy_(buf)
        self.num_updates += 1

    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged parameters and buffers into ``model`` (same architecture)."""
        model.load_state_dict(self.model.state_dict())


@dataclasses.dataclass
class TrainState:
    """What an update changes: the model, its EMA, the optimizer, the generator, the histories.

    Attributes:
        model: the network being trained.
        ema: its :class:`EMA`.
        optimizer: Adam over the model's trainable parameters.
        generator: the source of every batch and of the loss's noise.
        step: updates done so far.
        losses: the loss of every update so far, ``losses[k - 1]`` for update ``k``.
        evals: the periodic evaluations so far.
        ddp: the ``DistributedDataParallel`` wrapper of ``model`` the loss runs through in a
            multi-process run (``None`` in one process).
    """

    model: nn.Module
    ema: EMA
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    step: int = 0
    losses: list[float] = dataclasses.field(default_factory=list)
    evals: list[dict[str, float]] = dataclasses.field(default_factory=list)
    ddp: nn.Module | None = None

    @property
    def params(self) -> list[Tensor]:
        return self.optimizer.param_groups[0]["params"]

    @property
    def device(self) -> torch.device:
        return self.params[0].device

    @classmethod
    def fresh(
        cls,
        model: nn.Module,
        *,
        lr: float,
        seed: int,
        weight_decay: float = 0.0,
        ema_decay: float = 0.999,
        ema_warmup: bool = False,
    ) -> TrainState:
        """A state at step 0: Adam, an EMA starting at the model, generators seeded from ``seed``.

        Seeds torch's global RNG too (from ``seed``, on a stream other than the generator's). In a
        multi-process run each rank seeds both from its own
        :func:`~scoresde.distributed.rank_seed` of ``seed``.
        """
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("model has no trainable parameters")
        optimizer = _adam(params, lr, weight_decay)
        seed = distributed.rank_seed(seed)
        generator = torch.Generator(device=params[0].device).manual_seed(seed)
        torch.manual_seed(_global_seed(seed))
        return cls(model, EMA(model, ema_decay, warmup=ema_warmup), optimizer, generator)

    def resume(self, checkpoint: Checkpoint) -> None:
        """Continue from ``checkpoint``: its model, EMA, optimizer, RNG states and histories.

        The optimizer's hyper-parameters stay this state's (they are the run's settings, checked
        against the checkpoint's by :func:`train`); its moments come from the checkpoint.
        """
        self.model.load_state_dict(checkpoint.model)
        self.ema.model.load_state_dict(checkpoint.ema)
        self.ema.num_updates = checkpoint.loop["ema_updates"]
        groups = [dict(g) for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(checkpoint.optimizer)
        for group, settings in zip(self.optimizer.param_groups, groups, strict=True):
            group.update({k: v for k, v in settings.items() if k != "params"})
        _set_rng_states(_rank_states(checkpoint.rng), self.generator, self.device)
        self.step = checkpoint.step
        self.losses, self.evals = list(checkpoint.losses), list(checkpoint.evals)

    def checkpoint(self, config: dict[str, Any] | None, settings: dict[str, Any]) -> Checkpoint:
        """This state as a :class:`~scoresde.checkpoint.Checkpoint`, with every rank's RNG
        states (rank 0's under their plain names, rank ``r``'s as ``NAME.rank<r>``); in a
        multi-process run every rank must call it (it gathers them)."""
        ranks = distributed.gather_objects(_rng_states(self.generator, self.device))
        rng = {
            f"{name}.rank{r}" if r else name: v
            for r, s in enumerate(ranks)
            for name, v in s.items()
        }
        loop = {"settings": settings, "ema_updates": self.ema.num_updates}
        return Checkpoint(
            step=self.step,
            model=self.model.state_dict(),
            ema=self.ema.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            rng=rng,
            config=config,
            losses=self.losses,
            evals=self.evals,
            loop={**loop, "device": self.device.type, "processes": len(ranks)},
        )


def train_step(
    state: TrainState,
    loss_fn: TrainingLoss,
    batch: Tensor,
    *,
    lr: float,
    grad_clip: float | None,
    last: Path | None = None,
    precision: str = "fp32",
) -> float:
    """One update of ``state`` on ``batch`` at learning rate ``lr``; its loss.

    The loss runs under autocast to :data:`PRECISIONS` ``[precision]``, through ``state.ddp``
    when there is one; the loss returned (and recorded) is its mean over the ranks. The loss and
    the gradient norm are checked before anything changes (on every rank alike): a non-finite one
    raises :class:`NonFiniteLossError` (naming ``last``, the last good checkpoint) and the update
    is not applied.
    """
    step = state.step + 1
    dtype = PRECISIONS[check_choice("precision", precision, PRECISIONS)]
    net = state.model if state.ddp is None else state.ddp
    with torch.autocast(state.device.type, dtype=dtype, enabled=dtype is not None):
        loss = loss_fn(net, batch, state.generator)
    if not (isinstance(loss, Tensor) and loss.ndim == 0):
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(f"loss_fn must return a scalar tensor; got {shape}")
    value = distributed.mean(loss.detach())
    if not math.isfinite(value):
        raise NonFiniteLossError(step, value, None, last)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    max_norm = math.inf if grad_clip is None else grad_clip
    grad_norm = nn.utils.clip_grad_norm_(state.params, max_norm, foreach=True).item()
    if not math.isfinite(grad_norm):
        raise NonFiniteLossError(step, value, grad_norm, last)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    state.optimizer.step()
    state.ema.update(state.model)
    state.losses.append(value)
    state.step = step
    return value


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
    loss_fn: TrainingLoss,
    sample_batch: BatchSampler,
    *,
    n_iters: int,
    lr: float,
    seed: int,
    warmup: int = 0,
    lr_schedule: str = "constant",
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
    precision: str = "fp32",
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
        warmup: number of updates of linear learning-rate warm-up (:func:`learning_rate`).
        lr_schedule: the rate after warm-up, ``"constant"`` or ``"cosine"`` (decaying towards 0
            at ``n_iters``, which must exceed ``warmup``; see :func:`learning_rate`).
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
            ``warmup``, ``lr_schedule``, ``grad_clip``, ``ema_decay``, ``ema_warmup``,
            ``weight_decay``, ``seed``) differ from these; otherwise that raises
            :class:`ConfigMismatchError`. ``n_iters`` may change, to train longer, except under
            the cosine schedule, whose every rate depends on it.
        progress: show a tqdm progress bar with the loss.
        log_every: log the mean loss of the last this many updates (logger ``scoresde.training``).
        precision: ``"fp32"``, or ``"bf16"`` to autocast the loss's forward pass to bfloat16
            (weights, gradients and optimizer state stay float32).

    In a multi-process run (:mod:`scoresde.distributed`) every rank calls this with its own
    ``sample_batch`` (its share of the global batch); only rank 0 writes and logs.

    Returns:
        A :class:`TrainResult`.

    Raises:
        NonFiniteLossError: a loss or gradient norm was NaN or infinite; the failed update was not
            applied, and the last good checkpoint is kept.
        TrainingInterrupted: Ctrl-C; the last update's checkpoint is written (see above).
        CheckpointError: the newest checkpoint in ``workdir`` is incomplete or corrupt; nothing on
            disk is changed.
        ConfigMismatchError: see ``allow_config_change``.
        ValueError: an argument is invalid.
    """
    check_int("n_iters", n_iters, 1)
    check_positive("lr", lr)
    check_int("seed", seed, 0, 2**64 - 1)
    check_int("warmup", warmup, 0)
    learning_rate(1, lr, warmup, lr_schedule, n_iters)  # refuses a bad schedule
    if grad_clip is not None:
        check_positive("grad_clip", grad_clip)
    check_number("weight_decay", weight_decay, 0)
    check_int("checkpoint_every", checkpoint_every, 1)
    if keep is not None:
        check_int("keep", keep, 1)
    check_int("log_every", log_every, 1)
    check_choice("precision", precision, PRECISIONS)
    if (eval_every is None) != (eval_fn is None):
        raise ValueError(
            f"eval_every and eval_fn go together; got eval_every={eval_every!r} and "
            f"eval_fn={'None' if eval_fn is None else 'a function'}"
        )
    if eval_every is not None:
        check_int("eval_every", eval_every, 1)
    if config is not None and not isinstance(config, dict):
        raise ValueError(f"config must be a JSON-able dict or None; got {type(config).__name__}")
    config = _json_roundtrip("config", config)
    settings = {
        "lr": lr,
        "warmup": warmup,
        "grad_clip": grad_clip,
        "ema_decay": ema_decay,
        "ema_warmup": ema_warmup,
        "weight_decay": weight_decay,
        "seed": seed,
    }
    if lr_schedule == "cosine":  # recorded only then, so that older checkpoints still resume
        settings.update(lr_schedule=lr_schedule, lr_decay_end=n_iters)
    state = TrainState.fresh(
        model,
        lr=lr,
        seed=seed,
        weight_decay=weight_decay,
        ema_decay=ema_decay,
        ema_warmup=ema_warmup,
    )
    ckpt_dir = None if workdir is None else Path(workdir) / "checkpoints"
    last = None if ckpt_dir is None else latest_checkpoint(ckpt_dir)
    if last is not None:
        state.resume(_checkpoint_to_resume(last, config, settings, state, allow_config_change))
        logger.info("resuming from %s at step %d", last, state.step)
    state.ddp = distributed.wrap(model)
    start = state.step
    books = _Bookkeeping(state, n_iters, progress, log_every, eval_every, eval_fn)
    saver = _Checkpoints(state, ckpt_dir, checkpoint_every, keep, config, settings, last)

    model.train()
    began = time.perf_counter()
    with books, _deferred_interrupt() as interrupted:
        while state.step < n_iters:
            batch = sample_batch(state.generator).to(state.device)
            rate = learning_rate(state.step + 1, lr, warmup, lr_schedule, n_iters)
            train_step(
                state, loss_fn, batch, lr=rate, grad_clip=grad_clip, last=saver.last,
                precision=precision,
            )  # fmt: skip
            books.after_step(rate)
            stop = distributed.any_true(interrupted())  # every rank stops after the same update
            saver.after_step(final=state.step == n_iters or stop)
            if stop:
                raise TrainingInterrupted(state.step, saver.last)
    return TrainResult(
        model=model,
        ema_model=state.ema.model,
        optimizer=state.optimizer,
        losses=state.losses,
        evals=state.evals,
        step=state.step,
        steps_run=state.step - start,
        wall_time=time.perf_counter() - began,
        checkpoint=saver.last,
    )


class _Bookkeeping:
    """The progress bar, the log and the periodic evaluations, after each update."""

    def __init__(
        self,
        state: TrainState,
        n_iters: int,
        progress: bool,
        log_every: int,
        eval_every: int | None,
        eval_fn: EvalFn | None,
    ):
        self.state, self.n_iters, self.log_every = state, n_iters, log_every
        self.eval_every, self.eval_fn = eval_every, eval_fn
        self.logs = distributed.is_main()
        self.bar = tqdm(
            total=n_iters,
            initial=state.step,
            disable=not (progress and self.logs),
            desc="training",
            unit="step",
        )

    def __enter__(self) -> _Bookkeeping:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

    def after_step(self, lr: float) -> None:
        state, step = self.state, self.state.step
        if not self.bar.disable:
            self.bar.set_postfix(loss=f"{state.losses[-1]:.4g}", refresh=False)
            self.bar.update(1)
        if self.logs and step % self.log_every == 0:
            recent = state.losses[-self.log_every :]
            logger.info(
                "step %d/%d  loss %.5g (mean of last %d)  lr %.3g",
                step, self.n_iters, sum(recent) / len(recent), len(recent), lr,
            )  # fmt: skip
        if self.eval_fn is not None and step % self.eval_every == 0:
            state.evals.append(_evaluate(self.eval_fn, state.ema.model, step, state.device))
            if self.logs:
                logger.info("step %d  eval %s", step, state.evals[-1])


class _Checkpoints:
    """Checkpoints every ``every`` updates and after the last one (none without a directory)."""

    def __init__(
        self,
        state: TrainState,
        directory: Path | None,
        every: int,
        keep: int | None,
        config: dict[str, Any] | None,
        settings: dict[str, Any],
        last: Path | None,
    ):
        self.state, self.directory, self.every, self.keep = state, directory, every, keep
        self.config, self.settings = config, settings
        self.last, self.last_step = last, state.step

    def after_step(self, final: bool) -> None:
        step = self.state.step
        due = step % self.every == 0 or final
        if self.directory is None or not due or step == self.last_step:
            return
        checkpoint = self.state.checkpoint(self.config, self.settings)
        self.last_step = step
        if distributed.is_main():
            self.last = save_checkpoint(self.directory, checkpoint, keep=self.keep)
            logger.info("step %d  saved %s", step, self.last)


@contextlib.contextmanager
def _deferred_interrupt() -> Iterator[Callable[[], bool]]:
    """Within the block, a first SIGINT only sets a flag (read by the yielded function) and puts
    back the previous handler, so that a second one interrupts at once. Outside the main thread
    (where Python cannot install handlers) SIGINT behaves as usual."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    received = []
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: object) -> None:
        received.append(signum)
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(received)
    finally:
        signal.signal(signal.SIGINT, previous)


def _adam(params: list[Tensor], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam, fused into one kernel where PyTorch has one for the parameters' device (5x faster
    than the per-tensor loop for a small network on a CPU), else with its multi-tensor loop."""
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except RuntimeError:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)


def differences(old: Any, new: Any, name: str = "") -> list[str]:
    """Where two JSON values differ: one line ``dotted.name: OLD in the checkpoint, now NEW`` each.

    Used to refuse resuming a run with other settings (here and by ``scoresde.run``).
    """
    if isinstance(old, dict) and isinstance(new, dict):
        lines = []
        for key in sorted(old.keys() | new.keys()):
            sub = f"{name}.{key}" if name else key
            if key not in old:
                lines.append(f"{sub}: absent in the checkpoint, now {new[key]!r}")
            elif key not in new:
                lines.append(f"{sub}: {old[key]!r} in the checkpoint, now absent")
            else:
                lines.extend(differences(old[key], new[key], sub))
        return lines
    return [] if old == new else [f"{name}: {old!r} in the checkpoint, now {new!r}"]


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


def _rank_states(states: dict[str, Tensor]) -> dict[str, Tensor]:
    """This rank's RNG states among a checkpoint's (rank 0's under the plain names); a rank the
    checkpoint has none for (it was written by fewer processes) keeps its fresh stream."""
    r = distributed.rank()
    if r == 0:
        return states
    suffix = f".rank{r}"
    return {k.removesuffix(suffix): v for k, v in states.items() if k.endswith(suffix)}


def _set_rng_states(
    states: dict[str, Tensor], generator: torch.Generator, device: torch.device
) -> None:
    if not states:
        return
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
        raise ValueError(f"eval_fn must return a dict of numbers; got {type(metrics).__name__}")
    try:
        return {"step": step, **{str(k): float(v) for k, v in metrics.items()}}
    except (TypeError, ValueError) as err:
        raise ValueError(f"eval_fn must return a dict of numbers; got {metrics!r}") from err


def _checkpoint_to_resume(
    path: Path,
    config: dict[str, Any] | None,
    settings: dict[str, Any],
    state: TrainState,
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
    if ckpt.loop["device"] != state.device.type:
        raise ValueError(
            f"{path} was written on device type {ckpt.loop['device']!r} and the model is on "
            f"{state.device.type!r}; the random streams of a run continue only on the same device"
        )
    found = differences(
        {"config": ckpt.config, "train": ckpt.loop["settings"]},
        {"config": config, "train": _json_roundtrip("settings", settings)},
    )
    if found and not allow_config_change:
        raise ConfigMismatchError(path, found)
    for line in found:
        logger.warning("resuming with a changed setting: %s", line)
    return ckpt
