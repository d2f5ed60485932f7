"""Run configurations: load ml-collections config files, validate them, build a run's parts.

A config is an :class:`ml_collections.ConfigDict` with a top-level ``seed`` and the groups ``data``,
``model``, ``sde``, ``training``, ``sampling`` and ``eval`` (``configs/default_toy.py`` sets every
field). :data:`FIELDS` lists every field with the values it accepts; :func:`validate_config` checks
a whole config against it and tries its settings together, so that a bad value is rejected before
any work starts, with a one-line :class:`ConfigError` naming the field, the value and what is
allowed.

The ``build_*`` functions turn a validated config into the objects of a run (the SDE, the dataset,
the network, its score function and the training loss); :func:`sampler_options` and
:func:`likelihood_options` are the config's arguments to :func:`scoresde.sample` and
:func:`scoresde.log_likelihood`. A new config field goes into ``configs/default_toy.py`` and
:data:`FIELDS`.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ml_collections import ConfigDict

from scoresde.datasets.toy import TOY_DATASETS, ToyDensity, get_dataset
from scoresde.likelihood import TRACES, log_likelihood
from scoresde.losses import LOSSES, REDUCTIONS, WEIGHTINGS, get_loss_fn
from scoresde.nets import MODELS, get_model
from scoresde.nets.mlp import EMBEDDINGS
from scoresde.odeint import ODE_METHODS
from scoresde.sampling import CORRECTORS, PREDICTORS, SAMPLERS, sample
from scoresde.score import PARAMETERIZATIONS, get_score_fn
from scoresde.sde import SDE, VESDE, VPSDE, ScoreFn, SubVPSDE

__all__ = [
    "ConfigError",
    "FIELDS",
    "SDES",
    "REPOSITORY_CONFIGS",
    "load_config_file",
    "validate_config",
    "sampler_options",
    "likelihood_options",
    "iter_fields",
    "build_sde",
    "build_dataset",
    "build_model",
    "build_score_fn",
    "build_loss",
    "stream_generator",
]

#: The ``configs/`` directory of a source checkout (where ``pip install -e .`` leaves it).
REPOSITORY_CONFIGS = Path(__file__).resolve().parents[1] / "configs"

SDES: dict[str, Callable[[ConfigDict], SDE]] = {
    "vp": lambda c: VPSDE(beta_min=c.beta_min, beta_max=c.beta_max, N=c.N, schedule=c.schedule),
    "subvp": lambda c: SubVPSDE(beta_min=c.beta_min, beta_max=c.beta_max, N=c.N),
    "ve": lambda c: VESDE(sigma_min=c.sigma_min, sigma_max=c.sigma_max, N=c.N),
}
"""SDE name -> constructor from the config's ``sde`` group."""


class ConfigError(ValueError):
    """A config that cannot run: a bad value, an unknown or missing field, settings that do not fit
    together, or a bad config file. Its message is one line.

    Attributes:
        field: the dotted field or group at fault, e.g. ``"training.lr"`` or ``"sampling"``
            (``None`` for the config file itself).
    """

    def __init__(self, field: str | None, message: str):
        self.field = field
        where = "config file" if field is None else f"config.{field}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Rule:
    """What one config field accepts: ``accepts(value)`` and the same in words."""

    accepts: Callable[[Any], bool]
    allowed: str


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _integer(minimum: int) -> Rule:
    return Rule(lambda v: _is_int(v) and v >= minimum, f"an integer >= {minimum}")


def _even_integer(minimum: int) -> Rule:
    return Rule(
        lambda v: _is_int(v) and v >= minimum and v % 2 == 0, f"an even integer >= {minimum}"
    )


def _positive() -> Rule:
    return Rule(lambda v: _is_number(v) and v > 0, "a finite number > 0")


def _unit_interval() -> Rule:
    return Rule(lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)")


def _boolean() -> Rule:
    return Rule(lambda v: isinstance(v, bool), "true or false")


def _choice(names: Iterator[str] | tuple[str, ...] | list[str]) -> Rule:
    names = tuple(names)
    return Rule(lambda v: v in names, "one of " + ", ".join(map(repr, names)))


def _optional(rule: Rule) -> Rule:
    return Rule(lambda v: v is None or rule.accepts(v), f"None or {rule.allowed}")


FIELDS: dict[str, Rule] = {
    "seed": _integer(0),
    "data.name": _choice(TOY_DATASETS),
    "model.name": _choice(MODELS),
    "model.hidden": _integer(1),
    "model.depth": _integer(1),
    "model.embedding": _choice(EMBEDDINGS),
    "model.embed_dim": _even_integer(2),
    "model.fourier_scale": _positive(),
    "model.time_scale": _optional(_positive()),
    "model.parameterization": _choice(PARAMETERIZATIONS),
    "model.input_scaling": _boolean(),
    "model.data_std": _optional(_positive()),
    "sde.name": _choice(SDES),
    "sde.beta_min": _positive(),
    "sde.beta_max": _positive(),
    "sde.sigma_min": _positive(),
    "sde.sigma_max": _positive(),
    "sde.N": _integer(2),
    "sde.schedule": _choice(("linear", "cosine")),
    "training.batch_size": _integer(1),
    "training.n_iters": _integer(1),
    "training.lr": _positive(),
    "training.warmup": _integer(0),
    "training.grad_clip": _optional(_positive()),
    "training.ema_decay": _unit_interval(),
    "training.loss": _choice(LOSSES),
    "training.weighting": _choice(WEIGHTINGS),
    "training.importance_sampling": _boolean(),
    "training.reduce": _choice(REDUCTIONS),
    "training.eps": _positive(),
    "training.checkpoint_every": _integer(1),
    "training.eval_every": _integer(0),
    "sampling.sampler": _choice(SAMPLERS),
    "sampling.predictor": _choice(PREDICTORS),
    "sampling.corrector": _choice(CORRECTORS),
    "sampling.snr": _positive(),
    "sampling.n_steps": _integer(0),
    "sampling.num_steps": _optional(_integer(1)),
    "sampling.eps": _optional(_positive()),
    "sampling.denoise": _boolean(),
    "sampling.method": _choice(ODE_METHODS),
    "sampling.rtol": _positive(),
    "sampling.atol": _positive(),
    "sampling.n_samples": _integer(2),
    "eval.n_eval": _integer(2),
    "eval.eps": _positive(),
    "eval.method": _choice(ODE_METHODS),
    "eval.rtol": _positive(),
    "eval.atol": _positive(),
    "eval.trace": _choice(TRACES),
    "eval.n_probes": _integer(1),
    "eval.density_grid": _integer(2),
    "eval.n_process_times": _integer(2),
}
"""Every config field (dotted name) and the values it accepts."""


def load_config_file(path: str | Path) -> ConfigDict:
    """Import the Python config file ``path`` and return its ``get_config()``.

    Config files may import shared defaults from the repository's ``configs`` package (``from
    configs.default_toy import get_default_configs``): the directory holding ``configs/`` is on
    ``sys.path`` while the file is imported.

    Raises:
        ConfigError: the file is missing, is not Python, fails when run, or has no ``get_config()``
            returning a ``ConfigDict``.
    """
    path = Path(path)
    if path.suffix != ".py" or not path.is_file():
        raise ConfigError(None, f"got {str(path)!r}, expected an existing Python file (.py)")
    spec = importlib.util.spec_from_file_location(f"_scoresde_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    root = str(REPOSITORY_CONFIGS.parent)
    added = root not in sys.path
    if added:
        sys.path.insert(0, root)
    try:
        spec.loader.exec_module(module)
        get_config = getattr(module, "get_config", None)
        config = get_config() if callable(get_config) else None
    except Exception as err:  # the file is user code: any error in it is a bad config file
        failure = f"{type(err).__name__}: {err}"
        raise ConfigError(None, f"{str(path)!r} failed: {failure}") from err
    finally:
        if added:
            sys.path.remove(root)
    if not isinstance(config, ConfigDict):
        raise ConfigError(None, f"{str(path)!r} must define get_config() returning a ConfigDict")
    return config


def iter_fields(config: ConfigDict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted name, value)`` of every leaf field of ``config``, depth first."""
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, ConfigDict):
            yield from iter_fields(value, f"{name}.")
        else:
            yield name, value


def validate_config(config: ConfigDict) -> None:
    """Check ``config`` before any work; raise on the first problem.

    First every field against :data:`FIELDS` (unknown, missing, wrong type or out of range), then
    the settings together: the cosine schedule is a VP option; the SDE, the network and the loss
    are built; and the sampler and the likelihood are run once with the config's settings on one
    point with the score ``-x`` (a few milliseconds), so that any combination they refuse (a
    predictor the SDE lacks, a time grid the chain cannot follow, ``eps`` outside ``(0, T)``) is
    refused now, by their own checks, rather than after training.

    Raises:
        ConfigError: naming the field (or group) and, for a field, its value and what it accepts.
    """
    present = dict(iter_fields(config))
    for name, value in present.items():
        rule = FIELDS.get(name)
        if rule is None:
            group = name.rpartition(".")[0]
            known = ", ".join(f for f in FIELDS if f.rpartition(".")[0] == group)
            raise ConfigError(
                name, f"got {value!r}, but there is no such field; known here: {known}"
            )
        if not rule.accepts(value):
            raise ConfigError(name, f"got {value!r}, expected {rule.allowed}")
    missing = [name for name in FIELDS if name not in present]
    if missing:
        raise ConfigError(missing[0], "missing from the config")
    if config.sde.schedule != "linear" and config.sde.name != "vp":
        raise ConfigError(
            "sde.schedule", f"got {config.sde.schedule!r}, expected 'linear' for sde.name = "
            f"{config.sde.name!r} (the cosine schedule is a VP option)"
        )  # fmt: skip
    checks = (
        ("sde", lambda: build_sde(config)),
        ("model", lambda: build_model(config)),
        ("training", lambda: _score_loss(config, build_sde(config))),
        ("sampling", lambda: _try_sampler(config)),
        ("eval", lambda: _try_likelihood(config)),
    )
    for group, check in checks:
        try:
            check()
        except ValueError as err:
            raise ConfigError(group, str(err)) from err


def _gaussian_score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The score ``-x`` of ``N(0, I)``: finite everywhere, for trying out a sampler."""
    return -x


def sampler_options(config: ConfigDict) -> dict[str, Any]:
    """The keyword arguments of :func:`scoresde.sample` set by ``config.sampling``."""
    c = config.sampling
    own = [name for name in SAMPLERS[c.sampler].options if name in c]
    return {name: c[name] for name in ("sampler", "num_steps", "eps", "denoise", *own)}


def likelihood_options(config: ConfigDict) -> dict[str, Any]:
    """The keyword arguments of :func:`scoresde.log_likelihood` set by ``config.eval``."""
    c = config.eval
    return {name: c[name] for name in ("eps", "method", "rtol", "atol", "trace", "n_probes")}


def _try_sampler(config: ConfigDict) -> None:
    """Run the configured sampler on one point (validation only)."""
    shape = (1, build_dataset(config).dim)
    generator = torch.Generator().manual_seed(0)
    sample(
        build_sde(config), _gaussian_score, shape, generator=generator, **sampler_options(config)
    )


def _try_likelihood(config: ConfigDict) -> None:
    """Run the configured likelihood on one point (validation only)."""
    x = torch.zeros(1, build_dataset(config).dim)
    generator = torch.Generator().manual_seed(0)
    log_likelihood(
        build_sde(config), _gaussian_score, x, generator=generator, **likelihood_options(config)
    )


def build_sde(config: ConfigDict) -> SDE:
    """The forward SDE of ``config.sde``."""
    return SDES[config.sde.name](config.sde)


def build_dataset(config: ConfigDict) -> ToyDensity:
    """The toy dataset ``config.data.name``."""
    return get_dataset(config.data.name)


#: The random streams of a run besides training's (which :func:`scoresde.training.train` seeds with
#: ``seed`` itself): model initialisation, the data-std estimate, sampling, evaluation.
INIT_STREAM, DATA_STD_STREAM, SAMPLE_STREAM, EVAL_STREAM = 1, 2, 3, 4


def stream_generator(seed: int, stream: int) -> torch.Generator:
    """A generator for the random stream ``stream`` of a run with ``seed``.

    Its seed is drawn by :class:`numpy.random.SeedSequence` from ``(seed, stream)``, so streams of
    one run, and the same stream of runs with nearby seeds, are independent.
    """
    state = np.random.SeedSequence([seed, stream]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def data_std(config: ConfigDict) -> float:
    """``model.data_std``, or where it is None the per-feature std of 10,000 data points.

    The points are drawn from a generator seeded with ``seed``, so the value is part of the run.
    """
    if config.model.data_std is not None:
        return float(config.model.data_std)
    points = build_dataset(config).sample(10_000, stream_generator(config.seed, DATA_STD_STREAM))
    return float(points.std())


def build_model(config: ConfigDict) -> torch.nn.Module:
    """The network of ``config.model``, initialised from the run's seed.

    A sinusoidal time embedding embeds ``time_scale * t``; ``model.time_scale = None`` means
    ``(N - 1) / T``, so that the SDE's discrete step ``i`` is embedded as the integer ``i``.
    """
    c = config.model
    sde = build_sde(config)
    return get_model(
        c.name,
        dim=build_dataset(config).dim,
        hidden=c.hidden,
        depth=c.depth,
        embedding=c.embedding,
        embed_dim=c.embed_dim,
        fourier_scale=c.fourier_scale,
        time_scale=(sde.N - 1) / sde.T if c.time_scale is None else c.time_scale,
        generator=stream_generator(config.seed, INIT_STREAM),
    )


def build_score_fn(config: ConfigDict, sde: SDE, model: Callable) -> ScoreFn:
    """The score function of ``model`` under ``config.model.parameterization``."""
    c = config.model
    return get_score_fn(
        sde,
        model,
        c.parameterization,
        input_scaling=c.input_scaling,
        data_std=data_std(config),
    )


def _score_loss(config: ConfigDict, sde: SDE) -> Callable:
    c = config.training
    if c.loss == "dsm":
        options = dict(
            weighting=c.weighting,
            importance_sampling=c.importance_sampling,
            reduce=c.reduce,
            eps=c.eps,
        )
    else:
        options = dict(reduce=c.reduce)
    return get_loss_fn(sde, kind=c.loss, **options)


def build_loss(config: ConfigDict, sde: SDE) -> Callable:
    """The training loss ``loss_fn(model, batch, generator)`` of ``config.training``.

    It wraps the score-level loss of :func:`scoresde.losses.get_loss_fn` (``kind = training.loss``;
    the denoising-score-matching options ``weighting``, ``importance_sampling``, ``reduce`` and
    ``eps`` apply to ``"dsm"``, ``reduce`` alone to ``"smld"`` and ``"ddpm"``) around the model's
    score function.
    """
    score_loss = _score_loss(config, sde)
    std = data_std(config)
    c = config.model

    def loss_fn(
        model: torch.nn.Module, batch: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        score_fn = get_score_fn(
            sde, model, c.parameterization, input_scaling=c.input_scaling, data_std=std
        )
        return score_loss(score_fn, batch, generator)

    return loss_fn
