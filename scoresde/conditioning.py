"""Conditional generation in a run: a class label, guidance and inpainting, from the config.

The ``sampling`` fields ``label``, ``guidance``, ``guidance_scale``, ``inpaint``,
``inpaint_method``, ``particles``, ``twist`` and ``training.p_uncond`` say what a run samples;
:func:`conditioning_of` checks them against the dataset (its ``shape`` and ``num_classes`` only, so
points and images take the same flags) and returns a :class:`Conditioning`, which
:func:`scoresde.pipeline.build` keeps in the run's parts. It composes the run's score function
from the trained networks with :mod:`scoresde.guidance`, so the samplers, the likelihood and the
stages see one plain :data:`~scoresde.sde.ScoreFn`:

================================ ================================================================
settings                          the score sampled
================================ ================================================================
no label                          ``s(x, t)``: the model (a conditional one with its null label)
``label=y``                       ``s(x, t, y)``: the conditional network (``p_uncond > 0``)
``label=y, guidance=cfg``         ``gamma s(x, t, y) - (gamma - 1) s(x, t, None)``
``label=y, guidance=classifier``  ``s(x, t) + gamma grad_x log p_t(y | x)``, the noisy classifier
                                  trained in the run (``classifier`` group)
================================ ================================================================

``gamma = guidance_scale`` is on one scale for both guidances: 1 is the conditional law, 0 the
unconditional one, larger values concentrate the class (classifier-free guidance's ``w`` of
:func:`~scoresde.guidance.classifier_free` is ``gamma - 1``; ``diffusers``' ``guidance_scale`` is
``gamma``). With a label, the run is measured against the class's own law (:func:`target_of`):
the exact conditional of a mixture, the class's rows of any other labelled dataset.

**Inpainting** (``sampling.inpaint``): the samples complete test data of the target, whose entries
are known where the mask is True, with :func:`scoresde.inpaint`. A named mask says which entries
are *inpainted* (unknown), on the shape ``D`` of one sample read like an image, the last axis
running left to right and the one before it top to bottom:

============== ====================================================================================
``left_half``   the first ``floor(n / 2)`` indices of the last axis (2-D points: ``x`` inpainted,
                ``y`` known; images ``(C, H, W)``: the left half of every row)
``lower_half``  the last ``n - floor(n / 2)`` indices of the axis before the last (images: the
                lower half; samples with one axis: the second half of it, ``y`` of a 2-D point)
``random:P``    ``round(P n)`` entries of the ``n`` (at least one, at most ``n - 1``), chosen from
                the run's seed, the same for every sample; ``0 < P < 1``
a file          ``*.npy``: a boolean array of shape ``D``, **True where known**, the mask of
                :func:`scoresde.inpaint` itself
============== ====================================================================================
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from scoresde.config import ConfigError
from scoresde.datasets.protocol import Dataset, EpochBatches, Split, check_split
from scoresde.guidance import (
    Classifier,
    CondScoreFn,
    classifier_free,
    classifier_guidance,
    unconditional,
)
from scoresde.inpainting import SMC_OPTIONS, inpaint
from scoresde.sde import SDE, ScoreFn
from scoresde.validation import check_int, refusal

__all__ = [
    "Conditioning",
    "conditioning_of",
    "named_mask",
    "target_of",
    "ClassSubset",
    "inpaint_split",
]

_MASKS = "'none', 'lower_half', 'left_half', 'random:P' (0 < P < 1) or a mask file (.npy)"


@dataclasses.dataclass(frozen=True)
class Conditioning:
    """What a run samples, checked against its dataset by :func:`conditioning_of`.

    Attributes:
        label: the class to sample, or ``None``.
        guidance: ``"none"``, ``"classifier"`` or ``"cfg"``.
        scale: the guidance scale ``gamma`` (module docstring).
        p_uncond: the label dropout of the score network's training; ``> 0``: a conditional network.
        num_classes: the dataset's classes (``None``: unlabelled).
        mask: the inpainting mask, shape ``D``, True where known; ``None``: no inpainting.
        inpaint_method, particles, twist: the arguments of :func:`scoresde.inpaint` (the last
            two for ``"smc"`` only).
        target: the law the samples are measured against: the dataset, or its class ``label``.
    """

    label: int | None
    guidance: str
    scale: float
    p_uncond: float
    num_classes: int | None
    mask: Tensor | None
    inpaint_method: str
    particles: int
    twist: bool
    target: Any

    @property
    def conditional_model(self) -> bool:
        """Whether the score network takes a label (trained with label dropout)."""
        return self.p_uncond > 0

    @property
    def network_classes(self) -> int | None:
        """The ``num_classes`` of the score network: the dataset's for a conditional one."""
        return self.num_classes if self.conditional_model else None

    @property
    def trains_classifier(self) -> bool:
        """Whether the run trains a noise-conditional classifier (classifier guidance)."""
        return self.guidance == "classifier"

    def score_fn(self, cond_score_fn: CondScoreFn, classifier: Classifier | None = None) -> ScoreFn:
        """The score the run samples (module table), from the model's conditional score
        ``cond_score_fn(x, t, y)`` (``y = None``: unconditional) and, for classifier guidance,
        the trained classifier."""
        if self.label is None:
            return unconditional(cond_score_fn)
        if self.guidance == "classifier":
            if classifier is None:
                raise ValueError("classifier guidance needs the trained classifier; got None")
            return classifier_guidance(
                unconditional(cond_score_fn), classifier, self.label, self.scale
            )
        return classifier_free(cond_score_fn, self.label, self.scale - 1.0)

    def describe(self) -> str:
        """A few words for titles and the summary, e.g. ``class 3, cfg gamma = 2``."""
        words = [] if self.label is None else [f"class {self.label}"]
        if self.guidance != "none":
            words.append(f"{self.guidance} guidance, gamma = {self.scale:g}")
        return ", ".join(words)


def conditioning_of(
    config: Any, dataset: Dataset, mask_generator: torch.Generator | None = None
) -> Conditioning:
    """The :class:`Conditioning` of ``config`` on ``dataset``; every setting that cannot work is
    refused here, before any work.

    Arguments:
        config: a config whose fields :func:`~scoresde.config.validate_config` has checked.
        dataset: the run's dataset (only ``name``, ``shape``, ``num_classes`` and, for a label,
            ``given_label`` or ``split`` are used).
        mask_generator: the source of a ``random:P`` mask.

    Raises:
        ConfigError: a label outside the dataset's classes or on unlabelled data, guidance without
            a label or without the network it needs, a guidance scale without guidance, label
            dropout on unlabelled data, a bad mask (module docstring), or ``twist`` without SMC
            inpainting.
    """
    s, classes = config.sampling, dataset.num_classes
    p_uncond = float(config.training.p_uncond)
    if p_uncond > 0 and classes is None:
        raise ConfigError.refusing(
            "training.p_uncond", f"0 for dataset {dataset.name!r}, which has no labels", p_uncond
        )
    if s.label is not None:
        if classes is None:
            allowed = f"None for dataset {dataset.name!r}, which has no labels"
            raise ConfigError.refusing("sampling.label", allowed, s.label)
        if s.label >= classes:
            allowed = f"None or a class of dataset {dataset.name!r}, in [0, {classes - 1}]"
            raise ConfigError.refusing("sampling.label", allowed, s.label)
    if s.guidance != "none" and s.label is None:
        raise ConfigError(
            "sampling.label",
            f"config.sampling.guidance = {s.guidance!r} needs a class: set sampling.label",
        )
    if s.label is not None and s.guidance != "classifier" and p_uncond == 0:
        what = "a label" if s.guidance == "none" else f"guidance {s.guidance!r}"
        raise ConfigError(
            "training.p_uncond",
            f"config.sampling: {what} needs a conditional network (training.p_uncond > 0, e.g. "
            "0.1) or sampling.guidance = 'classifier'",
        )
    if s.twist and (s.inpaint == "none" or s.inpaint_method != "smc"):
        allowed = "False unless sampling.inpaint_method is 'smc' (and sampling.inpaint is set)"
        raise ConfigError.refusing("sampling.twist", allowed, s.twist)
    if s.guidance == "none" and s.guidance_scale != 1:
        allowed = "1 without guidance (sampling.guidance is 'none')"
        raise ConfigError.refusing("sampling.guidance_scale", allowed, s.guidance_scale)
    target = dataset if s.label is None else target_of(dataset, s.label)
    mask = None
    if s.inpaint != "none":
        mask = named_mask(s.inpaint, tuple(dataset.shape), mask_generator)
    return Conditioning(
        label=s.label,
        guidance=s.guidance,
        scale=float(s.guidance_scale),
        p_uncond=p_uncond,
        num_classes=classes,
        mask=mask,
        inpaint_method=s.inpaint_method,
        particles=s.particles,
        twist=bool(s.twist),
        target=target,
    )


# -- masks ------------------------------------------------------------------------------------


def named_mask(
    spec: str, shape: tuple[int, ...], generator: torch.Generator | None = None
) -> Tensor:
    """The mask ``spec`` (module docstring) for samples of shape ``shape``: True where known.

    Raises:
        ConfigError: (field ``sampling.inpaint``) an unknown name, a fraction outside ``(0, 1)``,
            an unreadable file, an array that is not boolean of shape ``shape``, or a mask that
            leaves nothing known or nothing to inpaint.
    """
    field = "sampling.inpaint"
    n = math.prod(shape)
    unknown = torch.zeros(shape, dtype=torch.bool)
    if spec == "left_half":
        unknown[..., : shape[-1] // 2] = True
    elif spec == "lower_half":
        axis = max(len(shape) - 2, 0)
        index = [slice(None)] * len(shape)
        index[axis] = slice(shape[axis] // 2, None)
        unknown[tuple(index)] = True
    elif spec.startswith("random:"):
        try:
            p = float(spec.removeprefix("random:"))
        except ValueError:
            p = math.nan
        if not 0 < p < 1:
            raise ConfigError.refusing(field, "'random:P' with 0 < P < 1", spec)
        count = min(max(round(p * n), 1), n - 1)
        chosen = torch.randperm(n, generator=generator)[:count]
        unknown.view(-1)[chosen] = True
    elif spec.endswith(".npy") or Path(spec).exists():
        return ~_mask_file(spec, shape, field)
    else:
        raise ConfigError.refusing(field, _MASKS, spec)
    if not unknown.any() or unknown.all():
        raise ConfigError(
            field,
            f"config.sampling.inpaint = {spec!r} on samples of shape {shape} leaves "
            f"{'nothing to inpaint' if not unknown.any() else 'nothing known'}",
        )
    return ~unknown


def _mask_file(path: str, shape: tuple[int, ...], field: str) -> Tensor:
    """The *unknown* entries of the mask file ``path`` (True where known), checked."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise ConfigError(field, f"config.sampling.inpaint: cannot read {path!r} ({err})") from None
    if not isinstance(array, np.ndarray) or array.dtype != np.bool_ or array.shape != shape:
        got = (
            f"{array.dtype} of shape {array.shape}"
            if isinstance(array, np.ndarray)
            else type(array).__name__
        )
        allowed = f"a boolean array of the samples' shape {shape} (True where known)"
        raise ConfigError(field, refusal(f"config.sampling.inpaint {path!r}", allowed, got))
    if array.all() or not array.any():
        raise ConfigError(
            field,
            f"config.sampling.inpaint {path!r} must mark some entries known (True) and some "
            f"unknown (False); it is all {bool(array.flat[0])}",
        )
    return ~torch.from_numpy(array)


# -- the class's own law ----------------------------------------------------------------------


def target_of(dataset: Dataset, label: int) -> Any:
    """The law of class ``label`` of ``dataset``, what a labelled run is measured against: the
    dataset's own ``given_label(label)`` where it has one (the exact conditional of a mixture),
    else :class:`ClassSubset`."""
    given_label = getattr(dataset, "given_label", None)
    return given_label(label) if callable(given_label) else ClassSubset(dataset, label)


class ClassSubset(Dataset):
    """The samples of one class of a labelled dataset, as a dataset (unlabelled).

    Splits and batches hold the rows of ``dataset``'s splits whose label is ``label``; everything
    else (shape, levels, range, display) is ``dataset``'s.

    Arguments:
        dataset: a labelled :class:`~scoresde.datasets.protocol.Dataset` whose ``split(name)``
            returns all of a split's rows.
        label: the class, in ``[0, num_classes - 1]``.
    """

    def __init__(self, dataset: Dataset, label: int):
        if dataset.num_classes is None:
            raise ValueError(refusal("dataset", "a labelled dataset", dataset.name))
        self.dataset = dataset
        self.label = check_int("label", label, 0, dataset.num_classes - 1)
        self.name = f"{dataset.name}|y={label}"
        self.shape = tuple(dataset.shape)
        self.num_levels, self.data_range = dataset.num_levels, dataset.data_range

    def split(
        self, name: str, n: int | None = None, generator: torch.Generator | None = None
    ) -> Split:
        """The class's rows of ``dataset.split(name)``: all, or ``n`` of them drawn without
        replacement from ``generator``."""
        whole = self.dataset.split(check_split(name))
        rows = (whole.y == self.label).nonzero().flatten()
        if n is not None:
            n = check_int("n", n, 1, len(rows))
            rows = rows[torch.randperm(len(rows), generator=generator)[:n]]
        levels = None if whole.levels is None else whole.levels[rows]
        return Split(whole.x[rows], None, levels)

    def batches(self, batch_size: int, *, labels: bool = False, start: int = 0) -> EpochBatches:
        """Epoch-shuffled batches of the class's training rows (:class:`EpochBatches`)."""
        self._check_labels(labels)
        return EpochBatches(self.split("train").x, batch_size, start=start)

    def show(self, ax: Any, x: Tensor) -> None:
        self.dataset.show(ax, x)

    def to_data(self, x: Tensor) -> Tensor:
        return self.dataset.to_data(x)


# -- inpainting test data ---------------------------------------------------------------------


def inpaint_split(
    conditioning: Conditioning,
    sde: SDE,
    score_fn: ScoreFn,
    truth: Tensor,
    generator: torch.Generator,
    sampling: dict[str, Any],
) -> tuple[Tensor, dict[str, Any]]:
    """Complete ``truth`` (test data of the target, ``(B, *D)``) where the mask hides it.

    Arguments:
        conditioning: with a ``mask``.
        sde, score_fn: the run's SDE and score.
        truth: the test points; their known entries are the observations.
        generator: the source of randomness; the sampler runs on its device, and the samples
            come back to ``truth``'s.
        sampling: the run's sampler options (:func:`scoresde.pipeline.sampler_options`): all of
            them for ``"replacement"``, the grid's (``num_steps``, ``grid``, ``eps``, ``rho``,
            ``denoise``) for ``"smc"``, which is its own sampler.

    Returns:
        the completed samples ``(B, *D)`` and the ``inpainting`` measures: the mask, the method,
        the root-mean-square error to the truth over the inpainted entries (for images also in
        the data's own units, ``rmse_to_truth_levels``: grey levels) and, where the target is a
        mixture, the same against the exact conditional (:func:`_exact_measures`).
    """
    mask = conditioning.mask
    options = inpaint_options(conditioning, sampling)
    observed = truth.to(generator.device)
    samples = inpaint(sde, score_fn, observed, mask, generator=generator, **options)
    samples = samples.to(truth.device)
    unknown = ~mask.expand(truth.shape)
    section: dict[str, Any] = {
        "method": conditioning.inpaint_method,
        "particles": conditioning.particles if conditioning.inpaint_method == "smc" else None,
        "twist": conditioning.twist if conditioning.inpaint_method == "smc" else None,
        "known_fraction": float(mask.float().mean()),
        "rmse_to_truth": _rmse(samples, truth, unknown),
    }
    target = conditioning.target
    if target.num_levels is not None:  # images: the same error in the data's units (grey levels)
        section["rmse_to_truth_levels"] = _rmse(
            target.to_data(samples), target.to_data(truth), unknown
        )
    mixture = getattr(target, "mixture", None)
    if mixture is not None:
        section.update(_exact_measures(mixture, truth, samples, mask))
    return samples, section


def inpaint_options(conditioning: Conditioning, sampling: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :func:`scoresde.inpaint` from the run's sampler options."""
    method = conditioning.inpaint_method
    if method == "smc":
        options = {k: v for k, v in sampling.items() if k in SMC_OPTIONS}
        return {
            "method": method,
            "particles": conditioning.particles,
            "twist": conditioning.twist,
            **options,
        }
    return {"method": method, **sampling}


def _rmse(a: Tensor, b: Tensor, where: Tensor) -> float:
    return float((a - b).to(torch.float64)[where].pow(2).mean().sqrt())


def _exact_measures(mixture: Any, truth: Tensor, samples: Tensor, mask: Tensor) -> dict[str, float]:
    """Against the exact conditional ``p(x_u | x_o)`` of each test point (``mixture.condition``):

    * ``rmse_to_exact_mean``: the samples' root-mean-square distance to its mean, beside
      ``exact_rmse_to_mean``, that of exact samples (``sqrt(mean tr Cov / d_u)``), and
      ``exact_mean_rmse_to_truth``, the error of the best point estimate;
    * ``nll_gap``: ``mean_b [log p(x_u,b^true | x_o,b) - log p(x_u,b | x_o,b)]``, the samples'
      cross-entropy under the exact conditional minus that of the truth (itself an exact draw):
      about 0 for exact samples (negative only by noise or for samples contracted onto modes).
    """
    flat_mask = mask.flatten()
    unknown = ~flat_mask
    squared, spread, best, gap = [], [], [], []
    for x_true, x in zip(truth.to(torch.float64), samples.to(torch.float64), strict=True):
        law = mixture.condition(x_true.flatten(), flat_mask)
        mean = (law.weights[:, None] * law.means).sum(0)
        second = (law.weights[:, None] * (law.covs.diagonal(dim1=1, dim2=2) + law.means**2)).sum(0)
        u_true, u = x_true.flatten()[unknown], x.flatten()[unknown]
        squared.append((u - mean).pow(2).mean())
        spread.append((second - mean**2).mean())
        best.append((u_true - mean).pow(2).mean())
        gap.append(law.log_prob(u_true[None]) - law.log_prob(u[None]))
    return {
        "rmse_to_exact_mean": float(torch.stack(squared).mean().sqrt()),
        "exact_rmse_to_mean": float(torch.stack(spread).mean().sqrt()),
        "exact_mean_rmse_to_truth": float(torch.stack(best).mean().sqrt()),
        "nll_gap": float(torch.cat(gap).mean()),
    }


# -- measures of labelled samples -------------------------------------------------------------


def class_measures(
    conditioning: Conditioning, dataset: Dataset, samples: Tensor, generator: torch.Generator
) -> dict[str, float]:
    """For a labelled run on a mixture: ``fraction_in_class``, the fraction of ``samples`` whose
    most probable class under the data law, ``argmax_y p_0(y | x)``, is the label, beside
    ``fraction_in_class_exact``, the same for as many exact samples of the class's law (below 1
    where classes overlap). Empty without a label or an oracle."""
    mixture = getattr(dataset, "mixture", None)
    target = getattr(conditioning.target, "mixture", None)
    if conditioning.label is None or mixture is None or target is None:
        return {}

    def in_class(x: Tensor) -> float:
        classes = mixture.class_log_posterior(x.to(torch.float64)).argmax(1)
        return float((classes == conditioning.label).double().mean())

    exact = target.sample(samples.shape[0], generator)
    return {"fraction_in_class": in_class(samples), "fraction_in_class_exact": in_class(exact)}
