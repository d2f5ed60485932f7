"""A run as code: build its parts once from a config, then train, sample, evaluate and draw.

    config = load_config_file("configs/toy/vp.py")      # any validated ConfigDict
    parts = build(config)                              # every check before any work
    trained = train(parts)                             # or load_trained(parts, checkpoint)
    score_fn = parts.score_fn(trained.ema_model)       # sample with the EMA weights
    drawn = sample(parts, score_fn)
    measured = evaluate(parts, score_fn, drawn.samples)
    figures = draw(parts, trained, drawn, measured)          # name -> matplotlib Figure

:func:`build` turns a config into :class:`Parts` (dataset, SDE, network, training loss, score
function, sampler and likelihood settings, random streams) and tries them together, so a setting
that cannot work is refused with a :class:`~scoresde.config.ConfigError` before anything runs. Each
stage takes the parts (and a score function where it needs one) and returns numbers and tensors; the
stages write nothing but checkpoints (:func:`train` with a ``workdir``). :func:`scoresde.rundir.run`
puts them together into a run directory, and ``scoresde.run`` is its command line.

Under ``torchrun`` (:mod:`scoresde.distributed`) every process builds the same parts and runs the
same stages: :func:`train` gives each rank its share of the global batch, :func:`sample` and
:func:`evaluate` each rank a contiguous share of the points (with its own random stream, rank 0's
being the one-process run's), gathered in order on every rank; the figures and files are rank 0's.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from ml_collections import ConfigDict
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from scoresde import distributed, image_eval, metrics, training
from scoresde.checkpoint import Checkpoint, latest_checkpoint, step_of
from scoresde.conditioning import (
    Conditioning,
    class_measures,
    conditioning_of,
    inpaint_options,
    inpaint_split,
)
from scoresde.config import SDES, ConfigError, sde_options, trained_fields, validate_config
from scoresde.datasets import DATASETS, Dataset, ToyDensity, load_dataset
from scoresde.datasets.protocol import LabelledBatch, Shard
from scoresde.guidance import CondScoreFn, unconditional
from scoresde.inpainting import inpaint
from scoresde.likelihood import EXACT_TRACE_BATCH, log_likelihood
from scoresde.losses import classifier_loss_fn, conditional_loss_fn, get_loss_fn
from scoresde.nets import get_classifier, get_model
from scoresde.sampling import SAMPLERS
from scoresde.sampling import sample as sample_sde
from scoresde.sampling.grids import grid_end
from scoresde.score import get_cond_score_fn, get_score_fn
from scoresde.score_calls import CountedScore
from scoresde.sde import SDE, ScoreFn, batch_broadcast

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "Parts",
    "build",
    "stream_generator",
    "sampler_options",
    "likelihood_options",
    "Trained",
    "Drawn",
    "Measured",
    "train",
    "load_trained",
    "sample",
    "evaluate",
    "draw",
    "support_is_bounded",
]

#: The random streams of a run besides training's (which :func:`scoresde.training.train` seeds with
#: the seed itself), each an independent generator (:meth:`Parts.generator`).
STREAMS = {
    "init": 1, "data_std": 2, "sample": 3, "eval": 4, "inpaint": 5, "classifier": 6, "curve": 7,
}  # fmt: skip


def stream_generator(
    seed: int, stream: str, rank: int = 0, device: torch.device | str = "cpu"
) -> torch.Generator:
    """A generator for the random stream ``stream`` (a key of :data:`STREAMS`) of a run.

    Its seed is drawn by :class:`numpy.random.SeedSequence` from ``(seed, stream)`` (from
    ``(seed, stream, rank)`` for rank ``rank > 0`` of a multi-process run), so streams of one run,
    and the same stream of runs with nearby seeds, are independent.
    """
    key = [seed, STREAMS[stream], rank] if rank else [seed, STREAMS[stream]]
    words = np.random.SeedSequence(key).generate_state(2, np.uint32)
    return torch.Generator(device=device).manual_seed(int(words[0]) << 32 | int(words[1]))


@dataclasses.dataclass(frozen=True)
class Parts:
    """Everything a run is made of, built once from its config by :func:`build`.

    Attributes:
        config: the validated config.
        dataset: the dataset ``config.data.name`` (:class:`~scoresde.datasets.Dataset`: toy
            points or images; the stages ask only its protocol).
        sde: the forward SDE of ``config.sde``.
        model: the network of ``config.model``, initialised from the seed (:func:`train` trains it
            in place).
        data_std: the data's per-feature std for input scaling (``model.data_std``, or estimated
            from 10,000 training samples (at most the training set) of the ``"data_std"``
            stream).
        loss_fn: the training loss ``loss_fn(model, batch, generator)`` of ``config.training``.
        sampling: the keyword arguments of :func:`scoresde.sample` (:func:`sampler_options`).
        likelihood: those of :func:`scoresde.log_likelihood` (:func:`likelihood_options`).
        conditioning: the label, guidance and inpainting of ``config.sampling``
            (:mod:`scoresde.conditioning`).
        classifier: the noise-conditional classifier of classifier guidance (``config.model``'s
            network with a ``C``-way head, initialised from the seed), or ``None``.
        device: where the networks live and the stages compute (:func:`run_device`); data,
            samples and measures come back to the CPU.
    """

    config: ConfigDict
    dataset: Dataset
    sde: SDE
    model: nn.Module
    data_std: float
    loss_fn: training.TrainingLoss
    sampling: dict[str, Any]
    likelihood: dict[str, Any]
    conditioning: Conditioning
    classifier: nn.Module | None = None
    device: torch.device = torch.device("cpu")

    @property
    def seed(self) -> int:
        return int(self.config.seed)

    def generator(
        self, stream: str, rank: int = 0, device: torch.device | str = "cpu"
    ) -> torch.Generator:
        """A generator for the random stream ``stream`` of the run (:func:`stream_generator`)."""
        return stream_generator(self.seed, stream, rank, device)

    def score_fn(
        self, model: Callable[..., Tensor], classifier: nn.Module | None = None
    ) -> ScoreFn:
        """The score function the run samples: that of ``model`` under
        ``config.model.parameterization``, conditioned and guided as ``config.sampling`` says
        (:meth:`~scoresde.conditioning.Conditioning.score_fn`; ``classifier`` for classifier
        guidance)."""
        if not self.conditioning.conditional_model and self.conditioning.label is None:
            return _score_fn(self.config, self.sde, model, self.data_std)
        return self.conditioning.score_fn(self.cond_score_fn(model), classifier)

    def cond_score_fn(self, model: Callable[..., Tensor]) -> CondScoreFn:
        """The conditional score ``s(x, t, y)`` of ``model`` (``y = None``: the unconditional
        score; a network trained without labels ignores ``y``), to compose with
        :mod:`scoresde.guidance` for labels of one's own (e.g. one per sample)."""
        c = self.config.model
        return get_cond_score_fn(
            self.sde,
            model if self.conditioning.conditional_model else lambda x, t, y: model(x, t),
            c.parameterization,
            input_scaling=c.input_scaling,
            data_std=self.data_std,
        )


def sampler_options(config: ConfigDict) -> dict[str, Any]:
    """The keyword arguments of :func:`scoresde.sample` set by ``config.sampling``.

    This is the one place that maps the ``sampling`` group to the sampler's arguments; the run
    (:func:`sample`) and the check in :func:`build` both use it.
    """
    c = config.sampling
    spec = SAMPLERS.lookup(c.sampler)
    own = {name: c[name] for name in spec.options if c.get(name) is not None}
    grid = ("num_steps", "grid", "eps", "rho", "sigma_max", "sigma_min", "denoise")
    common = {name: c[name] for name in grid if c[name] is not None}
    if spec.adaptive(own):  # it chooses its own steps; the config's count is for other samplers
        common.pop("num_steps", None)
    return {"sampler": c.sampler, **common, **own}


def likelihood_options(config: ConfigDict) -> dict[str, Any]:
    """The keyword arguments of :func:`scoresde.log_likelihood` set by ``config.eval``."""
    c = config.eval
    return {name: c[name] for name in ("eps", "method", "rtol", "atol", "trace", "n_probes")}


def _score_fn(config: ConfigDict, sde: SDE, model: Callable, data_std: float) -> ScoreFn:
    c = config.model
    return get_score_fn(
        sde, model, c.parameterization, input_scaling=c.input_scaling, data_std=data_std
    )


#: The fields of the ``model`` group each network takes, besides ``embedding``,
#: ``fourier_scale`` and ``time_scale``, and the number of axes of the samples it takes.
NETWORK_FIELDS = {
    "mlp": (("hidden", "depth", "embed_dim"), 1),
    "unet": (("ch", "ch_mult", "num_res_blocks", "attn_resolutions", "dropout"), 3),
}


def _network(
    config: ConfigDict,
    sde: SDE,
    shape: tuple[int, ...],
    generator: torch.Generator,
    num_classes: int | None = None,
    registry: Callable[..., nn.Module] = get_model,
) -> nn.Module:
    """The network of ``config.model`` for samples of ``shape``: the MLP for points ``(d,)``, the
    U-Net for images ``(C, H, W)``. A sinusoidal embedding's ``time_scale = None`` means
    ``(N - 1) / T``, so that the SDE's discrete step ``i`` is embedded as the integer ``i``.
    ``num_classes``: a network that takes labels; ``registry = get_classifier``: the
    noise-conditional classifier of the same layout with ``num_classes`` outputs.

    Raises:
        ValueError: the network does not take samples of ``shape``, or (U-Net) ``ch_mult`` halves
            the resolution below one pixel of the image.
    """
    c = config.model
    fields, axes = NETWORK_FIELDS[c.name]
    if len(shape) != axes:
        wants = {1: "points (d,)", 3: "images (C, H, W)"}
        other = next(name for name, (_, a) in NETWORK_FIELDS.items() if a == len(shape))
        raise ValueError(
            f"model.name must be {other!r} for {wants[len(shape)]} like {config.data.name!r}'s "
            f"{tuple(shape)}; got {c.name!r} (a network of {wants[axes]})"
        )
    options = {name: c[name] for name in fields}
    if c.name == "unet":
        most = 1 + int(math.log2(min(shape[1:])))
        if len(c.ch_mult) > most:
            raise ValueError(
                f"model.ch_mult must have at most {most} levels for {shape[1]}x{shape[2]} images "
                f"(each level halves the resolution); got {tuple(c.ch_mult)}"
            )
        options.update(shape=shape, ch_mult=tuple(c.ch_mult))
        options["attn_resolutions"] = tuple(c.attn_resolutions)
    else:
        options["dim"] = shape[0]
    return registry(
        c.name,
        embedding=c.embedding,
        fourier_scale=c.fourier_scale,
        time_scale=(sde.N - 1) / sde.T if c.time_scale is None else c.time_scale,
        num_classes=num_classes,
        generator=generator,
        **options,
    )


def _dataset(config: ConfigDict) -> Dataset:
    """The dataset of ``config.data`` (``data.path`` for the datasets read from files).

    Raises:
        ConfigError: a path for a dataset that takes none, or none for one that needs it.
        ValueError: the files' problem in one line (:class:`~scoresde.datasets.DataFileError`).
    """
    c = config.data
    takes = inspect.signature(DATASETS.lookup(c.name)).parameters.get("path")
    if takes is None and c.path is not None:
        raise ConfigError.refusing("data.path", f"None for dataset {c.name!r}", c.path)
    if takes is not None and takes.default is inspect.Parameter.empty and c.path is None:
        raise ConfigError.refusing("data.path", f"the path of the files of {c.name!r}", c.path)
    return load_dataset(c.name, **({} if c.path is None else {"path": c.path}))


def _draw(dataset: Dataset, n: int, generator: torch.Generator) -> Tensor:
    """``n`` training samples in model units (at most the training set; fresh for a density)."""
    n = n if dataset.size is None else min(n, dataset.size)
    return dataset.split("train", n, generator).x


def _training_loss(config: ConfigDict, sde: SDE, data_std: float) -> training.TrainingLoss:
    """``loss_fn(model, batch, generator)``: the score-level loss of
    :func:`scoresde.losses.get_loss_fn` (``kind = training.loss``; the options ``weighting``,
    ``importance_sampling`` and ``eps`` apply to ``"dsm"``, ``reduce`` to every kind) around the
    model's score function; with ``training.p_uncond > 0`` the conditional loss of
    :func:`scoresde.losses.conditional_loss_fn` (labels dropped at that rate) on labelled
    batches."""
    c = config.training
    options: dict[str, Any] = {"reduce": c.reduce}
    if c.loss == "dsm":
        options.update(weighting=c.weighting, importance_sampling=c.importance_sampling, eps=c.eps)
    if c.p_uncond > 0:
        m = config.model
        return conditional_loss_fn(
            sde,
            c.loss,
            p_uncond=c.p_uncond,
            parameterization=m.parameterization,
            input_scaling=m.input_scaling,
            data_std=data_std,
            **options,
        )
    score_loss = get_loss_fn(sde, kind=c.loss, **options)

    def loss_fn(model: nn.Module, batch: Tensor, generator: torch.Generator) -> Tensor:
        return score_loss(_score_fn(config, sde, model, data_std), batch, generator)

    return loss_fn


def _negative_identity(x: Tensor, t: Tensor) -> Tensor:
    """The score ``-x`` of ``N(0, I)``: finite everywhere, for trying out a sampler."""
    return -x


def _in_group(group: str, step: Callable[[], Any]) -> Any:
    """``step()``, its ``ValueError`` turned into a :class:`ConfigError` naming ``group``."""
    try:
        return step()
    except ValueError as err:
        raise ConfigError.in_group(group, str(err)) from err


def _check_schedule(config: ConfigDict, trains_classifier: bool) -> None:
    """Refuse a cosine learning-rate schedule with no updates after its warm-up."""
    c = config.training
    if c.lr_schedule != "cosine":
        return
    fields = ["training.n_iters"] + (["classifier.n_iters"] if trains_classifier else [])
    for field in fields:
        group, name = field.split(".")
        if config[group][name] <= c.warmup:
            allowed = (
                f"an integer above training.warmup = {c.warmup} (the cosine schedule decays over "
                "the updates after the warm-up)"
            )
            raise ConfigError.refusing(field, allowed, config[group][name])


def _check_processes(config: ConfigDict, world: int) -> None:
    """Refuse sizes that do not split over ``world`` processes."""
    c = config.training
    if c.batch_size % world:
        allowed = f"a multiple of the number of processes ({world})"
        raise ConfigError.refusing("training.batch_size", allowed, c.batch_size)
    sizes = {
        "sampling.n_samples": config.sampling.n_samples,
        "eval.n_eval": config.eval.n_eval,
        "eval.density_grid": config.eval.density_grid**2,
    }
    for field, n in sizes.items():
        if n < world:
            value = config[field.split(".")[0]][field.split(".")[1]]
            allowed = f"at least one point for each of the {world} processes"
            raise ConfigError.refusing(field, allowed, value)


def run_device(config: ConfigDict) -> torch.device:
    """The device of ``config.device``: ``"cpu"``; ``"cuda"`` or ``"cuda:N"``; ``"auto"``, a GPU
    where CUDA is available, else the CPU. Under ``torchrun`` each rank takes its own GPU
    (``LOCAL_RANK``, as :func:`scoresde.distributed.process_group` set it) whichever index is given.

    Raises:
        ConfigError: a CUDA device that this machine does not have.
    """
    wanted = "cuda" if config.device == "auto" and torch.cuda.is_available() else config.device
    if wanted == "auto" or wanted == "cpu":
        return torch.device("cpu")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        allowed = "'cpu' or 'auto' on this machine (no CUDA device is available)"
        raise ConfigError.refusing("device", allowed, config.device)
    if distributed.active():
        return torch.device("cuda", torch.cuda.current_device())
    device = torch.device(wanted)
    if device.index is not None and device.index >= count:
        allowed = f"'cpu', 'auto', 'cuda' or 'cuda:N' with N < {count}"
        raise ConfigError.refusing("device", allowed, config.device)
    return device


def build(config: ConfigDict) -> Parts:
    """The parts of the run ``config``, each checked, and all of them tried together.

    Fields are checked by :func:`~scoresde.config.validate_config`; then the SDE, the network and
    the loss are built (their constructors refuse what they cannot do); the sampler and the
    likelihood are run once on one point with the score ``-x`` (milliseconds), so that any
    combination they refuse is refused now, by their own checks; and the memory each stage needs is
    estimated and compared with what the machine has (:func:`check_memory`).

    In a multi-process run the global batch must split evenly over the processes, and every
    process needs at least one point to sample and to evaluate.

    Raises:
        ConfigError: naming the field or the group at fault.
    """
    validate_config(config)
    _check_processes(config, distributed.world_size())
    device = run_device(config)
    sde = _in_group("sde", lambda: SDES.build(config.sde.name, **sde_options(config)))
    dataset = _in_group("data", lambda: _dataset(config))
    shape = tuple(dataset.shape)
    conditioning = conditioning_of(config, dataset, stream_generator(config.seed, "inpaint"))
    _check_schedule(config, conditioning.trains_classifier)
    check_memory(config, sde, shape)
    model = _in_group(
        "model",
        lambda: _network(
            config,
            sde,
            shape,
            stream_generator(config.seed, "init"),
            num_classes=conditioning.network_classes,
        ),
    )
    classifier = None
    if conditioning.trains_classifier:
        classifier = _in_group(
            "classifier",
            lambda: _network(
                config,
                sde,
                shape,
                stream_generator(config.seed, "classifier"),
                num_classes=dataset.num_classes,
                registry=get_classifier,
            ),
        )
    if dataset.num_levels is not None:  # bits/dim of n_eval test images (of the label's class)
        target = conditioning.target
        n_test = len(target.split("test").x)
        if config.eval.n_eval > n_test:
            allowed = f"an integer in [2, {n_test}] (the test images of {target.name!r})"
            raise ConfigError.refusing("eval.n_eval", allowed, config.eval.n_eval)
        n_check = config.eval.n_check
        if n_check == 1 or n_check > config.eval.n_eval:
            allowed = f"0 or an integer in [2, eval.n_eval = {config.eval.n_eval}]"
            raise ConfigError.refusing("eval.n_check", allowed, n_check)
    _check_curve(config, dataset)
    if config.model.data_std is None:
        points = _draw(dataset, 10_000, stream_generator(config.seed, "data_std"))
        data_std = float(points.std())
    else:
        data_std = float(config.model.data_std)
    parts = Parts(
        config=config,
        dataset=dataset,
        sde=sde,
        model=model,
        data_std=data_std,
        loss_fn=_in_group("training", lambda: _training_loss(config, sde, data_std)),
        sampling=sampler_options(config),
        likelihood=likelihood_options(config),
        conditioning=conditioning,
        classifier=None if classifier is None else classifier.to(device),
        device=device,
    )
    model.to(device)
    one = torch.zeros(1, *shape, device=device)  # tried where the stages will run
    generator = torch.Generator(device=device).manual_seed(0)
    _in_group(
        "sampling",
        lambda: sample_sde(
            sde, _negative_identity, one.shape, generator=generator, **parts.sampling
        ),
    )
    if conditioning.mask is not None:
        options = inpaint_options(conditioning, parts.sampling)
        mask = conditioning.mask
        _in_group(
            "sampling",
            lambda: inpaint(sde, _negative_identity, one, mask, generator=generator, **options),
        )
    _in_group(
        "eval",
        lambda: log_likelihood(
            sde, _negative_identity, one, generator=generator, **parts.likelihood
        ),
    )
    return parts


def _check_curve(config: ConfigDict, dataset: Dataset) -> None:
    """``eval.n_curve`` needs ``training.eval_every`` and at most the held-out points."""
    n = config.eval.n_curve
    if n and not config.training.eval_every:
        allowed = "0 while training.eval_every = 0 (the curve is measured every eval_every updates)"
        raise ConfigError.refusing("eval.n_curve", allowed, n)
    held_out = config.training.batch_size if dataset.size is None else None
    if held_out is None:
        held_out = len(dataset.split("test").x)
    if n > held_out:
        allowed = f"an integer in [0, {held_out}] (the held-out points of {dataset.name!r})"
        raise ConfigError.refusing("eval.n_curve", allowed, n)


# -- memory ------------------------------------------------------------------------------------


def available_memory() -> int | None:
    """Bytes of memory available now (Linux ``MemAvailable``; else physical memory; else None)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


class _CountOutputs(TorchDispatchMode):
    """Counts the elements of every tensor the operations under it return."""

    def __init__(self) -> None:
        super().__init__()
        self.elements = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(value, Tensor):
                self.elements += value.numel()
        return out


def _network_footprint(config: ConfigDict, sde: SDE, shape: tuple[int, ...]) -> tuple[int, int]:
    """``(parameters, activation elements per point)`` of the network, without allocating it.

    The network is built on PyTorch's ``meta`` device (shapes only); the activations per point
    are the elements its forward pass creates for a batch of 2 minus those for a batch of 1, so
    the weights' own views do not count.
    """
    with torch.device("meta"):
        net = _in_group("model", lambda: _network(config, sde, shape, torch.Generator()))
        counts = []
        for batch in (1, 2):
            with _CountOutputs() as counter:
                net(torch.zeros(batch, *shape), torch.full((batch,), 0.5))
            counts.append(counter.elements)
    return sum(p.numel() for p in net.parameters()), max(counts[1] - counts[0], 1)


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1000
    raise AssertionError  # unreachable


def check_memory(
    config: ConfigDict, sde: SDE, shape: tuple[int, ...], available: int | None = None
) -> None:
    """Refuse a config whose stages need more memory than the machine has, before any work.

    Estimates, in float32 bytes (4 per element), with ``P`` the network's parameters, ``A`` its
    activations per sample (:func:`_network_footprint`) and ``dim`` the values per sample::

        network   P * 4 * 6          weights, gradients, Adam's two moments, EMA, a checkpoint copy
        training  batch * A * 4 * 3  activations kept for the backward pass, and their gradients
        sampling  n * (A + dim * (K + 4)) * 4 + steps * 8 * 16   K trajectory times, the time grid
        likelihood m * A * 4 * 3 * (D + 1)    m points (held-out or the 2D density grid) with D
                                              vector-Jacobian products (exact trace: D = dim;
                                              n_probes for Hutchinson); for the exact-trace
                                              check of images, m = n_check and D the rows of
                                              one batched product (EXACT_TRACE_BATCH)

    Each is an upper-bound style estimate (every intermediate counted as alive at once), so it
    refuses only sizes that cannot fit, such as a 100,000 x 100,000 density grid.

    Raises:
        ConfigError: naming the field that makes the largest need, the need and what is available.
    """
    available = available_memory() if available is None else available
    if available is None:
        return
    params, act = _network_footprint(config, sde, shape)
    dim = math.prod(shape)
    t, s, e = config.training, config.sampling, config.eval
    steps = s.num_steps or sde.N
    # SMC inpainting moves `particles` points per sample
    copies = s.particles if s.inpaint != "none" and s.inpaint_method == "smc" else 1
    traces = dim if e.trace == "exact" or (e.trace == "auto" and dim <= 16) else e.n_probes
    grid_points = e.density_grid**2 if len(shape) == 1 and dim == 2 else 0
    check_images = e.n_check if len(shape) == 3 else 0  # images only: 2D runs do not check
    check_rows = min(dim, max(1, EXACT_TRACE_BATCH // max(1, check_images)))  # batched rows
    width = "model.hidden" if config.model.name == "mlp" else "model.ch"
    needs = [
        (width, "the network's weights and optimiser state", params * 4 * 6),
        ("training.batch_size", "a training batch", t.batch_size * act * 4 * 3),
        (
            "sampling.n_samples",
            f"sampling {s.n_samples * copies} points",
            s.n_samples * copies * (act + dim * (e.n_process_times + 4)) * 4,
        ),
        ("sampling.num_steps", f"a time grid of {steps} steps", steps * 8 * 16),
        ("eval.n_eval", "the held-out likelihood", e.n_eval * act * 12 * (traces + 1)),
        ("eval.n_check", "the exact-trace check", check_images * act * 12 * (check_rows + 1)),
        (
            "eval.density_grid",
            f"the likelihood of a {e.density_grid} x {e.density_grid} density grid",
            grid_points * act * 12 * (traces + 1),
        ),
    ]
    field, what, need = max(needs, key=lambda item: item[2])
    if need > available:
        value = config[field.split(".")[0]][field.split(".")[1]]
        raise ConfigError(
            field,
            f"config.{field} = {value!r} does not fit: {what} needs about {_bytes(need)}, and "
            f"{_bytes(available)} of memory is available",
        )


# -- the stages --------------------------------------------------------------------------------


@dataclasses.dataclass
class Trained:
    """What :func:`train` returns.

    Attributes:
        model, ema_model: the trained network and its EMA copy (sample with the EMA).
        losses: the loss of every update, resumed ones included.
        section: the ``training`` section of ``metrics.json`` (empty for a loaded model).
    """

    model: nn.Module
    ema_model: nn.Module
    losses: list[float]
    section: dict[str, Any]


def train_settings(config: ConfigDict) -> dict[str, Any]:
    """The keyword arguments of :func:`scoresde.training.train` set by ``config.training``."""
    c = config.training
    names = (
        "n_iters", "lr", "warmup", "lr_schedule", "grad_clip", "ema_decay", "ema_warmup",
        "checkpoint_every", "precision",
    )  # fmt: skip
    return {name: c[name] for name in names}


def train(
    parts: Parts, workdir: str | os.PathLike[str] | None = None, *, progress: bool = False
) -> Trained:
    """Train ``parts.model`` (resuming from ``workdir``'s newest checkpoint, if any).

    The batches are the dataset's stream (:meth:`~scoresde.datasets.Dataset.batches`): fresh
    draws of a density, epoch-shuffled images of a finite dataset, which a resumed run continues
    from the checkpoint's step. Every ``training.eval_every`` updates the EMA model's loss on
    held-out data (one batch drawn once from the ``"eval"`` stream, or a finite dataset's whole
    test split, with that stream's noise) is recorded. In a multi-process run each rank draws its
    share of every batch (:class:`~scoresde.datasets.protocol.Shard`).

    Raises:
        see :func:`scoresde.training.train`.
    """
    c = parts.config.training
    labels = parts.conditioning.conditional_model
    finite = parts.dataset.size is not None
    test = parts.dataset.split("test", None if finite else c.batch_size, parts.generator("eval"))
    held_out = (LabelledBatch(test.x, test.y) if labels else test.x).to(parts.device)
    start = _resume_step(workdir)

    curve_seed = parts.generator("curve", distributed.rank()).initial_seed()

    def held_out_loss(ema_model: nn.Module, step: int) -> dict[str, float]:
        with torch.no_grad():
            loss = parts.loss_fn(ema_model, held_out, parts.generator("eval", 0, parts.device))
        out = {"ema_held_out_loss": float(loss)}
        if parts.config.eval.n_curve:
            out.update(_held_out_likelihood(parts, ema_model, test, curve_seed))
        return out

    result = training.train(
        parts.model,
        parts.loss_fn,
        parts.dataset.batches(c.batch_size, labels=labels, start=start, shard=_shard(parts)),
        seed=parts.seed,
        workdir=workdir,
        eval_every=c.eval_every or None,
        eval_fn=held_out_loss if c.eval_every else None,
        config=trained_fields(parts.config),
        progress=progress,
        **train_settings(parts.config),
    )
    return _trained(result, evals=result.evals)


def _held_out_likelihood(parts: Parts, ema_model: nn.Module, test: Any, seed: int) -> dict:
    """The likelihood curve's point: the EMA model's unconditional likelihood of the first
    ``eval.n_curve`` held-out points, ``test_bpd`` (images, :func:`scoresde.bits_per_dim`) or
    ``test_nll`` (nats), with the noise of ``seed`` at every point of the curve (paired). In a
    multi-process run each rank computes its share of the points with its own ``seed`` (the
    ``"curve"`` stream of its rank) and the shares are gathered."""
    rows = distributed.shard(parts.config.eval.n_curve)
    score_fn = unconditional(parts.cond_score_fn(ema_model))
    if parts.dataset.num_levels is not None:
        bpd = image_eval.curve_bpd(parts, score_fn, test.levels[rows], seed)
        return {"test_bpd": float(distributed.gather(bpd.to(parts.device)).mean())}
    generator = torch.Generator(device=parts.device).manual_seed(seed)
    x = test.x[rows].to(parts.device)
    logp = log_likelihood(parts.sde, score_fn, x, generator=generator, **parts.likelihood)
    return {"test_nll": -float(distributed.gather(logp).mean())}


def _resume_step(workdir: str | os.PathLike[str] | None) -> int:
    """The step of ``workdir``'s newest checkpoint (0 without one): where a resumed run's batch
    stream continues."""
    last = None if workdir is None else latest_checkpoint(os.path.join(workdir, "checkpoints"))
    return 0 if last is None else step_of(last)


def _trained(result: training.TrainResult, **extra: Any) -> Trained:
    """The networks and losses of ``result``, with its ``metrics.json`` section."""
    tail = result.losses[-min(len(result.losses), 500) :]
    section = {
        "steps": result.step,
        "steps_this_run": result.steps_run,
        "final_loss_mean_last_500": float(np.mean(tail)),
        **extra,
        "wall_time_s": result.wall_time,
    }
    return Trained(result.model, result.ema_model, result.losses, section)


def _shard(parts: Parts) -> Shard:
    return Shard(distributed.rank(), distributed.world_size(), parts.seed)


def classifier_fields(config: ConfigDict) -> dict[str, Any]:
    """What determines the trained classifier: :func:`~scoresde.config.trained_fields` and the
    ``classifier`` group but ``n_iters`` (a run may train it further), which the cosine schedule
    keeps (its every rate depends on it)."""
    cosine = config.training.lr_schedule == "cosine"
    own = {k: v for k, v in config.classifier.to_dict().items() if k != "n_iters" or cosine}
    return {**trained_fields(config), "classifier": own}


def train_classifier(
    parts: Parts, workdir: str | os.PathLike[str] | None = None, *, progress: bool = False
) -> Trained:
    """Train ``parts.classifier`` (classifier guidance) by
    :func:`scoresde.losses.classifier_loss_fn` on labelled batches: ``classifier.n_iters``
    updates at ``classifier.lr``, the other settings of ``config.training``; checkpoints in
    ``workdir/checkpoints`` (resumed like the score model's)."""
    c = parts.config
    result = training.train(
        parts.classifier,
        classifier_loss_fn(parts.sde, eps=c.training.eps),
        parts.dataset.batches(
            c.training.batch_size, labels=True, start=_resume_step(workdir), shard=_shard(parts)
        ),
        seed=parts.seed,
        workdir=workdir,
        config=classifier_fields(c),
        progress=progress,
        **{**train_settings(c), "n_iters": c.classifier.n_iters, "lr": c.classifier.lr},
    )
    return _trained(result)


def load_trained(parts: Parts, checkpoint: Checkpoint, network: nn.Module | None = None) -> Trained:
    """The network of ``parts`` (or ``network``, e.g. ``parts.classifier``) with the raw and the
    EMA weights of ``checkpoint``."""
    network = parts.model if network is None else network
    model, ema_model = copy.deepcopy(network), copy.deepcopy(network)
    model.load_state_dict(checkpoint.model)
    ema_model.load_state_dict(checkpoint.ema)
    ema_model.eval().requires_grad_(False)
    return Trained(model, ema_model, list(checkpoint.losses), section={})


@dataclasses.dataclass
class Drawn:
    """What :func:`sample` returns.

    Attributes:
        samples: ``(n_samples, *shape)`` float32 samples in model units.
        data: as many training samples (at most the training set), for the figures.
        times: the times of the process figure, decreasing from ``T``.
        reverse: the sampler's state at ``times``; forward: the noised data at ``times``.
        section: the ``sampling`` section of ``metrics.json``.
    """

    samples: Tensor
    data: Tensor
    times: list[float]
    reverse: list[Tensor]
    forward: list[Tensor]
    section: dict[str, Any]


def _forward_marginals(
    sde: SDE, x0: Tensor, times: list[float], generator: torch.Generator
) -> list[Tensor]:
    """Samples of the forward process ``x_t ~ N(mean(x0, t), std(t)^2 I)`` at each of ``times``."""
    out = []
    for t in times:
        mean, std = sde.marginal_prob(x0, torch.full((x0.shape[0],), t, dtype=x0.dtype))
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        out.append(mean + batch_broadcast(std, x0) * noise)
    return out


def sample(parts: Parts, score_fn: ScoreFn) -> Drawn:
    """Draw ``sampling.n_samples`` samples with the sampler of ``config.sampling``.

    All randomness comes from the ``"sample"`` stream, so the samples are a function of the
    weights, the config, the seed (and the number of processes, each of which draws its share from
    its own stream). The process figure's times are geometric from ``T`` to the sampler's end
    ``eps``: the distribution changes fastest near ``eps``. The sampler runs on ``parts.device``;
    the data and the forward process of the figures are drawn on the CPU, from the same stream
    after the samples (on a GPU, from the stream's CPU generator).
    """
    c, sde = parts.config.sampling, parts.sde
    rank = distributed.rank()
    generator = parts.generator("sample", rank, parts.device)
    host = generator if parts.device.type == "cpu" else parts.generator("sample", rank)
    if parts.conditioning.mask is not None:
        return _inpainted(parts, score_fn, generator, host)
    rows = distributed.shard(c.n_samples)
    eps = grid_end(sde, eps=c.eps, sigma_min=c.sigma_min)
    wanted = np.geomspace(sde.T, eps, parts.config.eval.n_process_times).tolist()
    began = time.perf_counter()
    info = sample_sde(
        sde,
        score_fn,
        (rows.stop - rows.start, *parts.dataset.shape),
        generator=generator,
        device=parts.device,
        trajectory_times=wanted,
        return_info=True,
        **parts.sampling,
    )
    wall = time.perf_counter() - began
    data = _draw(parts.conditioning.target, c.n_samples, host)
    times = info.times.tolist()
    section = {
        "sampler": c.sampler,
        "predictor": c.predictor if c.sampler == "pc" else None,
        "corrector": c.corrector if c.sampler == "pc" else None,
        "n_samples": c.n_samples,
        "nfe": int(distributed.maximum(info.nfe)),
        "wall_time_s": wall,
    }
    return Drawn(
        samples=distributed.gather(info.samples.to(torch.float32)).cpu(),
        data=data,
        times=times,
        reverse=[distributed.gather(x).cpu() for x in info.trajectory],
        forward=_forward_marginals(sde, data, times, host),
        section=section,
    )


def _inpainted(
    parts: Parts, score_fn: ScoreFn, generator: torch.Generator, host: torch.Generator
) -> Drawn:
    """:func:`sample` for inpainting: ``n_samples`` test points of the target (drawn with
    ``host``) completed where the mask hides them (:func:`scoresde.conditioning.inpaint_split`,
    on ``generator``'s device); no process figure. For labelled images the inpainting section
    also holds ``fraction_true_class``, the share of completed test images the dataset's
    evaluation classifier assigns to their true class (``None`` without one)."""
    c = parts.config.sampling
    split = parts.conditioning.target.split("test", c.n_samples, host)
    truth = split.x
    counted = CountedScore(score_fn)
    began = time.perf_counter()
    samples, measures = inpaint_split(
        parts.conditioning, parts.sde, counted, truth, generator, parts.sampling
    )
    if parts.dataset.num_levels is not None and parts.dataset.num_classes is not None:
        label = parts.conditioning.label  # the class's test images, or labelled ones
        labels = split.y if label is None else torch.full((len(truth),), label)
        measures["fraction_true_class"] = image_eval.label_accuracy(parts.dataset, samples, labels)
    section = {
        "sampler": c.sampler if c.inpaint_method == "replacement" else "smc",
        "predictor": c.predictor if c.sampler == "pc" else None,
        "corrector": c.corrector if c.sampler == "pc" else None,
        "n_samples": c.n_samples,
        "nfe": counted.calls,  # smc: each call is on all n_samples x particles at once
        "wall_time_s": time.perf_counter() - began,
        "inpainting": {"mask": c.inpaint, **measures},
    }
    return Drawn(samples.to(torch.float32), truth, [], [], [], section)


@dataclasses.dataclass
class Measured:
    """What :func:`evaluate` returns.

    Attributes:
        likelihood: the ``likelihood`` section of ``metrics.json`` (NLL in nats for continuous
            data, bits/dim for data with grey levels).
        samples: its ``samples`` section (``None`` without samples).
        density_grid: its ``density_grid`` section (2D points only, else ``None``).
        baselines: its ``baselines`` section (data with grey levels only, else ``None``).
        extent: ``(x_min, x_max, y_min, y_max)`` of the density grid (or ``None``).
        model_log_prob, true_log_prob: ``(g, g)`` log-densities on it (or ``None``).
    """

    likelihood: dict[str, Any]
    samples: dict[str, Any] | None
    density_grid: dict[str, Any] | None = None
    baselines: dict[str, Any] | None = None
    extent: tuple[float, float, float, float] | None = None
    model_log_prob: Tensor | None = None
    true_log_prob: Tensor | None = None


def support_is_bounded(dataset: ToyDensity) -> bool:
    """Whether ``dataset``'s density is zero somewhere (``log_prob = -inf``), so that the fraction
    of samples in its support says something. Tested on a grid over three times the extent of
    2,000 points; datasets without an exact ``log_prob`` are not bounded as far as we can tell."""
    if not dataset.has_exact_log_prob:
        return False
    points = dataset.sample(2000, torch.Generator().manual_seed(0)).to(torch.float64)
    lim = 3 * float(points.abs().max())
    axis = torch.linspace(-lim, lim, 61, dtype=torch.float64)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    return bool(torch.isinf(dataset.log_prob(torch.stack([xs.flatten(), ys.flatten()], 1))).any())


#: Samples outside the box of the data's 0.05 % and 99.95 % quantiles per coordinate (widened by
#: 5 % of its size) beyond this fraction mean the samples are far off the data.
FAR_OFF_FRACTION = 0.05


def _sample_quality(
    dataset: ToyDensity, samples: Tensor, entropy: float, generator: torch.Generator
) -> dict[str, Any]:
    """Distances of ``samples`` to fresh data and, where the density is known, their fit to it."""
    fresh = dataset.sample(samples.shape[0], generator)
    outside = metrics.fraction_outside(samples, fresh)
    out: dict[str, Any] = {
        "n": samples.shape[0],
        "energy_distance": metrics.energy_distance(samples, fresh),
        "sliced_wasserstein": metrics.sliced_wasserstein(samples, fresh, generator=generator),
        "fraction_outside_data": outside,
        "far_from_data": outside > FAR_OFF_FRACTION,
    }
    if dataset.has_exact_log_prob:
        logp = dataset.log_prob(samples.to(torch.float64))
        cross_entropy, stderr = metrics.mean_and_stderr(-logp)
        out["cross_entropy"] = cross_entropy
        out["cross_entropy_stderr"] = stderr
        out["cross_entropy_minus_entropy"] = cross_entropy - entropy
        if support_is_bounded(dataset):
            out["fraction_in_support"] = metrics.support_fraction(logp)
    mixture = getattr(dataset, "mixture", None)
    if mixture is not None:
        weights = mixture.mode_weights(samples.to(torch.float64))
        out["mode_weights"] = weights.tolist()
        out["max_mode_weight_error"] = float((weights - mixture.weights).abs().max())
    return out


def evaluate(parts: Parts, score_fn: ScoreFn, samples: Tensor | None = None) -> Measured:
    """The likelihood of held-out data and the quality of ``samples`` (model units).

    Data with grey levels (``dataset.num_levels``, images): bits/dim of ``eval.n_eval`` test
    images (of the label's class in a labelled run) with its agreement check, the baselines, and
    the sample quality of :mod:`scoresde.image_eval`. Continuous 2D data: :func:`_evaluate_density`.
    """
    dataset, target = parts.dataset, parts.conditioning.target
    if dataset.num_levels is None:
        return _evaluate_density(parts, score_fn, samples)
    generator = parts.generator("eval")
    test = target.split("test", parts.config.eval.n_eval, generator).levels
    likelihood = image_eval.likelihood_section(parts, score_fn, test, generator)
    quality = None
    if samples is not None:
        quality = image_eval.sample_quality_section(
            dataset, samples, generator, target=target, label=parts.conditioning.label
        )
    return Measured(
        likelihood=likelihood,
        samples=quality,
        baselines=image_eval.baselines_section(target, test),
    )


def _evaluate_density(parts: Parts, score_fn: ScoreFn, samples: Tensor | None) -> Measured:
    """Held-out NLL against the entropy, the model's density on a grid, and the sample metrics.

    ``nll_minus_entropy`` is, where the data's density is known, the mean over the same held-out
    points of ``log p_data(x) - log p_model(x)``, an estimate of ``KL(data || model) >= 0`` with a
    small variance; elsewhere the difference of the two means. All randomness comes from the
    ``"eval"`` stream. In a multi-process run each rank computes the likelihood of its share of
    the points (the held-out points are the same on every rank; Hutchinson's probes come from the
    rank's own stream) and the log-densities are gathered in order.
    """
    dataset, e = parts.conditioning.target, parts.config.eval
    generator = parts.generator("eval")
    x = dataset.sample(e.n_eval, generator)
    rank = distributed.rank()
    on_cpu = parts.device.type == "cpu"
    own = generator if rank == 0 and on_cpu else parts.generator("eval", rank, parts.device)
    began = time.perf_counter()
    result = _sharded_likelihood(parts, score_fn, x, own)
    nll_time = time.perf_counter() - began
    nll_per_point = -result.logp.to(torch.float64)
    nll, nll_se = metrics.mean_and_stderr(nll_per_point)
    entropy, entropy_se = dataset.entropy()
    if dataset.has_exact_log_prob:
        gap, gap_se = metrics.mean_and_stderr(dataset.log_prob(x.to(torch.float64)) + nll_per_point)
    else:
        gap, gap_se = nll - entropy, math.hypot(nll_se, entropy_se)
    likelihood = {
        "n_eval": e.n_eval,
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
    g = e.density_grid
    axis = torch.linspace(-lim, lim, g)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    grid = torch.stack([xs.flatten(), ys.flatten()], dim=1)
    began = time.perf_counter()
    on_grid = _sharded_likelihood(parts, score_fn, grid, own)
    grid_time = time.perf_counter() - began
    truth = None
    if dataset.has_exact_log_prob:
        truth = dataset.log_prob(grid.to(torch.float64)).reshape(g, g)
    quality = None
    if samples is not None:
        quality = _sample_quality(dataset, samples, entropy, generator)
        quality.update(class_measures(parts.conditioning, parts.dataset, samples, generator))
    return Measured(
        likelihood=likelihood,
        samples=quality,
        density_grid={"points": g * g, "nfe": on_grid.nfe, "wall_time_s": grid_time},
        extent=(-lim, lim, -lim, lim),
        model_log_prob=on_grid.logp.reshape(g, g),
        true_log_prob=truth,
    )


class _Likelihood(NamedTuple):
    logp: Tensor
    nfe: int


def _sharded_likelihood(
    parts: Parts, score_fn: ScoreFn, x: Tensor, generator: torch.Generator
) -> _Likelihood:
    """The log-likelihood of every point of ``x``, each rank computing its share (on the score
    function it is given: the plain EMA network, never a DDP wrapper, whose collectives would hang
    when an adaptive solver takes different steps on different ranks); the most score evaluations
    any rank made."""
    result = log_likelihood(
        parts.sde,
        score_fn,
        x[distributed.shard(x.shape[0])].to(parts.device),
        generator=generator,
        return_info=True,
        **parts.likelihood,
    )
    logp = distributed.gather(result.logp).cpu()
    return _Likelihood(logp, int(distributed.maximum(result.nfe)))


def draw(
    parts: Parts,
    trained: Trained | None = None,
    drawn: Drawn | None = None,
    measured: Measured | None = None,
) -> dict[str, Figure]:
    """The figures of whatever stages ran, by file name: ``loss.png`` (the losses of ``trained``
    with its periodic evaluations), ``samples.png``, ``process.png``, and ``density.png`` (2D
    points) or ``neighbours.png`` (a finite dataset)."""
    from scoresde import plotting  # matplotlib only when drawing: a refused run starts faster

    c = parts.config
    what = ", ".join(
        filter(None, (c.data.name, parts.conditioning.describe(), f"{c.sde.name} SDE"))
    )
    figures = {}
    if trained is not None and trained.losses:
        losses = trained.losses
        figures["loss.png"] = plotting.plot_loss(
            np.arange(1, len(losses) + 1),
            losses,
            evals=trained.section.get("evals", []),
            title=f"training loss: {what}",
        )
    points = len(parts.dataset.shape) == 1
    if drawn is not None and points:
        title = f"{what}, {c.sampling.sampler} sampler: {c.sampling.n_samples} samples"
        if parts.conditioning.mask is not None:
            title = f"{what}: test data and their {c.sampling.inpaint} inpainted"
        figures["samples.png"] = plotting.plot_samples(drawn.data, drawn.samples, title=title)
        if drawn.times:
            figures["process.png"] = plotting.plot_process(
                drawn.forward, drawn.reverse, drawn.times, title=f"diffusion: {what}"
            )
    elif drawn is not None:
        figures.update(_draw_shown(parts, drawn, what))
    if measured is not None and measured.model_log_prob is not None:
        figures["density.png"] = plotting.plot_density(
            measured.extent,
            measured.model_log_prob,
            measured.true_log_prob,
            title=f"log-density: {what}",
        )
    return figures


#: Samples in the figures of data drawn by ``show`` (images), and samples beside their neighbours.
SHOWN, NEIGHBOURS, PROCESS = 64, 16, 8


def _draw_shown(parts: Parts, drawn: Drawn, what: str) -> dict[str, Figure]:
    """``samples.png``, ``process.png`` and (finite datasets) ``neighbours.png``, drawn by the
    dataset's ``show``: training data beside samples, the forward and reverse process of
    :data:`PROCESS` samples, and :data:`NEIGHBOURS` samples beside their nearest training samples
    (Euclidean, model units). An inpainting run's ``samples.png`` shows the test images, their
    known entries and the completions instead, and it has no ``process.png``."""
    from scoresde import plotting
    from scoresde.image_metrics import nearest_neighbours

    c, show = parts.config, parts.dataset.show
    n = min(SHOWN, len(drawn.samples))
    mask = parts.conditioning.mask
    if mask is None:
        figures = {
            "samples.png": plotting.shown_grid(
                [[drawn.data[:n], drawn.samples[:n]]],
                show,
                col_labels=["training data", f"samples ({c.sampling.sampler})"],
                title=f"{what}: {n} of {c.sampling.n_samples} samples",
            ),
            "process.png": plotting.shown_grid(
                [[x[:PROCESS] for x in drawn.forward], [x[:PROCESS] for x in drawn.reverse]],
                show,
                row_labels=["forward SDE", "reverse process"],
                col_labels=[f"t = {t:.3g}" for t in drawn.times],
                title=f"diffusion: {what}",
            ),
        }
    else:  # the test images, what the sampler saw of them (hidden entries at 0), the completions
        truth = drawn.data[:n]
        figures = {
            "samples.png": plotting.shown_grid(
                [[truth, torch.where(mask, truth, torch.zeros(())), drawn.samples[:n]]],
                show,
                col_labels=["test images", "known", f"inpainted ({c.sampling.inpaint_method})"],
                title=f"{what}: {n} of {c.sampling.n_samples} test images, {c.sampling.inpaint}",
            )
        }
    if parts.dataset.size is not None:
        train = parts.dataset.split("train").x
        samples = drawn.samples[:NEIGHBOURS]
        _, nearest = nearest_neighbours(samples, train, k=1)
        figures["neighbours.png"] = plotting.shown_grid(
            [[samples, train[nearest[:, 0]]]],
            show,
            col_labels=["samples", "nearest training images"],
            title=f"{what}: nearest neighbours",
        )
    return figures
