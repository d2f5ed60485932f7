"""The command line: train a score model on a toy 2D density, sample it, measure it, draw it.

    python -m scoresde.run --sde vp|subvp|ve --sampler em|pc|ode [--dataset NAME] [--config FILE]
                           [--workdir DIR] [--mode train|sample|eval|all] [--seed N] [--overwrite]
                           [--config.GROUP.FIELD=VALUE ...]

(also installed as the console script ``scoresde``). The config is ``configs/toy/<sde>.py`` unless
``--config`` names another file; ``--sampler``, ``--dataset`` and ``--seed`` set
``sampling.sampler``, ``data.name`` and ``seed``; ``--config.training.n_iters=2000`` (or
``--config.training.n_iters 2000``) sets any field, with the syntax of
``ml_collections.config_flags``. The whole config is validated before any work starts.

The run directory (default ``runs/<dataset>-<sde>-<sampler>``) receives::

    config.json     the config used (the last invocation's)
    checkpoints/    model, EMA, optimizer, RNG states and loss history (scoresde.checkpoint)
    loss.png        the training loss
    samples.npy     n_samples x 2 float32 samples from the EMA model
    samples.png     fresh data next to the samples
    process.png     the forward diffusion and the reverse process at a few times
    density.png     the model's log-density (probability-flow likelihood) next to the true one
    metrics.json    held-out NLL, entropy, NLL - entropy, sample metrics, score evaluations, times

``--mode train`` trains (resuming from the newest checkpoint), ``sample`` draws samples from the
trained EMA model, ``eval`` measures them and the likelihood, ``all`` (the default) does the three.
A run directory belongs to one run: a config whose data, model, SDE, training settings or seed
differ from those its newest checkpoint was trained with is refused unless ``--overwrite`` discards
the old run. Sampling and evaluation settings, and ``training.n_iters`` (to train longer), may
change between invocations.

Bad input (an unknown flag, value or config field, an invalid value, a corrupt checkpoint) prints
one line, ``scoresde: error: ...``, and exits with status 2 (usage) or 1 (run), without a traceback.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import math
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ml_collections import ConfigDict
from torch import nn

from scoresde import metrics, plotting
from scoresde.checkpoint import Checkpoint, CheckpointError, latest_checkpoint, load_checkpoint
from scoresde.config import (
    EVAL_STREAM,
    REPOSITORY_CONFIGS,
    SAMPLE_STREAM,
    SDES,
    ConfigError,
    build_dataset,
    build_loss,
    build_model,
    build_score_fn,
    build_sde,
    likelihood_options,
    load_config_file,
    sampler_options,
    stream_generator,
    validate_config,
)
from scoresde.datasets.toy import TOY_DATASETS, ToyDensity, batch_sampler
from scoresde.likelihood import log_likelihood
from scoresde.sampling import SAMPLERS, sample
from scoresde.sde import SDE, ScoreFn, batch_broadcast
from scoresde.training import ConfigMismatchError, NonFiniteLossError, train

__all__ = ["main", "parse_args", "resolve_config", "run"]

MODES = ("train", "sample", "eval", "all")
OUTPUTS = ("samples.npy", "samples.png", "process.png", "density.png", "loss.png", "metrics.json")
CHECKPOINTS = "checkpoints"
CONFIG_FILE = "config.json"

#: Training fields that do not change the trained model: they may differ when a run is resumed.
_BOOKKEEPING = ("n_iters", "checkpoint_every", "eval_every")


class UsageError(Exception):
    """Bad command-line input (exit status 2)."""


class RunError(Exception):
    """A run that cannot proceed: a workdir of another run, a missing model (exit status 1)."""


# -- the command line ---------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, raising :class:`UsageError` with its one-line message instead of exiting."""

    def error(self, message: str) -> None:
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="scoresde",
        description="Train, sample and evaluate a score-based model on a toy 2D density.",
        epilog="Any config field can be set with --config.GROUP.FIELD=VALUE, "
        "e.g. --config.training.n_iters=2000.",
    )
    p.add_argument("--sde", choices=tuple(SDES), help="the forward SDE (default: vp)")
    p.add_argument("--sampler", choices=SAMPLERS, help="the sampler (default: the config's)")
    p.add_argument("--dataset", choices=tuple(TOY_DATASETS), help="the toy density")
    p.add_argument("--config", metavar="FILE", help="a config file (default: configs/toy/<sde>.py)")
    p.add_argument("--workdir", metavar="DIR", help="the run directory")
    p.add_argument("--mode", choices=MODES, default="all", help="what to do (default: all)")
    p.add_argument("--seed", type=int, help="the run's seed (default: the config's)")
    p.add_argument(
        "--overwrite", action="store_true", help="discard a different run found in the workdir"
    )
    return p


def parse_args(
    argv: Sequence[str] | None = None,
) -> tuple[argparse.Namespace, list[tuple[str, str]]]:
    """The flags, and the config overrides ``(dotted field, raw value)`` in command-line order.

    Raises:
        UsageError: an unknown flag, a bad flag value, or a malformed override.
    """
    args, rest = _parser().parse_known_args(argv)
    overrides = []
    i = 0
    while i < len(rest):
        item = rest[i]
        if not item.startswith("--config."):
            raise UsageError(f"unrecognized argument: {item}")
        key, sep, value = item[len("--config.") :].partition("=")
        if not sep:
            if i + 1 == len(rest) or rest[i + 1].startswith("--"):
                raise UsageError(f"--config.{key} needs a value (--config.{key}=VALUE)")
            value, i = rest[i + 1], i + 1
        overrides.append((key, value))
        i += 1
    return args, overrides


def _parse_value(raw: str, kind: type | None) -> Any:
    """A command-line string as a value of the field's type; ``None`` or ``none`` clears a field."""
    if raw in ("None", "none"):
        return None
    if kind is bool:
        lowered = raw.lower()
        if lowered not in ("true", "false", "1", "0"):
            raise ValueError("expected true or false")
        return lowered in ("true", "1")
    if kind is int:
        return int(raw)
    if kind is float:
        return float(raw)
    if kind is str:
        return raw
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def apply_override(config: ConfigDict, key: str, raw: str) -> None:
    """Set the dotted field ``key`` of ``config`` from the command-line string ``raw``.

    Raises:
        ConfigError: the field does not exist or the value does not parse as the field's type.
    """
    *groups, name = key.split(".")
    node = config
    for depth, group in enumerate(groups):
        child = node.get(group) if isinstance(node, ConfigDict) else None
        if not isinstance(child, ConfigDict):
            where = ".".join(groups[:depth]) or "the config"
            known = ", ".join(k for k, v in node.items() if isinstance(v, ConfigDict))
            raise ConfigError(key, f"no such field; the groups of {where} are {known}")
        node = child
    if name not in node or isinstance(node[name], ConfigDict):
        fields = ", ".join(k for k, v in node.items() if not isinstance(v, ConfigDict))
        raise ConfigError(key, f"no such field; known here: {fields}")
    kind = node.get_type(name)
    try:
        value = _parse_value(raw, kind)
        node[name] = value
    except (ValueError, TypeError):
        raise ConfigError(key, f"got {raw!r}, expected a value of type {kind.__name__}") from None


def resolve_config(args: argparse.Namespace, overrides: Sequence[tuple[str, str]]) -> ConfigDict:
    """The validated config: the file, then the flags, then the ``--config.*`` overrides."""
    path = (
        Path(args.config) if args.config else REPOSITORY_CONFIGS / "toy" / f"{args.sde or 'vp'}.py"
    )
    if not args.config and not path.is_file():
        raise RunError(
            f"the built-in config {path} is not there (scoresde installed without its source "
            "checkout?); install with 'pip install -e .' from the repository or pass --config FILE"
        )
    config = load_config_file(path)
    flags = {"sde.name": args.sde, "sampling.sampler": args.sampler, "data.name": args.dataset}
    for key, value in flags.items():
        if value is not None:
            group, name = key.split(".")
            config[group][name] = value
    if args.seed is not None:
        config.seed = args.seed
    for key, raw in overrides:
        apply_override(config, key, raw)
    validate_config(config)
    return config


# -- the run directory --------------------------------------------------------------------------


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a config that determines the trained model."""
    training = {k: v for k, v in config["training"].items() if k not in _BOOKKEEPING}
    keep = {k: config[k] for k in ("seed", "data", "model", "sde")}
    return {**keep, "training": training}


def _differences(old: Any, new: Any, name: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            line
            for key in sorted(old.keys() | new.keys())
            for line in _differences(old.get(key), new.get(key), f"{name}.{key}" if name else key)
        ]
    return [] if old == new else [f"{name} {old!r} -> {new!r}"]


def latest_run_checkpoint(workdir: Path) -> Checkpoint | None:
    """The newest checkpoint in ``workdir``, read and verified, or ``None`` when there is none.

    Raises:
        CheckpointError: it is incomplete or corrupt (nothing is changed).
    """
    path = latest_checkpoint(workdir / CHECKPOINTS)
    if path is None:
        return None
    try:
        return load_checkpoint(path)
    except CheckpointError as err:
        raise CheckpointError(
            err.path, f"{err.reason}; nothing was changed (move {path} aside, or pass --overwrite)"
        ) from err


def check_same_run(checkpoint: Checkpoint, config: ConfigDict, workdir: Path) -> None:
    """Refuse to continue a run whose checkpoint was trained with a different config.

    Raises:
        RunError: the checkpoint's data, model, SDE, training settings or seed differ.
    """
    diff = _differences(checkpoint.config, _identity(json.loads(config.to_json())))
    if diff:
        raise RunError(
            f"{workdir} holds a run with a different config ({'; '.join(diff)}); pass "
            "--overwrite to discard it, or choose another --workdir"
        )


def discard_run(workdir: Path) -> None:
    """Delete the checkpoints and outputs of a run in ``workdir`` (other files are left alone)."""
    shutil.rmtree(workdir / CHECKPOINTS, ignore_errors=True)
    for name in (*OUTPUTS, CONFIG_FILE):
        (workdir / name).unlink(missing_ok=True)


def _jsonable(value: Any) -> Any:
    """``value`` with non-finite floats as ``None`` (JSON has no inf or NaN)."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _update_metrics(workdir: Path, sections: dict[str, Any], drop: Sequence[str] = ()) -> None:
    path = workdir / "metrics.json"
    current = json.loads(path.read_text()) if path.is_file() else {}
    for key in drop:
        current.pop(key, None)
    current.update(_jsonable(sections))
    path.write_text(json.dumps(current, indent=2, allow_nan=False) + "\n")


# -- the stages ---------------------------------------------------------------------------------


def train_stage(
    config: ConfigDict, workdir: Path, progress: bool
) -> tuple[nn.Module, dict[str, Any]]:
    """Train (or resume) and draw the loss; the EMA model and the training metrics."""
    c = config.training
    sde = build_sde(config)
    model = build_model(config)
    eval_every = c.eval_every or None
    dataset = build_dataset(config)
    held_out = dataset.sample(c.batch_size, stream_generator(config.seed, EVAL_STREAM))
    loss_fn = build_loss(config, sde)

    def eval_fn(ema_model: nn.Module, step: int) -> dict[str, float]:
        with torch.no_grad():
            loss = loss_fn(ema_model, held_out, stream_generator(config.seed, EVAL_STREAM))
        return {"ema_held_out_loss": float(loss)}

    result = train(
        model,
        loss_fn,
        batch_sampler(dataset, c.batch_size),
        n_iters=c.n_iters,
        lr=c.lr,
        seed=config.seed,
        warmup=c.warmup,
        grad_clip=c.grad_clip,
        ema_decay=c.ema_decay,
        workdir=workdir,
        checkpoint_every=c.checkpoint_every,
        eval_every=eval_every,
        eval_fn=eval_fn if eval_every else None,
        config=_identity(json.loads(config.to_json())),
        progress=progress,
    )
    steps = np.arange(1, len(result.losses) + 1)
    plotting.plot_loss(steps, result.losses).savefig(workdir / "loss.png", dpi=120)
    tail = result.losses[-min(len(result.losses), 500) :]
    section = {
        "steps": result.step,
        "steps_this_run": result.steps_run,
        "final_loss_mean_last_500": float(np.mean(tail)),
        "evals": result.evals,
        "wall_time_s": result.wall_time,
    }
    return result.ema_model, section


def ema_model(config: ConfigDict, checkpoint: Checkpoint) -> nn.Module:
    """The network of ``config`` with the EMA weights of ``checkpoint``, ready to sample."""
    model = build_model(config)
    model.load_state_dict(checkpoint.ema)
    return model.eval().requires_grad_(False)


def _forward_marginals(
    sde: SDE, x0: torch.Tensor, times: torch.Tensor, generator: torch.Generator
) -> list[torch.Tensor]:
    """Samples of the forward process ``x_t ~ N(mean(x0, t), std(t)^2 I)`` at each of ``times``."""
    out = []
    for t in times.tolist():
        mean, std = sde.marginal_prob(x0, torch.full((x0.shape[0],), t, dtype=x0.dtype))
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        out.append(mean + batch_broadcast(std, x0) * noise)
    return out


def sample_stage(config: ConfigDict, workdir: Path, score_fn: ScoreFn) -> dict[str, Any]:
    """Draw samples, save them, draw them next to data and the diffusion process."""
    c = config.sampling
    sde, dataset = build_sde(config), build_dataset(config)
    generator = stream_generator(config.seed, SAMPLE_STREAM)
    eps = sde.sampling_eps if c.eps is None else c.eps
    # Geometric spacing from T down to eps: the distribution changes fastest near eps.
    times = np.geomspace(sde.T, eps, config.eval.n_process_times).tolist()
    began = time.perf_counter()
    info = sample(
        sde,
        score_fn,
        (c.n_samples, dataset.dim),
        generator=generator,
        trajectory_times=times,
        return_info=True,
        **sampler_options(config),
    )
    wall = time.perf_counter() - began
    samples = info.samples.to(torch.float32)
    np.save(workdir / "samples.npy", samples.numpy())
    data = dataset.sample(c.n_samples, generator)
    title = f"{config.data.name}, {config.sde.name} SDE, {c.sampler} sampler"
    plotting.plot_samples(data, samples, title=title).savefig(workdir / "samples.png", dpi=120)
    forward = _forward_marginals(sde, data, info.times, generator)
    plotting.plot_process(forward, list(info.trajectory), info.times.tolist()).savefig(
        workdir / "process.png", dpi=120
    )
    return {
        "sampler": c.sampler,
        "predictor": c.predictor if c.sampler == "pc" else None,
        "corrector": c.corrector if c.sampler == "pc" else None,
        "n_samples": c.n_samples,
        "nfe": info.nfe,
        "wall_time_s": wall,
    }


def _sample_quality(dataset: ToyDensity, samples: torch.Tensor, entropy: float, generator) -> dict:
    """Distances of ``samples`` to fresh data and, where the density is known, their fit to it."""
    fresh = dataset.sample(samples.shape[0], generator)
    out: dict[str, Any] = {
        "n": samples.shape[0],
        "energy_distance": metrics.energy_distance(samples, fresh),
        "sliced_wasserstein": metrics.sliced_wasserstein(samples, fresh, generator=generator),
    }
    if dataset.has_exact_log_prob:
        logp = dataset.log_prob(samples.to(torch.float64))
        cross_entropy, stderr = metrics.mean_and_stderr(-logp)
        out["cross_entropy"] = cross_entropy
        out["cross_entropy_stderr"] = stderr
        out["cross_entropy_minus_entropy"] = cross_entropy - entropy
        out["fraction_in_support"] = metrics.support_fraction(logp)
    mixture = getattr(dataset, "mixture", None)
    if mixture is not None:
        weights = mixture.mode_weights(samples.to(torch.float64))
        out["mode_weights"] = weights.tolist()
        out["max_mode_weight_error"] = float((weights - mixture.weights).abs().max())
    return out


def eval_stage(config: ConfigDict, workdir: Path, score_fn: ScoreFn) -> dict[str, Any]:
    """Held-out NLL against the entropy, the model's density on a grid, and the sample metrics."""
    sde, dataset = build_sde(config), build_dataset(config)
    generator = stream_generator(config.seed, EVAL_STREAM)
    options = likelihood_options(config)
    x = dataset.sample(config.eval.n_eval, generator)
    began = time.perf_counter()
    result = log_likelihood(sde, score_fn, x, generator=generator, return_info=True, **options)
    nll_time = time.perf_counter() - began
    nll_per_point = -result.logp.to(torch.float64)
    nll, nll_se = metrics.mean_and_stderr(nll_per_point)
    entropy, entropy_se = dataset.entropy()
    if dataset.has_exact_log_prob:  # paired on the same points: KL(data || model), small variance
        gap, gap_se = metrics.mean_and_stderr(dataset.log_prob(x.to(torch.float64)) - result.logp)
    else:
        gap, gap_se = nll - entropy, math.hypot(nll_se, entropy_se)
    likelihood = {
        "n_eval": config.eval.n_eval,
        "nll": nll,
        "nll_stderr": nll_se,
        "nll_median": float(nll_per_point.median()),
        "nll_max": float(nll_per_point.max()),
        "entropy": entropy,
        "entropy_stderr": entropy_se,
        "nll_minus_entropy": gap,
        "nll_minus_entropy_stderr": gap_se,
        "nfe": result.nfe,
        "wall_time_s": nll_time,
    }

    lim = 1.1 * float(x.abs().max())
    g = config.eval.density_grid
    axis = torch.linspace(-lim, lim, g)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    grid = torch.stack([xs.flatten(), ys.flatten()], dim=1)
    began = time.perf_counter()
    grid_result = log_likelihood(
        sde, score_fn, grid, generator=generator, return_info=True, **options
    )
    density_time = time.perf_counter() - began
    truth = (
        dataset.log_prob(grid.to(torch.float64)).reshape(g, g)
        if dataset.has_exact_log_prob
        else None
    )
    plotting.plot_density((-lim, lim, -lim, lim), grid_result.logp.reshape(g, g), truth).savefig(
        workdir / "density.png", dpi=120
    )
    sections = {
        "likelihood": likelihood,
        "density_grid": {"points": g * g, "nfe": grid_result.nfe, "wall_time_s": density_time},
    }
    samples_path = workdir / "samples.npy"
    if samples_path.is_file():
        samples = torch.from_numpy(np.load(samples_path))
        sections["samples"] = _sample_quality(dataset, samples, entropy, generator)
    return sections


def run(
    config: ConfigDict,
    workdir: Path,
    *,
    mode: str = "all",
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Do ``mode`` for the validated ``config`` in ``workdir``; the metrics written, as a dict.

    Everything that can refuse the run (a corrupt checkpoint, a checkpoint of another run, no
    trained model for ``sample`` and ``eval``) is checked before anything is written.

    Raises:
        RunError, CheckpointError, ConfigMismatchError, NonFiniteLossError: see :func:`main`.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    trains = mode in ("train", "all")
    if overwrite and not trains:
        raise RunError(
            f"--overwrite discards the trained model, so it needs --mode train or all, not {mode}"
        )
    began = time.perf_counter()
    checkpoint = None if overwrite else latest_run_checkpoint(workdir)
    if checkpoint is not None:
        check_same_run(checkpoint, config, workdir)
    if not trains and checkpoint is None:
        raise RunError(f"no trained model in {workdir / CHECKPOINTS}; run with --mode train first")
    model = None if trains else ema_model(config, checkpoint)
    if overwrite:
        discard_run(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / CONFIG_FILE).write_text(config.to_json(indent=2) + "\n")
    run_info = {"dataset": config.data.name, "sde": config.sde.name, "seed": config.seed}
    _update_metrics(workdir, {"run": run_info})
    if trains:
        model, section = train_stage(config, workdir, progress)
        _update_metrics(workdir, {"training": section})
    score_fn = build_score_fn(config, build_sde(config), model)
    if mode in ("sample", "all"):
        section = sample_stage(config, workdir, score_fn)
        _update_metrics(workdir, {"sampling": section}, drop=["samples"])
    if mode in ("eval", "all"):
        _update_metrics(workdir, eval_stage(config, workdir, score_fn))
    run_info.update(mode=mode, wall_time_s=time.perf_counter() - began)
    _update_metrics(workdir, {"run": run_info})
    return json.loads((workdir / "metrics.json").read_text())


# -- the summary and the entry point ------------------------------------------------------------


def _fmt(value: float | None, stderr: float | None = None, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.{digits}f}"
    return text if stderr is None else f"{text} +- {stderr:.{digits}f}"


def summary(result: dict[str, Any], workdir: Path) -> str:
    """A few lines on what the run measured and where its files are."""
    r = result["run"]
    lines = [
        f"scoresde: {r['dataset']}, {r['sde']} SDE, mode {r['mode']}, {r['wall_time_s']:.1f} s"
    ]
    if "training" in result:
        t = result["training"]
        lines.append(
            f"  training      {t['steps']} steps, final loss {_fmt(t['final_loss_mean_last_500'])}"
        )
    if "sampling" in result:
        s = result["sampling"]
        what = f"{s['sampler']}, {s['n_samples']} samples"
        lines.append(f"  sampling      {what}, {s['nfe']} score evaluations")
    if "likelihood" in result:
        lk = result["likelihood"]
        nll = _fmt(lk["nll"], lk["nll_stderr"])
        lines.append(f"  NLL           {nll} nats ({lk['nfe']} score evaluations)")
        lines.append(f"  entropy       {_fmt(lk['entropy'], lk['entropy_stderr'])} nats")
        gap, gap_se = lk["nll_minus_entropy"], lk["nll_minus_entropy_stderr"]
        lines.append(f"  NLL - entropy {_fmt(gap, gap_se)} nats")
    if "samples" in result:
        q = result["samples"]
        parts = [f"energy distance {_fmt(q['energy_distance'])}"]
        if "cross_entropy_minus_entropy" in q:
            parts.append(f"cross-entropy - entropy {_fmt(q['cross_entropy_minus_entropy'])}")
            parts.append(f"in support {q['fraction_in_support']:.3f}")
        if "max_mode_weight_error" in q:
            parts.append(f"max mode-weight error {q['max_mode_weight_error']:.3f}")
        lines.append("  samples       " + ", ".join(parts))
    lines.append(f"  files in {workdir}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``scoresde`` command; returns the exit status (0 success, 1 run error, 2 bad input)."""
    logging.basicConfig(level=logging.WARNING, format="scoresde: %(message)s")
    try:
        args, overrides = parse_args(argv)
        config = resolve_config(args, overrides)
    except (UsageError, ConfigError) as err:
        print(f"scoresde: error: {err}", file=sys.stderr)
        return 2
    except RunError as err:
        print(f"scoresde: error: {err}", file=sys.stderr)
        return 1
    default = f"runs/{config.data.name}-{config.sde.name}-{config.sampling.sampler}"
    workdir = Path(args.workdir or default)
    try:
        result = run(config, workdir, mode=args.mode, overwrite=args.overwrite)
    except (RunError, CheckpointError, ConfigMismatchError, NonFiniteLossError) as err:
        print(f"scoresde: error: {err}", file=sys.stderr)
        return 1
    print(summary(result, workdir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
