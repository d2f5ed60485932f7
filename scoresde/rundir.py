"""A run directory: the stages of :mod:`scoresde.pipeline` run into one directory, safely.

:func:`run` does a mode (``train``, ``sample``, ``eval`` or ``all``) of a run into its directory::

    .lock           held (``flock``) by the process working in the directory
    config.json     the config of the last invocation
    checkpoints/    model, EMA, optimizer, RNG states and loss history (scoresde.checkpoint)
    classifier/     checkpoints/ of the noisy classifier (sampling.guidance = "classifier" only)
    loss.png        the training loss
    samples.npy     (n_samples, *shape) float32 samples from the EMA model, in the data's own
                    units (grey levels 0-16 as floats for digits)
    samples.png     training data next to the samples
    process.png     the forward diffusion and the reverse process at a few times
    density.png     2D points: the model's log-density (probability-flow likelihood) next to the
                    true one
    neighbours.png  a finite dataset (images): samples beside their nearest training samples
    metrics.json    what the stages measured, one section each (docs/cli.md lists every field)

Everything that can refuse a run is checked before anything is written: a directory that is a file
or not writable, another process working in it (the lock), a corrupt checkpoint, a checkpoint of a
different run, no trained model to sample, samples that are not an array of points. Every file is
written to a temporary name and renamed into place, so an interrupted run leaves the old file or
the new one, never half of one. Training a model further deletes what described the old one (its
samples, figures and their ``metrics.json`` sections).

Under ``torchrun`` every process runs the stages, and rank 0 alone checks, locks and writes the
directory (the others read its checkpoints, so with several nodes it must be on a shared file
system); a refusal on rank 0 stops every rank before any work.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from scoresde import distributed, pipeline
from scoresde.checkpoint import Checkpoint, CheckpointError, latest_checkpoint, load_checkpoint
from scoresde.config import trained_fields
from scoresde.training import differences

if TYPE_CHECKING:
    from matplotlib.figure import Figure

try:
    import fcntl
except ImportError:  # not POSIX: no lock (one process per run directory is then up to the user)
    fcntl = None

__all__ = ["MODES", "RunError", "RunDirectory", "run", "check_output_file"]

MODES = ("train", "sample", "eval", "all")
CHECKPOINTS = "checkpoints"
CLASSIFIER = "classifier"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
SAMPLES_FILE = "samples.npy"
LOCK_FILE = ".lock"
FIGURES = ("loss.png", "samples.png", "process.png", "density.png", "neighbours.png")
OUTPUTS = (SAMPLES_FILE, *FIGURES, METRICS_FILE)
#: What a trained model's samples and measurements are, in files and metrics.json sections.
_OF_THE_MODEL = (SAMPLES_FILE, "samples.png", "process.png", "density.png", "neighbours.png")
_SECTIONS_OF_THE_MODEL = ("sampling", "samples", "likelihood", "density_grid", "baselines")


class RunError(Exception):
    """A run that cannot proceed: a directory it cannot use, another run's directory, no model."""


class RunDirectory:
    """The files of one run in ``path`` (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def check_usable(self) -> None:
        """Refuse a directory this process cannot make, write or lock, creating nothing.

        Raises:
            RunError: the path or its ``checkpoints`` is a file, an output name is a directory,
                the path lies under a file, or the directory (or its nearest existing parent) is
                not writable.
        """
        path = self.path
        if path.exists() and not path.is_dir():
            raise RunError(f"--workdir {path} is a file, not a directory")
        existing = next(p for p in (path, *path.absolute().parents) if p.exists())
        if not existing.is_dir():
            raise RunError(f"--workdir {path} lies under {existing}, which is a file")
        _probe_writable(existing, path)
        checkpoints = self / CHECKPOINTS
        if checkpoints.exists():
            if not checkpoints.is_dir():
                raise RunError(f"{checkpoints} is a file; the run keeps its checkpoints there")
            _probe_writable(checkpoints, path)
        for name in (*OUTPUTS, CONFIG_FILE, LOCK_FILE):
            if (self / name).is_dir():
                raise RunError(f"{self / name} is a directory; the run writes a file there")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the directory's lock (creating the directory) for the block.

        Raises:
            RunError: another process holds it.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self / LOCK_FILE, "a+") as f:
            if fcntl is not None:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    f.seek(0)
                    holder = f.read().strip() or "unknown"
                    raise RunError(
                        f"{self.path} is in use by another scoresde run (process {holder}); "
                        "wait for it to finish, or choose another --workdir"
                    ) from None
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()}\n")
            f.flush()
            yield

    def has_checkpoints(self) -> bool:
        return latest_checkpoint(self / CHECKPOINTS) is not None

    def latest_checkpoint(self) -> Checkpoint | None:
        """The newest checkpoint, read and verified, or ``None`` when there is none.

        Raises:
            CheckpointError: it is incomplete or corrupt (nothing is changed).
        """
        path = latest_checkpoint(self / CHECKPOINTS)
        if path is None:
            return None
        try:
            return load_checkpoint(path)
        except CheckpointError as err:
            raise CheckpointError(
                err.path, f"{err.reason}; nothing was changed (move {path} aside, or --overwrite)"
            ) from err

    def discard(self) -> None:
        """Delete the checkpoints and outputs of the run (other files are left alone)."""
        shutil.rmtree(self / CHECKPOINTS, ignore_errors=True)
        shutil.rmtree(self / CLASSIFIER, ignore_errors=True)
        for name in (*OUTPUTS, CONFIG_FILE):
            (self / name).unlink(missing_ok=True)

    def write(self, name: str, data: bytes) -> None:
        """Write ``data`` to ``name`` atomically (a temporary file renamed into place)."""
        tmp = self / f".{name}.{uuid.uuid4().hex[:12]}.tmp"
        try:
            with open(tmp, "xb") as f:  # permissions from the umask, as any new file
                f.write(data)
            os.replace(tmp, self / name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def save_figure(self, name: str, figure: Figure) -> None:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=120)
        self.write(name, buffer.getvalue())

    def save_samples(self, samples: torch.Tensor) -> None:
        buffer = io.BytesIO()
        np.save(buffer, samples.numpy(), allow_pickle=False)
        self.write(SAMPLES_FILE, buffer.getvalue())

    def load_samples(self, shape: tuple[int, ...]) -> torch.Tensor | None:
        """``samples.npy`` checked (:func:`read_samples`), or ``None`` when there is none.

        Raises:
            RunError: the file is not an array of finite samples of ``shape``.
        """
        path = self / SAMPLES_FILE
        if not path.is_file():
            return None
        try:
            return read_samples(path, shape)
        except ValueError as err:
            raise RunError(f"{err}; run --mode sample to draw new samples") from None

    def metrics(self) -> dict[str, Any]:
        path = self / METRICS_FILE
        return json.loads(path.read_text()) if path.is_file() else {}

    def update_metrics(self, sections: dict[str, Any], drop: Sequence[str] = ()) -> None:
        """Replace ``sections`` of ``metrics.json`` and remove the sections ``drop``."""
        current = self.metrics()
        for key in drop:
            current.pop(key, None)
        current.update(_jsonable(sections))
        self.write(METRICS_FILE, (json.dumps(current, indent=2, allow_nan=False) + "\n").encode())

    def forget_the_model(self) -> None:
        """Delete the samples, figures and metrics of a model that training has just changed."""
        for name in _OF_THE_MODEL:
            (self / name).unlink(missing_ok=True)
        self.update_metrics({}, drop=_SECTIONS_OF_THE_MODEL)


def read_samples(path: Path, shape: tuple[int, ...]) -> torch.Tensor:
    """Samples saved by a run (``samples.npy``), checked: a float array ``(n >= 2, *shape)``,
    finite.

    Read with ``allow_pickle=False``: a pickled array is refused, not run.

    Raises:
        ValueError: the file is not such an array (the message says what it is).
    """
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"{path} is not a readable .npy array ({err})") from err
    if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
        kind = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
        raise ValueError(f"{path} must hold floating-point samples; it holds {kind}")
    shape = tuple(shape)
    if array.ndim != 1 + len(shape) or array.shape[0] < 2 or array.shape[1:] != shape:
        wanted = ", ".join(map(str, ("n >= 2", *shape)))
        raise ValueError(f"{path} must hold samples of shape ({wanted}); got {array.shape}")
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).reshape(len(array), -1).any(axis=1).sum())
        raise ValueError(f"{path} holds {bad} non-finite samples")
    return torch.from_numpy(array.astype(np.float32))


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` within the block (0: leave torch's choice)."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _probe_writable(directory: Path, workdir: Path) -> None:
    """Create and remove a temporary directory in ``directory``: the honest test of writing."""
    try:
        os.rmdir(tempfile.mkdtemp(dir=directory, prefix=".scoresde-probe-"))
    except OSError as err:
        raise RunError(
            f"--workdir {workdir} cannot be written: {directory} refuses new files "
            f"({err.strerror or err})"
        ) from None


def check_output_file(name: str, path: str | os.PathLike[str]) -> Path:
    """``path`` if a file can be written there (its directory exists and accepts new files), so a
    script can refuse a bad output path before it works for minutes.

    Raises:
        ValueError: ``name cannot be written: ...``.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{name} cannot be written: {path} is a directory")
    try:
        os.rmdir(tempfile.mkdtemp(dir=path.absolute().parent, prefix=".scoresde-probe-"))
    except OSError as err:
        raise ValueError(f"{name} cannot be written: {path} ({err.strerror or err})") from None
    return path


def _jsonable(value: Any) -> Any:
    """``value`` with non-finite floats as ``None`` (JSON has no inf or NaN)."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _classifier_checkpoint(
    parts: pipeline.Parts, rundir: RunDirectory, trains: bool, overwrite: bool
) -> Checkpoint | None:
    """The newest checkpoint of the run's noisy classifier (classifier guidance), checked before
    any work like the score model's; ``None`` when there is none or no classifier is needed.

    Raises:
        RunError: a classifier trained with another config, or none to sample with.
    """
    if parts.classifier is None or overwrite:
        return None
    found = RunDirectory(rundir / CLASSIFIER).latest_checkpoint()
    if found is not None:
        changed = differences(found.config, pipeline.classifier_fields(parts.config))
        if changed:
            raise RunError(
                f"{rundir / CLASSIFIER} holds a classifier with a different config "
                f"({'; '.join(changed)}); pass --overwrite to discard the run"
            )
    elif not trains:
        raise RunError(
            f"no trained classifier in {rundir / CLASSIFIER / CHECKPOINTS} for "
            "sampling.guidance = 'classifier'; run --mode train (it trains the classifier)"
        )
    return found


def _check_resume_device(
    checkpoint: Checkpoint, device: torch.device, rundir: RunDirectory
) -> None:
    """Training continues only on the device type it ran on (its random streams live there)."""
    was = checkpoint.loop.get("device")
    if was is not None and was != device.type:
        raise RunError(
            f"{rundir.path} was trained on {was!r} and this run's device is {device.type!r}; "
            f"to train it further pass --config.device={was} (sampling and evaluation work on "
            "any device), or choose another --workdir"
        )


def run(
    parts: pipeline.Parts,
    workdir: str | os.PathLike[str],
    *,
    mode: str = "all",
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Do ``mode`` for ``parts`` in ``workdir``; the metrics written, as a dict.

    ``train`` trains (resuming from the newest checkpoint), ``sample`` draws samples from the EMA
    weights, ``eval`` measures the likelihood and the samples, ``all`` does the three. A directory
    belongs to one run: a checkpoint trained with other data, model, SDE, training settings or seed
    is refused unless ``overwrite`` discards it. Sampling and evaluation settings, and
    ``training.n_iters`` (to train longer), may change between invocations.

    In a multi-process run every rank calls this; rank 0 returns the metrics, the others ``{}``.

    Raises:
        RunError, CheckpointError: the run cannot start (nothing was written).
        OtherRankFailed: on the other ranks, when rank 0 refused the run.
        NonFiniteLossError, TrainingInterrupted: training stopped (see :func:`scoresde.train`).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}; got {mode!r}")
    trains = mode in ("train", "all")
    if overwrite and not trains:
        raise RunError(
            f"--overwrite discards the trained model, so it needs --mode train or all, not {mode}"
        )
    began = time.perf_counter()
    rundir = RunDirectory(workdir)
    main = distributed.is_main()
    config = parts.config
    info = {"dataset": config.data.name, "sde": config.sde.name, "seed": config.seed}
    with contextlib.ExitStack() as stack:

        def prepare() -> tuple[Checkpoint | None, torch.Tensor | None]:
            """Check, lock and set up the directory (rank 0's part before any work)."""
            rundir.check_usable()
            if not trains and not rundir.has_checkpoints():
                raise RunError(
                    f"no trained model in {rundir / CHECKPOINTS}; run with --mode train first"
                )
            stack.enter_context(rundir.locked())
            checkpoint = None if overwrite else rundir.latest_checkpoint()
            if checkpoint is not None:
                found = differences(checkpoint.config, trained_fields(parts.config))
                if found:
                    raise RunError(
                        f"{rundir.path} holds a run with a different config ({'; '.join(found)}); "
                        "pass --overwrite to discard it, or choose another --workdir"
                    )
            if not trains and checkpoint is None:
                raise RunError(
                    f"no trained model in {rundir / CHECKPOINTS}; run --mode train first"
                )
            if trains and checkpoint is not None:
                _check_resume_device(checkpoint, parts.device, rundir)
            classifier_checkpoint = _classifier_checkpoint(parts, rundir, trains, overwrite)
            saved = rundir.load_samples(parts.dataset.shape) if mode == "eval" else None
            saved = None if saved is None else parts.dataset.from_data(saved)
            if overwrite:
                rundir.discard()
            rundir.write(CONFIG_FILE, (config.to_json(indent=2) + "\n").encode())
            before = rundir.metrics().get("run", {}).get("conditioning")
            # the measures of another label or guidance describe another law
            changed = _SECTIONS_OF_THE_MODEL if before != info.get("conditioning") else ()
            rundir.update_metrics({"run": info}, drop=changed)
            return checkpoint, classifier_checkpoint, saved

        if parts.conditioning.describe():
            info["conditioning"] = parts.conditioning.describe()
        stack.enter_context(torch_threads(config.threads))
        checkpoint, classifier_checkpoint, saved = distributed.run_on_main(prepare) or (
            None,
            None,
            None,
        )

        if trains:
            trained = pipeline.train(parts, rundir.path, progress=progress)
            if main and trained.section["steps_this_run"]:
                rundir.forget_the_model()
            if main:
                rundir.update_metrics({"training": trained.section})
        else:
            checkpoint = checkpoint if main else rundir.latest_checkpoint()
            trained = pipeline.load_trained(parts, checkpoint)
        classifier = None
        if parts.classifier is not None and trains:
            done = pipeline.train_classifier(parts, rundir / CLASSIFIER, progress=progress)
            if main and done.section["steps_this_run"]:
                rundir.forget_the_model()  # samples guided by another classifier
            if main:
                rundir.update_metrics({"classifier": done.section})
            classifier = done.ema_model
        elif parts.classifier is not None:
            if not main:
                classifier_checkpoint = _classifier_checkpoint(parts, rundir, trains, overwrite)
            classifier = pipeline.load_trained(parts, classifier_checkpoint, parts.classifier)
            classifier = classifier.ema_model
        score_fn = parts.score_fn(trained.ema_model, classifier)
        drawn = measured = None
        if mode in ("sample", "all"):
            drawn = pipeline.sample(parts, score_fn)
            if main:
                rundir.save_samples(parts.dataset.to_data(drawn.samples))
                rundir.update_metrics({"sampling": drawn.section}, drop=["samples"])
        if mode in ("eval", "all"):
            samples = drawn.samples if drawn is not None else saved
            measured = pipeline.evaluate(parts, score_fn, samples)
            sections = {
                "likelihood": measured.likelihood,
                "density_grid": measured.density_grid,
                "baselines": measured.baselines,
                "samples": measured.samples,
            }
            sections = {k: v for k, v in sections.items() if v is not None}
            if main:
                rundir.update_metrics(sections, drop=["samples"])
        if not main:
            return {}
        shown = trained if trains else None
        for name, figure in pipeline.draw(parts, shown, drawn, measured).items():
            rundir.save_figure(name, figure)
        info.update(mode=mode, wall_time_s=time.perf_counter() - began)
        rundir.update_metrics({"run": info})
        return rundir.metrics()
