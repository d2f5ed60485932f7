"""The command line: train a score model on a toy 2D density or on images, sample it, measure it,
draw it.

    python -m scoresde.run --sde vp|subvp|ve --sampler em|pc|ode [--dataset NAME] [--config FILE]
                           [--workdir DIR] [--mode train|sample|eval|all] [--seed N] [--overwrite]
                           [--dry-run] [--config.GROUP.FIELD=VALUE ...]

(also installed as the console script ``scoresde``). This module only reads the command line and
reports: the config is ``configs/<family>/<sde>.py`` unless ``--config`` names another file (a
config file is Python and runs as code), the family being the dataset's own directory where there is
one (``configs/digits/``), ``digits`` for the other image datasets (the U-Net defaults) and ``toy``
otherwise; ``--sampler``, ``--dataset`` and ``--seed`` set
``sampling.sampler``, ``data.name`` and ``seed``; ``--config.training.n_iters=2000`` (or
``--config.training.n_iters 2000``) sets any field, parsed by ml-collections' own flag parsers
(``ml_collections.config_flags``) for the field's type. Then :func:`scoresde.pipeline.build` makes
and checks the run's parts and :func:`scoresde.rundir.run` does the work in the run directory
(default ``runs/<dataset>-<sde>-<sampler>``; ``docs/cli.md`` describes it).

Bad input (an unknown flag, value or config field, an invalid value or combination, a directory
that cannot be used, a corrupt checkpoint) prints one line, ``scoresde: error: ...``, and exits
with status 2 (usage) or 1 (run), without a traceback and without writing anything; Ctrl-C exits
with status 130 after saving the last update's checkpoint.

Started by ``torchrun`` (``torchrun --standalone --nproc-per-node=N -m scoresde.run ...``; see
docs/scale.md), each process joins the run's process group (:mod:`scoresde.distributed`) and only
rank 0 prints. An error that every rank meets alike (bad input, a refused directory, a non-finite
loss) is printed once, by rank 0; any other (a file error, a lost peer) by the rank that met it,
named, in one line; ``torchrun`` then stops the other ranks.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from absl import flags
from ml_collections import ConfigDict, config_flags

from scoresde import distributed
from scoresde.checkpoint import CheckpointError
from scoresde.config import (
    FIELDS,
    REPOSITORY_CONFIGS,
    SDES,
    ConfigError,
    check_sampling_overrides,
    field_rule,
    known_fields,
    load_config_file,
    validate_config,
)
from scoresde.datasets import DATASETS, IMAGE_DATASETS
from scoresde.pipeline import build
from scoresde.rundir import CHECKPOINTS, MODES, RunDirectory, RunError, run
from scoresde.sampling import SAMPLERS
from scoresde.training import NonFiniteLossError, TrainingInterrupted
from scoresde.validation import refusal

__all__ = [
    "main",
    "parse_args",
    "config_family",
    "resolve_config",
    "apply_overrides",
    "summary",
]


class UsageError(Exception):
    """Bad command-line input (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, raising :class:`UsageError` with its one-line message instead of exiting."""

    def error(self, message: str) -> None:
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="scoresde",
        description="Train, sample and evaluate a score-based model on a toy 2D density or on "
        "images.",
        epilog="Any config field can be set with --config.GROUP.FIELD=VALUE, e.g. "
        "--config.training.n_iters=2000. A config file is Python and runs as code.",
    )
    p.add_argument("--sde", choices=tuple(SDES), help="the forward SDE (default: vp)")
    p.add_argument("--sampler", choices=SAMPLERS, help="the sampler (default: the config's)")
    p.add_argument(
        "--dataset",
        choices=tuple(DATASETS),
        help="the data: a toy density or an image dataset (default: the config's)",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="a config file (default: configs/<dataset family>/<sde>.py)",
    )
    p.add_argument("--workdir", metavar="DIR", help="the run directory")
    p.add_argument("--mode", choices=MODES, default="all", help="what to do (default: all)")
    p.add_argument("--seed", type=int, help="the run's seed (default: the config's)")
    p.add_argument(
        "--overwrite", action="store_true", help="discard a different run found in the workdir"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the config and the workdir, print the config, and write nothing",
    )
    return p


def parse_args(
    argv: Sequence[str] | None = None,
) -> tuple[argparse.Namespace, list[tuple[str, str]]]:
    """The flags, and the config overrides ``(dotted field, raw value)`` in command-line order.

    Raises:
        UsageError: an unknown flag, a bad flag value, or an override without a value.
    """
    args, rest = _parser().parse_known_args(argv)
    for flag, value in (("--config", args.config), ("--workdir", args.workdir)):
        if value is not None and not value.strip():
            raise UsageError(refusal(flag, "a path", value))
    overrides = []
    i = 0
    while i < len(rest):
        item = rest[i]
        if not item.startswith("--config."):
            raise UsageError(f"unrecognized arguments: {item}")
        key, sep, value = item[len("--config.") :].partition("=")
        if not sep:
            if i + 1 == len(rest) or rest[i + 1].startswith("--"):
                raise UsageError(f"--config.{key} needs a value (--config.{key}=VALUE)")
            value, i = rest[i + 1], i + 1
        overrides.append((key, value))
        i += 1
    return args, overrides


#: What a field of each type accepts on the command line, in words.
_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def apply_overrides(config: ConfigDict, overrides: Sequence[tuple[str, str]]) -> None:
    """Set each dotted field from its command-line string, in order (the last one wins).

    Values are parsed by ml-collections' own flag machinery (``config_flags.DEFINE_config_dict``
    on a private flag registry), which reads the string as the field's type; ``none`` or ``None``
    clears a field that may be ``None`` (ml-collections only does that for dataclass fields).
    A string field keeps ``none`` as the string it is.

    Raises:
        ConfigError: the field does not exist, is a group, or the value is not of its type.
    """
    for key, raw in overrides:
        if key not in FIELDS:
            group = key.rpartition(".")[0]
            if any(name.startswith(f"{key}.") for name in FIELDS):
                raise ConfigError(
                    key,
                    f"config.{key} is a group, not a field; set one of its fields, "
                    f"e.g. --config.{key}.{known_fields(key).split(', ')[0]}=VALUE",
                )
            known = known_fields(group) if any(f.startswith(f"{group}.") for f in FIELDS) else ""
            where = f"the fields of config.{group} are {known}" if known else _groups()
            raise ConfigError(key, f"config.{key} is not a field; {where}")
        group, _, name = key.rpartition(".")
        node = config[group] if group else config
        # "none" is a name to a string field (the corrector 'none'), "None" clears it
        named = node.get_type(name) is str and raw == "none"
        if raw in ("none", "None") and field_rule(key).accepts(None) and not named:
            node[name] = None
            continue
        registry = flags.FlagValues()
        argv = ["scoresde", f"--config.{key}={raw}"]
        config_flags.DEFINE_config_dict("config", config, flag_values=registry, sys_argv=argv)
        try:
            registry(argv)
        except flags.Error:
            words = _TYPE_WORDS.get(node.get_type(name), "a value of its type")
            raise ConfigError.refusing(key, words, raw) from None


def _groups() -> str:
    groups = sorted({name.split(".")[0] for name in FIELDS if "." in name})
    return f"the groups are {', '.join(groups)}, the top-level fields {known_fields('')}"


def config_family(dataset: str | None) -> str:
    """The directory of ``configs/`` that holds the built-in configs of ``dataset``: its own where
    there is one, ``digits`` (the U-Net defaults) for another image dataset, else ``toy``."""
    if dataset is not None and (REPOSITORY_CONFIGS / dataset).is_dir():
        return dataset
    return "digits" if dataset in IMAGE_DATASETS else "toy"


def resolve_config(args: argparse.Namespace, overrides: Sequence[tuple[str, str]]) -> ConfigDict:
    """The config: the file, then the flags, then the ``--config.*`` overrides; fields checked.

    Raises:
        ConfigError: a bad config file, field or value.
        RunError: the built-in configs are missing (no source checkout).
    """
    if args.config is not None:
        path = Path(args.config)
    else:
        path = REPOSITORY_CONFIGS / config_family(args.dataset) / f"{args.sde or 'vp'}.py"
        if not path.is_file():
            raise RunError(
                f"the built-in config {path} is not there (scoresde installed without its source "
                "checkout?); install with 'pip install -e .' from the repository or pass --config"
            )
    config = load_config_file(path)
    validate_config(config)
    chosen = {"sde.name": args.sde, "sampling.sampler": args.sampler, "data.name": args.dataset}
    for key, value in chosen.items():
        if value is not None:
            group, name = key.split(".")
            config[group][name] = value
    if args.seed is not None:
        seed = field_rule("seed")
        if not seed.accepts(args.seed):
            raise UsageError(refusal("--seed", seed.allowed, args.seed))
        config.seed = args.seed
    apply_overrides(config, overrides)
    validate_config(config)
    check_sampling_overrides(config, [key for key, _ in overrides])
    return config


# -- the summary and the entry point ------------------------------------------------------------


def _fmt(value: float | None, stderr: float | None = None, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.{digits}f}"
    return text if stderr is None else f"{text} +- {stderr:.{digits}f}"


def summary(result: dict[str, Any], workdir: Path) -> str:
    """A few lines on what the run measured and where its files are.

    Only measures that say something about the dataset are shown: the fraction in the support
    where the density is zero somewhere, the cross-entropy where it is not. Samples far off the
    data are said to be so, plainly.
    """
    r = result["run"]
    what = ", ".join(filter(None, (r["dataset"], r.get("conditioning"), f"{r['sde']} SDE")))
    lines = [f"scoresde: {what}, mode {r['mode']}, {r['wall_time_s']:.1f} s"]
    if "training" in result:
        t = result["training"]
        lines.append(
            f"  training      {t['steps']} steps, final loss {_fmt(t['final_loss_mean_last_500'])}"
        )
    if "classifier" in result and "classifier" in r.get("conditioning", ""):
        c = result["classifier"]
        lines.append(
            f"  classifier    {c['steps']} steps, final loss {_fmt(c['final_loss_mean_last_500'])}"
        )
    if "sampling" in result:
        s = result["sampling"]
        what = f"{s['sampler']}, {s['n_samples']} samples"
        if "inpainting" in s:
            p = s["inpainting"]
            images = "rmse_to_truth_levels" in p
            lines.append(
                f"  inpainting    {p['mask']} of {s['n_samples']} test "
                f"{'images' if images else 'points'}, {s['sampler']}"
            )
            measured = [
                f"RMSE to the truth {_fmt(p['rmse_to_truth_levels'])} grey levels"
                if images
                else f"RMSE to the truth {_fmt(p['rmse_to_truth'])}"
            ]
            if "rmse_to_exact_mean" in p:
                measured.append(
                    f"to the exact conditional mean {_fmt(p['rmse_to_exact_mean'])} "
                    f"(exact samples {_fmt(p['exact_rmse_to_mean'])}), "
                    f"NLL gap {_fmt(p['nll_gap'])} nats"
                )
            if p.get("fraction_true_class") is not None:
                measured.append(f"{p['fraction_true_class']:.3f} classified as their true class")
            lines.append("                " + "; ".join(measured))
        else:
            lines.append(f"  sampling      {what}, {s['nfe']} score evaluations")
    if "likelihood" in result and "bpd" in result["likelihood"]:
        lines.extend(_image_lines(result))
    elif "likelihood" in result:
        lk = result["likelihood"]
        nll = _fmt(lk["nll"], lk["nll_stderr"])
        lines.append(f"  NLL           {nll} nats ({lk['nfe']} score evaluations)")
        lines.append(f"  entropy       {_fmt(lk['entropy'], lk['entropy_stderr'])} nats")
        gap, gap_se = lk["nll_minus_entropy"], lk["nll_minus_entropy_stderr"]
        lines.append(f"  NLL - entropy {_fmt(gap, gap_se)} nats")
    if "samples" in result and "energy_distance" in result["samples"]:
        q = result["samples"]
        parts = [f"energy distance {_fmt(q['energy_distance'])}"]
        if "fraction_in_support" in q:
            parts.append(f"in support {q['fraction_in_support']:.3f}")
        elif q.get("cross_entropy_minus_entropy") is not None:
            parts.append(f"cross-entropy - entropy {_fmt(q['cross_entropy_minus_entropy'])}")
        if "max_mode_weight_error" in q:
            parts.append(f"max mode-weight error {q['max_mode_weight_error']:.3f}")
        lines.append("  samples       " + ", ".join(parts))
        if "fraction_in_class" in q:
            lines.append(
                f"  class         {q['fraction_in_class']:.3f} of the samples in the class "
                f"(exact samples of the class: {q['fraction_in_class_exact']:.3f})"
            )
        if q["far_from_data"]:
            lines.append(
                f"  WARNING: the samples are far from the data: "
                f"{100 * q['fraction_outside_data']:.0f}% lie outside the range of fresh data; "
                "the model is not trained enough (raise --config.training.n_iters)"
            )
    lines.append(f"  files in {workdir}")
    return "\n".join(lines)


def _image_lines(result: dict[str, Any]) -> list[str]:
    """The summary's lines for images: bits/dim beside the baselines, and sample quality."""
    lk = result["likelihood"]
    lines = [
        f"  bits/dim      {_fmt(lk['bpd'], lk['bpd_stderr'], 3)} on {lk['n_eval']} test images "
        f"({lk['method']}, {lk['nfe']} score evaluations)"
    ]
    if "check" in lk:
        ch = lk["check"]
        diff = _fmt(ch["hutchinson_minus_exact"], ch["hutchinson_minus_exact_stderr"], 3)
        lines.append(f"  trace check   hutchinson - exact {diff} bits/dim on {ch['n']} images")
    if "baselines" in result:
        b = result["baselines"]
        lines.append(
            f"  baselines     uniform {b['uniform']:.3f}, per-pixel categorical "
            f"{b['categorical']:.3f}, Gaussian {b['gaussian']:.3f} bits/dim"
        )
    q = result.get("samples")
    if q is not None:
        if "fd" in q:
            classes = (
                f"{q['label_accuracy']:.3f} of them classified as the label"
                if "label_accuracy" in q
                else f"largest class-share error {q['max_class_error']:.3f}"
            )
            floor = f"train-test floor {q['fd_floor']:.1f}"
            lines.append(f"  samples       FD {q['fd']:.1f} ({floor}), {classes}")
        lines.append(
            f"  samples       precision {q['precision']:.3f}, recall {q['recall']:.3f}, "
            f"near-copies {100 * q['near_copy_fraction']:.1f}%"
        )
    return lines


def _error(message: object, status: int, shared: bool = True) -> int:
    """Print ``scoresde: error: MESSAGE`` (in a multi-process run: once, from rank 0, for an error
    every rank meets alike, ``shared``; else from this rank, naming it) and return ``status``."""
    if distributed.world_size() > 1 and not shared:
        message = f"rank {distributed.rank()} of {distributed.world_size()}: {message}"
    if distributed.is_main() or not shared:
        print(f"scoresde: error: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """The ``scoresde`` command; returns the exit status (0 success, 1 run error, 2 bad input,
    130 interrupted)."""
    with distributed.process_group():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    level = logging.WARNING if distributed.is_main() else logging.ERROR
    logging.basicConfig(level=level, format="scoresde: %(message)s")
    try:
        args, overrides = parse_args(argv)
        config = resolve_config(args, overrides)
        parts = build(config)
    except (UsageError, ConfigError) as err:
        return _error(err, 2)
    except RunError as err:
        return _error(err, 1)
    except KeyboardInterrupt:
        return _error("interrupted before any work; nothing was written", 130)
    default = f"runs/{config.data.name}-{config.sde.name}-{config.sampling.sampler}"
    workdir = Path(args.workdir or default)
    try:
        if args.dry_run:
            RunDirectory(workdir).check_usable()
            if distributed.is_main():
                print(config.to_json(indent=2))
            return 0
        result = run(
            parts,
            workdir,
            mode=args.mode,
            overwrite=args.overwrite,
            progress=sys.stderr.isatty(),
        )
    except (RunError, CheckpointError, NonFiniteLossError, distributed.OtherRankFailed) as err:
        return _error(err, 1)
    except (OSError, MemoryError) as err:
        return _error(err, 1, shared=False)
    except RuntimeError as err:
        if not distributed.active():
            raise
        # a lost peer (gloo: "Connection reset by peer", NCCL: a DistBackendError), or this rank's
        # own failure: torchrun stops the other ranks; the last checkpoint written stays
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return _error(f"stopped: {first}", 1, shared=False)
    except TrainingInterrupted as err:
        return _error(f"{err}; run the same command to resume", 130)
    except KeyboardInterrupt:
        where = workdir / CHECKPOINTS
        return _error(f"interrupted; the trained model stays in {where}", 130)
    if distributed.is_main():
        print(summary(result, workdir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
