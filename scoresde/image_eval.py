"""Evaluation of a model of discrete images: bits/dim on the test split, baselines, sample quality.

What :func:`scoresde.pipeline.evaluate` measures for a dataset with grey levels (``num_levels``):

* :func:`likelihood_section`: the dequantised bits/dim of ``eval.n_eval`` test images
  (:func:`scoresde.bits_per_dim` with the dataset's ``num_levels`` and ``data_range``), their mean
  and its standard error over images (which holds the dequantisation noise and, with Hutchinson's
  trace, the probes' noise: each image's estimate is unbiased for its own expectation), the trace
  used (``eval.trace``; ``"auto"`` is exact up to 16 values per image), the score evaluations and
  the wall time. Then the **agreement check**: the first ``eval.n_check`` of those images once
  with the exact trace and once with Hutchinson's (``eval.n_probes`` probes), with the same
  dequantisation noise, so that the paired difference measures the trace estimator alone; its
  mean should be within a few standard errors of 0.
* :func:`baselines_section`: on the same test images, the reference models of
  :mod:`scoresde.baselines` fitted to the training split (uniform, independent per-pixel
  categorical, full-covariance Gaussian), each with its standard error.
* :func:`sample_quality_section`: :func:`scoresde.image_metrics.sample_quality` against the whole
  training and test splits, in the features of the dataset's evaluation classifier
  (:data:`EVAL_CLASSIFIERS`: digits ships one), and ``max_class_error``, the largest
  ``|share - 1 / C|`` of a predicted class. Without a classifier only the pixel-space measures
  (precision/recall, near-copies, nearest-neighbour distances) are given. A run with a label is
  measured against that class's images (bits/dim and baselines too), and ``label_accuracy``, the
  fraction of samples the classifier assigns to the label, replaces ``max_class_error``;
  :func:`label_accuracy` measures inpainted test images against their true classes.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from scoresde import baselines, image_metrics
from scoresde.likelihood import EXACT_TRACE_MAX_DIM, bits_per_dim
from scoresde.metrics import mean_and_stderr
from scoresde.nets import load_digits_classifier
from scoresde.registry import Registry
from scoresde.score_calls import CountedScore

if TYPE_CHECKING:
    from scoresde.datasets import Dataset
    from scoresde.pipeline import Parts
    from scoresde.sde import ScoreFn

__all__ = [
    "EVAL_CLASSIFIERS",
    "likelihood_section",
    "baselines_section",
    "sample_quality_section",
    "label_accuracy",
    "curve_bpd",
]

EVAL_CLASSIFIERS: Registry[Any] = Registry(
    "evaluation classifier", {"digits": load_digits_classifier}
)
"""Dataset name -> loader of its clean-image evaluation classifier (the FD's feature space)."""


def _trace_used(trace: str, dim: int) -> str:
    """The divergence :func:`scoresde.log_likelihood` uses for ``trace`` at ``dim`` values."""
    exact = trace == "exact" or (trace == "auto" and dim <= EXACT_TRACE_MAX_DIM)
    return "exact" if exact else "hutchinson"


def _bpd(
    parts: Parts, score_fn: ScoreFn, levels: Tensor, seed: int, **options: Any
) -> tuple[Tensor, int, float]:
    """Bits/dim per image, the score evaluations and the seconds, the noise from ``seed`` (on
    ``parts.device``, where the likelihood is computed)."""
    counted = CountedScore(score_fn)
    settings = {**parts.likelihood, **options}
    began = time.perf_counter()
    bpd = bits_per_dim(
        parts.sde,
        counted,
        levels.to(parts.device),
        num_bins=parts.dataset.num_levels,
        data_range=parts.dataset.data_range,
        generator=torch.Generator(device=parts.device).manual_seed(seed),
        **settings,
    )
    return bpd.to("cpu", torch.float64), counted.calls, time.perf_counter() - began


def likelihood_section(
    parts: Parts, score_fn: ScoreFn, test_levels: Tensor, generator: torch.Generator
) -> dict[str, Any]:
    """Bits/dim of ``test_levels`` and the exact-vs-Hutchinson agreement check (module doc)."""
    e = parts.config.eval
    dim = math.prod(test_levels.shape[1:])
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    bpd, nfe, wall = _bpd(parts, score_fn, test_levels, seed)
    mean, stderr = mean_and_stderr(bpd)
    trace = _trace_used(e.trace, dim)
    section: dict[str, Any] = {
        "n_eval": len(test_levels),
        "bpd": mean,
        "bpd_stderr": stderr,
        "method": "exact trace" if trace == "exact" else f"hutchinson, {e.n_probes} probes",
        "num_levels": parts.dataset.num_levels,
        "nfe": nfe,
        "wall_time_s": wall,
    }
    if e.n_check:
        subset = test_levels[: e.n_check]
        exact, _, exact_wall = _bpd(parts, score_fn, subset, seed, trace="exact")
        probes, _, _ = _bpd(parts, score_fn, subset, seed, trace="hutchinson")
        exact_mean, exact_se = mean_and_stderr(exact)
        diff, diff_se = mean_and_stderr(probes - exact)
        section["check"] = {
            "n": len(subset),
            "bpd_exact": exact_mean,
            "bpd_exact_stderr": exact_se,
            "hutchinson_minus_exact": float(diff),
            "hutchinson_minus_exact_stderr": float(diff_se),
            "wall_time_exact_s": exact_wall,
        }
    return section


def curve_bpd(parts: Parts, score_fn: ScoreFn, test_levels: Tensor, seed: int) -> Tensor:
    """Bits/dim of each of ``test_levels`` (float64 on the CPU) with the run's likelihood
    settings, the noise from ``seed``: a rank's share of a point of the training curve
    (:func:`scoresde.pipeline.train`)."""
    bpd, _, _ = _bpd(parts, score_fn, test_levels, seed)
    return bpd


def baselines_section(dataset: Dataset, test_levels: Tensor) -> dict[str, Any]:
    """Bits/dim of the reference models of :mod:`scoresde.baselines` on ``test_levels``."""
    train = dataset.split("train").levels
    levels = dataset.num_levels
    out: dict[str, Any] = {"uniform": baselines.uniform_bpd(levels), "uniform_stderr": 0.0}
    for name, bpd in (
        ("categorical", baselines.categorical_bpd(train, test_levels, levels)),
        ("gaussian", baselines.gaussian_bpd(train, test_levels)),
    ):
        out[name], out[f"{name}_stderr"] = mean_and_stderr(bpd)
    return out


def sample_quality_section(
    dataset: Dataset,
    samples: Tensor,
    generator: torch.Generator,
    *,
    target: Dataset | None = None,
    label: int | None = None,
) -> dict[str, Any]:
    """Sample quality of ``samples`` (model units) against the splits of ``target`` (default: the
    whole ``dataset``; a class of it for a labelled run), in the features of ``dataset``'s
    evaluation classifier (module doc); with ``label``, also ``label_accuracy``, the fraction
    of samples the classifier assigns to it."""
    began = time.perf_counter()
    target = dataset if target is None else target
    train, test = target.split("train").x, target.split("test").x
    out: dict[str, Any] = {"n": len(samples)}
    if dataset.name in EVAL_CLASSIFIERS:
        classifier = EVAL_CLASSIFIERS.lookup(dataset.name)()
        labels = None if label is None else torch.full((len(samples),), label)
        out.update(
            image_metrics.sample_quality(
                classifier, samples, train, test, labels=labels, generator=generator
            )
        )
        if label is None:  # a labelled run's shares should be one-hot: label_accuracy says
            shares = torch.tensor(out["class_fractions"])
            out["max_class_error"] = float((shares - 1 / len(shares)).abs().max())
    else:
        rows = torch.randperm(len(train), generator=generator)[: len(samples)]  # equal sizes
        out["precision"], out["recall"] = image_metrics.precision_recall(train[rows], samples)
        out["near_copy_fraction"] = image_metrics.near_copy_fraction(samples, train)
        nearest, _ = image_metrics.nearest_neighbours(samples, train, k=1)
        nearest_test, _ = image_metrics.nearest_neighbours(test, train, k=1)
        out["nn_distance_median"] = float(nearest[:, 0].median())
        out["nn_distance_median_test"] = float(nearest_test[:, 0].median())
    out["wall_time_s"] = time.perf_counter() - began
    return out


def label_accuracy(dataset: Dataset, images: Tensor, labels: Tensor) -> float | None:
    """The fraction of ``images`` (model units) that ``dataset``'s evaluation classifier assigns
    to their ``labels`` (e.g. inpainted test images and their true classes); ``None`` where the
    dataset has no evaluation classifier."""
    if dataset.name not in EVAL_CLASSIFIERS:
        return None
    classifier = EVAL_CLASSIFIERS.lookup(dataset.name)()
    return image_metrics.label_accuracy(classifier, images, labels)
