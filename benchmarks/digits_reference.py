"""Reference numbers on the digits test split that a score model's results are read against.

    python benchmarks/digits_reference.py

Prints two Markdown tables (a few seconds):

* bits/dim of the baselines of :mod:`scoresde.baselines` on the 300 test images, each with its
  standard error over images: uniform, independent per-pixel categorical (``alpha = 1/2``, and
  the spread over ``alpha`` in ``[0.01, 1]``), full-covariance Gaussian (dequantised);
* sample-quality measures of :func:`scoresde.image_metrics.sample_quality` for stand-ins whose
  answer is known: training images (copies, the best FD), the held-out test images' own
  nearest-neighbour ratios, blurred training images and uniform noise, with the shipped
  classifier's test accuracy;
* what the upper half of a test digit leaves open, the reference for inpainting its lower half
  (issue 12): the share of test digits that the shipped classifier reads as their own label when
  the lower half is copied from the training image with the k-th nearest upper half, and a kernel
  estimate of ``E[p(y_true | upper half)]`` (below).

An exact sampler of the data's lower half given its upper half ``u`` completes a test digit into a
digit of class ``y`` with probability ``p(y | u)``, so the share of completions the classifier
assigns to the true label is ``E[p(y_true | u)]`` over the test digits (the classifier is right on
299 of 300 real test digits). The script estimates ``p(y | u)`` by a Gaussian kernel over the
training split's upper halves, its bandwidth chosen by leave-one-out likelihood on the training
split (the test split is only scored). Read the number as a rough, probably low, reference: a
calibrated estimate ``q`` that uses ``u`` less well than the truth has ``E[q(y_true | u)] =
E[sum_y q^2] <= E[sum_y p^2]``, its ``+-`` is the test digits' sampling error only (other
estimators move it by more), and a score model's SMC targets the model's conditional, not the
data's.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scoresde.baselines import categorical_bpd, gaussian_bpd, uniform_bpd
from scoresde.conditioning import named_mask
from scoresde.datasets import Dataset, Split, load_dataset
from scoresde.image_metrics import nearest_neighbours, sample_quality
from scoresde.metrics import mean_and_stderr
from scoresde.nets.classifier import load_digits_classifier

BANDWIDTHS = tuple(0.05 * i for i in range(4, 21))
"""The kernel bandwidths tried for ``p(y | upper half)``, in model units (levels / 8 - 1)."""


def kernel_class_posterior(
    u: Tensor, reference: Tensor, labels: Tensor, h: float, *, leave_one_out: bool = False
) -> Tensor:
    """``p(y | u) = sum_{j: y_j = y} k(u, u_j) / sum_j k(u, u_j)`` with the Gaussian kernel
    ``k(u, v) = exp(-|u - v|^2 / (2 h^2))``: the class posterior of a kernel density estimate whose
    classes have the reference's frequencies, ``(n, C)`` float64 with ``C = labels.max() + 1``.
    ``leave_one_out``: ``u`` is ``reference`` and row ``j`` is left out of its own estimate."""
    log_k = -torch.cdist(u.double(), reference.double()).square() / (2 * h * h)
    if leave_one_out:
        log_k.fill_diagonal_(-torch.inf)
    weights = (log_k - log_k.max(1, keepdim=True).values).exp()
    per_class = weights @ F.one_hot(labels).double()
    return per_class / per_class.sum(1, keepdim=True)


def true_class_probability(p: Tensor, labels: Tensor) -> Tensor:
    """``p[j, labels[j]]`` for every row ``j``."""
    return p[torch.arange(len(labels)), labels]


def leave_one_out_nll(u: Tensor, labels: Tensor, h: float) -> float:
    """The mean ``-log p(y_j | u_j)`` of :func:`kernel_class_posterior` with each training upper
    half left out of its own estimate."""
    p = kernel_class_posterior(u, u, labels, h, leave_one_out=True)
    return float(-true_class_probability(p, labels).clamp_min(1e-300).log().mean())


class UpperHalfPosterior(NamedTuple):
    """:func:`kernel_class_posterior` of the test digits' upper halves (module docstring)."""

    p: Tensor  # (n_test, C): p(y | upper half) of each test digit
    bandwidth: float  # h, chosen by leave-one-out NLL on the training split
    loo_nll: float  # that NLL at h


def upper_half_posterior(train: Split, test: Split) -> UpperHalfPosterior:
    """``p(y | upper half)`` of every test digit, the bandwidth from :data:`BANDWIDTHS` with the
    lowest leave-one-out NLL on the training split."""
    known = named_mask("lower_half", tuple(test.x.shape[1:]))
    upper_train, upper_test = train.x[:, known], test.x[:, known]
    nll = {h: leave_one_out_nll(upper_train, train.y, h) for h in BANDWIDTHS}
    h = min(nll, key=nll.get)
    return UpperHalfPosterior(
        kernel_class_posterior(upper_test, upper_train, train.y, h), h, nll[h]
    )


def exact_completion_share(dataset: Dataset, n: int) -> tuple[float, float]:
    """The kernel estimate of ``E[p(y_true | upper half)]`` over the first ``n`` test digits, the
    share an exact sampler of the data's lower half would complete to the true digit, and its
    standard error over those digits (module docstring: a rough, probably low, reference)."""
    test = dataset.split("test")
    p = upper_half_posterior(dataset.split("train"), test).p
    return mean_and_stderr(true_class_probability(p, test.y)[:n])


def inpainting_reference(train: Split, test: Split, classifier: nn.Module, first: int) -> None:
    """Print the lower-half inpainting reference (module docstring), on all test digits and on
    the ``first`` ones (those ``benchmarks/guidance_digits.py`` inpaints by default)."""
    known = named_mask("lower_half", tuple(test.x.shape[1:]))
    n = len(test.y)
    print(f"\n### Inpainting the lower half: what the upper half leaves open ({n} test digits)\n")
    print(f"| completion | true digit, all {n} | first {first} |")
    print("| --- | ---: | ---: |")
    order = torch.cdist(test.x[:, known], train.x[:, known]).argsort(1)
    with torch.no_grad():
        for k in range(5):
            completed = torch.where(known, test.x, train.x[order[:, k]])
            right = (classifier(completed).argmax(1) == test.y).double()
            print(
                f"| lower half of the training digit with the {k + 1}. nearest upper half | "
                f"{right.mean():.3f} | {right[:first].mean():.3f} |"
            )
    posterior = upper_half_posterior(train, test)
    p_true = true_class_probability(posterior.p, test.y)
    (mean, err), (head, head_err) = mean_and_stderr(p_true), mean_and_stderr(p_true[:first])
    print(
        f"| kernel estimate of E[p(y_true | upper half)] (an exact sampler's share) | "
        f"{mean:.3f} +- {err:.3f} | {head:.3f} +- {head_err:.3f} |"
    )
    print(
        f"\nKernel bandwidth h = {posterior.bandwidth:.2f} (leave-one-out NLL "
        f"{posterior.loo_nll:.3f} on the training split; test NLL "
        f"{float(-p_true.clamp_min(1e-300).log().mean()):.3f}); its own expectation "
        f"E[sum_y p(y | u)^2] = {float(posterior.p.square().sum(1).mean()):.3f}, its argmax "
        f"accuracy {float((posterior.p.argmax(1) == test.y).double().mean()):.3f}."
    )


def main() -> None:
    torch.set_num_threads(1)
    data = load_dataset("digits")
    train, test = data.split("train"), data.split("test")
    print("### Bits/dim baselines, digits test split (300 images)\n")
    print("| model | bits/dim | standard error |")
    print("| --- | ---: | ---: |")
    print(f"| uniform over 17 levels | {uniform_bpd(data.num_levels):.3f} | 0 |")
    spread = [categorical_bpd(train.levels, test.levels, 17, alpha=a).mean() for a in (0.01, 1.0)]
    cat = mean_and_stderr(categorical_bpd(train.levels, test.levels, 17))
    print(
        f"| independent per-pixel categorical, alpha = 1/2 | {cat[0]:.3f} | {cat[1]:.3f} |"
        f"\n| (same, alpha = 0.01 / 1) | {spread[0]:.3f} / {spread[1]:.3f} | |"
    )
    gauss = mean_and_stderr(gaussian_bpd(train.levels, test.levels))
    print(f"| full-covariance Gaussian, dequantised | {gauss[0]:.3f} | {gauss[1]:.3f} |")

    classifier = load_digits_classifier()
    with torch.no_grad():
        accuracy = float((classifier(test.x).argmax(1) == test.y).double().mean())
    distances, _ = nearest_neighbours(test.x, train.x, k=2)
    ratio = distances[:, 0] / distances[:, 1]
    print(
        f"\n### Sample-quality stand-ins (classifier test accuracy {accuracy:.4f}; smallest "
        f"nearest/second-nearest ratio of a test image {float(ratio.min()):.2f})\n"
    )
    print("| samples | n | FD | FD floor | precision | recall | max class error | near-copies |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    g = torch.Generator().manual_seed(0)
    stand_ins = {
        "training images": train.x,
        "300 training images": train.x[:300],
        "training images blurred (3x3 mean)": F.avg_pool2d(train.x, 3, 1, 1),
        "uniform noise": 2 * torch.rand(len(train.x), 1, 8, 8, generator=g) - 1,
    }
    for name, samples in stand_ins.items():
        q = sample_quality(classifier, samples, train.x, test.x, generator=g)
        worst = max(abs(f - 0.1) for f in q["class_fractions"])
        print(
            f"| {name} | {len(samples)} | {q['fd']:.1f} | {q['fd_floor']:.1f} | "
            f"{q['precision']:.3f} | {q['recall']:.3f} | {worst:.3f} | "
            f"{q['near_copy_fraction']:.3f} |"
        )
    inpainting_reference(train, test, classifier, first=100)


if __name__ == "__main__":
    main()
