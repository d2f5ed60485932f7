"""Reference numbers on the digits test split that a score model's results are read against.

    python benchmarks/digits_reference.py

Prints two Markdown tables (a few seconds):

* bits/dim of the baselines of :mod:`scoresde.baselines` on the 300 test images, each with its
  standard error over images: uniform, independent per-pixel categorical (``alpha = 1/2``, and
  the spread over ``alpha`` in ``[0.01, 1]``), full-covariance Gaussian (dequantised);
* sample-quality measures of :func:`scoresde.image_metrics.sample_quality` for stand-ins whose
  answer is known: training images (copies, the best FD), the held-out test images' own
  nearest-neighbour ratios, blurred training images and uniform noise, with the shipped
  classifier's test accuracy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from scoresde.baselines import categorical_bpd, gaussian_bpd, uniform_bpd
from scoresde.datasets import load_dataset
from scoresde.image_metrics import nearest_neighbours, sample_quality
from scoresde.metrics import mean_and_stderr
from scoresde.nets.classifier import load_digits_classifier


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


if __name__ == "__main__":
    main()
