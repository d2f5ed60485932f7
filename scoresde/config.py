"""Run configurations: load ml-collections config files and check every field.

A config is an :class:`ml_collections.ConfigDict` with a top-level ``seed`` and the groups ``data``,
``model``, ``sde``, ``training``, ``sampling`` and ``eval`` (``configs/default_toy.py`` sets every
field). :data:`FIELDS` lists every field with the values it accepts, as
:class:`scoresde.validation.Rule` objects, so a refusal reads like every other one in the library::

    config.training.lr must be a number in (0, 1]; got 1e+308

:func:`validate_config` checks a whole config field by field. Whether the settings work *together*
(a predictor the SDE lacks, a loss that needs a discrete chain, sizes that do not fit in memory) is
checked by :func:`scoresde.pipeline.build`, which builds the run's parts from the config and tries
them, so that every refusal comes before any work.

A config file is Python: loading it runs its code. Load only files you trust.

The upper bounds below are not tuning advice: they keep every float32 quantity of a run finite with
a wide margin (``sigma_max^2``, ``B(t) = int beta``, Adam's step ``lr``) and torchdiffeq's step-size
control above its underflow (``rtol``, ``atol``). A new config field goes into
``configs/default_toy.py`` and :data:`FIELDS`; a new SDE into :data:`SDES` (its constructor's
keyword arguments are read from the ``sde`` group by name).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ml_collections import ConfigDict

from scoresde.datasets import DATASETS
from scoresde.inpainting import METHODS as INPAINT_METHODS
from scoresde.likelihood import TRACES
from scoresde.losses import LOSSES, REDUCTIONS, WEIGHTINGS
from scoresde.nets.mlp import EMBEDDINGS
from scoresde.odeint import ODE_METHODS
from scoresde.registry import Registry
from scoresde.sampling import GRIDS, SAMPLERS
from scoresde.score import PARAMETERIZATIONS
from scoresde.sde import SDE, VESDE, VPSDE, SubVPSDE
from scoresde.training import LR_SCHEDULES, PRECISIONS
from scoresde.validation import (
    Rule,
    boolean,
    choice,
    integer,
    integers,
    number,
    optional,
    positive,
    refusal,
)

__all__ = [
    "ConfigError",
    "FIELDS",
    "GUIDANCES",
    "SDES",
    "REPOSITORY_CONFIGS",
    "load_config_file",
    "validate_config",
    "iter_fields",
    "field_rule",
    "sde_options",
    "sampler_option_types",
    "check_sampling_overrides",
    "trained_fields",
]

#: The ``configs/`` directory of a source checkout (where ``pip install -e .`` leaves it).
REPOSITORY_CONFIGS = Path(__file__).resolve().parents[1] / "configs"

SDES: Registry[type[SDE]] = Registry("sde", {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE})
"""SDE name -> constructor; :func:`sde_options` gives it the ``sde`` fields it takes by name."""


GUIDANCES = ("none", "classifier", "cfg")
"""``sampling.guidance``: none, classifier guidance (a noisy classifier trained in the run) or
classifier-free guidance (a conditional network, ``training.p_uncond > 0``);
:mod:`scoresde.conditioning`."""


class ConfigError(ValueError):
    """A config that cannot run: a bad value, an unknown or missing field, settings that do not fit
    together, or a bad config file. Its message is one line.

    Attributes:
        field: the dotted field or group at fault, e.g. ``"training.lr"`` or ``"sampling"``
            (``None`` for the config file itself).
    """

    def __init__(self, field: str | None, message: str):
        self.field = field
        super().__init__(message)

    @classmethod
    def refusing(cls, field: str, allowed: str, value: Any) -> ConfigError:
        """``config.FIELD must be ALLOWED; got VALUE``, the library's one message form."""
        return cls(field, refusal(f"config.{field}", allowed, value))

    @classmethod
    def in_group(cls, group: str, reason: str) -> ConfigError:
        """``config.GROUP: REASON``, for settings of a group that do not fit together."""
        return cls(group, f"config.{group}: {reason}")


def _tolerance() -> Rule:
    return number(1e-8, 1.0)


#: What a sampler option of each type accepts in the config, before the sampler checks its value.
_OPTION_RULES = {
    bool: boolean(),
    int: integer(),
    float: number(),
    str: Rule(lambda v: isinstance(v, str), "a string"),
}


def sampler_option_types() -> dict[str, type]:
    """Every option of every registered sampler, and its type (that of its default).

    Each is a field of the ``sampling`` group, ``None`` by default: the sampler's own default.
    The sampler itself checks the value (:func:`scoresde.pipeline.build` tries it), so a new
    sampler's options reach the config and the command line with no change here.
    """
    types: dict[str, type] = {}
    for spec in SAMPLERS.values():
        for name, default in spec.options.items():
            types.setdefault(name, type(default))
    return types


def _sampler_option_rule(name: str, kind: type) -> Rule:
    """The rule of the ``sampling`` field of a sampler option: ``None`` or a value of its type, or
    of the names a sampler lists for it (:attr:`~scoresde.sampling.SamplerSpec.choices`)."""
    names = [n for spec in SAMPLERS.values() for n in spec.choices.get(name, ())]
    return optional(choice(dict.fromkeys(names)) if names else _OPTION_RULES[kind])


FIELDS: dict[str, Rule | Registry] = {
    "seed": integer(0, 2**64 - 1),
    "threads": integer(0, 1024),
    "device": Rule(
        lambda v: isinstance(v, str) and re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", v) is not None,
        "'auto', 'cpu', 'cuda' or 'cuda:N'",
    ),
    "data.name": DATASETS,
    "data.path": optional(Rule(lambda v: isinstance(v, str) and v.strip() != "", "a path")),
    "model.name": choice(("mlp", "unet")),
    "model.hidden": integer(1),  # mlp
    "model.depth": integer(1),  # mlp
    "model.ch": integer(1),  # unet
    "model.ch_mult": integers(1, empty=False),  # unet
    "model.num_res_blocks": integer(1),  # unet
    "model.attn_resolutions": integers(1, empty=True),  # unet
    "model.dropout": number(0, 1, high_open=True),  # unet
    "model.embedding": choice(EMBEDDINGS),
    "model.embed_dim": integer(2, even=True),
    "model.fourier_scale": positive(),
    "model.time_scale": optional(positive()),
    "model.parameterization": choice(PARAMETERIZATIONS),
    "model.input_scaling": boolean(),
    "model.data_std": optional(positive()),
    "sde.name": SDES,
    "sde.beta_min": number(0, 1000, low_open=True),
    "sde.beta_max": number(0, 1000, low_open=True),
    "sde.sigma_min": number(1e-6, 1e4),
    "sde.sigma_max": number(1e-6, 1e4),
    "sde.N": integer(2, 100_000),
    "sde.schedule": choice(("linear", "cosine")),
    "training.batch_size": integer(1),
    "training.n_iters": integer(1),
    "training.lr": number(0, 1, low_open=True),
    "training.warmup": integer(0),
    "training.lr_schedule": choice(LR_SCHEDULES),
    "training.grad_clip": optional(positive()),
    "training.ema_decay": number(0, 1, high_open=True),
    "training.ema_warmup": boolean(),
    "training.loss": choice(LOSSES),
    "training.weighting": choice(WEIGHTINGS),
    "training.importance_sampling": boolean(),
    "training.reduce": choice(REDUCTIONS),
    "training.eps": positive(),
    "training.checkpoint_every": integer(1),
    "training.eval_every": integer(0),
    "training.precision": choice(PRECISIONS),
    "training.p_uncond": number(0, 1, high_open=True),
    "sampling.sampler": SAMPLERS,
    "sampling.num_steps": optional(integer(1, 100_000)),
    "sampling.grid": optional(choice(GRIDS)),
    "sampling.eps": optional(positive()),
    "sampling.rho": positive(),
    "sampling.sigma_max": optional(positive()),
    "sampling.sigma_min": optional(positive()),
    "sampling.denoise": boolean(),
    "sampling.n_samples": integer(2),
    "sampling.label": optional(integer(0)),
    "sampling.guidance": choice(GUIDANCES),
    "sampling.guidance_scale": number(0, 1000),
    "sampling.inpaint": Rule(lambda v: isinstance(v, str) and v.strip() != "", "a mask"),
    "sampling.inpaint_method": choice(INPAINT_METHODS),
    "sampling.particles": integer(1, 100_000),
    "sampling.twist": boolean(),
    **{
        f"sampling.{name}": _sampler_option_rule(name, kind)
        for name, kind in sampler_option_types().items()
    },
    "classifier.n_iters": integer(1),
    "classifier.lr": number(0, 1, low_open=True),
    "eval.n_eval": integer(2),
    "eval.n_check": integer(0),
    "eval.n_curve": integer(0),
    "eval.eps": positive(),
    "eval.method": choice(ODE_METHODS),
    "eval.rtol": _tolerance(),
    "eval.atol": _tolerance(),
    "eval.trace": choice(TRACES),
    "eval.n_probes": integer(1, 1000),
    "eval.density_grid": integer(2),
    "eval.n_process_times": integer(2, 50),
}
"""Every config field (dotted name) and the values it accepts: a rule, or a registry whose names
are the choices (read at each check, so that a name registered later is accepted)."""


def field_rule(name: str) -> Rule:
    """The :class:`~scoresde.validation.Rule` of the field ``name`` (a key of :data:`FIELDS`)."""
    rule = FIELDS[name]
    return choice(rule) if isinstance(rule, Registry) else rule


def load_config_file(path: str | Path) -> ConfigDict:
    """Run the Python config file ``path`` and return its ``get_config()``.

    The file is Python and runs as code, with the rights of the caller. Config files may import
    shared defaults from the repository's ``configs`` package (``from configs.default_toy import
    get_default_configs``): the directory holding ``configs/`` is on ``sys.path`` while the file
    runs.

    Raises:
        ConfigError: the file is missing, is not Python, fails or exits when run, or has no
            ``get_config()`` returning a ``ConfigDict``.
    """
    path = Path(path)
    if path.suffix != ".py" or not path.is_file():
        raise ConfigError(None, refusal("--config", "an existing Python file (.py)", str(path)))
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
    except SystemExit as err:  # sys.exit() in a config file is a failure, whatever its code
        raise ConfigError(None, f"config file {str(path)!r} called sys.exit({err.code!r})") from err
    except Exception as err:  # the file is user code: any error in it is a bad config file
        failure = f"{type(err).__name__}: {err}"
        raise ConfigError(None, f"config file {str(path)!r} failed: {failure}") from err
    finally:
        if added:
            sys.path.remove(root)
    if not isinstance(config, ConfigDict):
        raise ConfigError(
            None, f"config file {str(path)!r} must define get_config() returning a ConfigDict"
        )
    return config


def iter_fields(config: ConfigDict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted name, value)`` of every leaf field of ``config``, depth first."""
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, ConfigDict):
            yield from iter_fields(value, f"{name}.")
        else:
            yield name, value


def known_fields(group: str) -> str:
    """The names of the fields of ``group`` (``""`` for the top level), comma-separated."""
    return ", ".join(f.rpartition(".")[2] for f in FIELDS if f.rpartition(".")[0] == group)


def validate_config(config: ConfigDict) -> None:
    """Check every field of ``config`` against :data:`FIELDS`; raise on the first problem.

    An unknown field, a missing one, a value of the wrong type or out of range are refused, and an
    ``sde`` field that the chosen SDE does not take must keep its default meaning (see
    :func:`sde_options`).

    Raises:
        ConfigError: naming the field, its value and what it accepts.
    """
    present = dict(iter_fields(config))
    for name, value in present.items():
        if name not in FIELDS:
            group = name.rpartition(".")[0]
            where = f"config.{group}" if group else "the config"
            known = f"the fields of {where} are {known_fields(group)}"
            raise ConfigError(name, f"config.{name} is not a field; {known}")
        rule = field_rule(name)
        if not rule.accepts(value):
            raise ConfigError.refusing(name, rule.allowed, value)
    missing = [name for name in FIELDS if name not in present]
    if missing:
        raise ConfigError(missing[0], f"config.{missing[0]} is missing from the config")
    sde_options(config)


def check_sampling_overrides(config: ConfigDict, keys: Iterable[str]) -> None:
    """Refuse a ``sampling`` option set on the command line that the chosen sampler does not use.

    A config file may hold options of several samplers (the ``--sampler`` flag picks one), and
    those the chosen sampler does not take are left unused; an option the user sets explicitly
    for a sampler that ignores it is a mistake, refused by name (also ``num_steps`` for a sampler
    that chooses its own steps).

    Raises:
        ConfigError: naming the option, the sampler and what it takes.
    """
    name = config.sampling.sampler
    spec = SAMPLERS.lookup(name)
    options = {key: config.sampling[key] for key in spec.options if config.sampling.get(key)}
    takes = ", ".join(map(repr, spec.options)) or "no options"
    for key in keys:
        group, _, field = key.rpartition(".")
        if group != "sampling":
            continue
        if field in sampler_option_types() and field not in spec.options:
            raise ConfigError(
                key, f"config.{key}: sampler {name!r} does not use {field!r}; it takes {takes}"
            )
        if field == "num_steps" and spec.adaptive(options):
            raise ConfigError(
                key, f"config.{key}: sampler {name!r} with these options chooses its own steps"
            )


def sde_options(config: ConfigDict) -> dict[str, Any]:
    """The keyword arguments of the SDE ``config.sde.name``: the ``sde`` fields it takes by name.

    ``sde.schedule`` is a VP option; any other SDE needs it left at ``"linear"``.

    Raises:
        ConfigError: ``sde.schedule`` is not ``"linear"`` for an SDE that takes no schedule.
    """
    c = config.sde
    takes = inspect.signature(SDES.lookup(c.name)).parameters
    if "schedule" not in takes and c.schedule != "linear":
        raise ConfigError.refusing(
            "sde.schedule", f"'linear' for sde.name = {c.name!r} (it takes no schedule)", c.schedule
        )
    return {name: c[name] for name in takes if name in c}


#: Training fields that do not change the trained model: a run may resume with other values
#: (``n_iters`` only under the constant learning-rate schedule: the cosine one depends on it).
BOOKKEEPING = ("n_iters", "checkpoint_every", "eval_every")


def trained_fields(config: ConfigDict) -> dict[str, Any]:
    """The part of ``config`` that determines the trained model, as JSON values: ``seed``,
    ``data``, ``model``, ``sde`` and ``training`` without :data:`BOOKKEEPING`. Under the cosine
    schedule ``n_iters`` is kept; the constant schedule leaves ``lr_schedule`` out, so that run
    directories written before the field existed (all constant) still match."""
    plain = json.loads(config.to_json())
    training = {k: v for k, v in plain["training"].items() if k not in BOOKKEEPING}
    if training["lr_schedule"] == "cosine":  # every rate depends on n_iters
        training["n_iters"] = plain["training"]["n_iters"]
    else:
        del training["lr_schedule"]
    return {**{k: plain[k] for k in ("seed", "data", "model", "sde")}, "training": training}
