"""Sample quality of images, measured in the feature space of a classifier and in pixel space.

The MNIST-FID convention: features are the penultimate layer of a small classifier trained on
the training split (:class:`scoresde.nets.classifier.ImageClassifier`; the digits one ships with
the package), and the samples are compared with held-out test images.

* :func:`frechet_distance`: the Fréchet (2-Wasserstein) distance between Gaussians fitted to two
  sets of features (Heusel et al., 2017), :func:`gaussian_frechet_distance` its closed form::

      FD = ||mu_1 - mu_2||^2 + tr(S_1 + S_2 - 2 (S_1^(1/2) S_2 S_1^(1/2))^(1/2)).

  It is biased upwards by the sampling error of the fitted moments (more so for fewer samples and
  more features), so compare it with the same distance between the training and test images
  (the floor) at equal sample sizes.
* :func:`precision_recall` (Kynkäänniemi et al., 2019): each set's manifold is the union of
  balls around its points of radius the distance to their ``k``-th nearest neighbour in the set;
  precision is the fraction of generated points inside the real manifold, recall the fraction
  of real points inside the generated one. :func:`sample_quality` measures them in pixel space
  against the training images: in the classifier's feature space uniform noise scores a
  precision of 0.35 against the digits training set (the classifier maps much of what is not a
  digit near some digit's features), in pixel space 0.00, while held-out test images score
  0.89 / 0.94 in pixel space (k = 3).
* :func:`class_fractions`: the share of each predicted class among the samples (every class
  present in its share, or some modes lost).
* :func:`nearest_neighbours` and :func:`near_copy_fraction`: distances from each sample to its
  nearest training images (in pixel space) and the fraction of samples that are near-copies of
  one training image: ``d_1 < d_2 / 3`` with ``d_1 <= d_2`` the distances to the nearest and the
  second-nearest training image (Carlini et al., 2023, "Extracting training data from diffusion
  models", use this relative test). A relative test needs no absolute scale and flags a sample
  that is much closer to one training image than to any other. On digits no held-out test image
  is flagged (the smallest ratio among the 300 is 0.49), and none of the 1,497 training images is
  with respect to the others, while an exact copy has ratio 0.
* :func:`sample_quality`: all of the above for a batch of samples, as a JSON-able dict;
  :func:`classify` gives the classifier's features and predictions, :func:`label_accuracy` the
  share of images it assigns to given labels.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from scoresde.validation import check_int, check_number

__all__ = [
    "gaussian_frechet_distance",
    "frechet_distance",
    "precision_recall",
    "class_fractions",
    "nearest_neighbours",
    "near_copy_fraction",
    "sample_quality",
    "classify",
    "label_accuracy",
]

NEAR_COPY_RATIO = 1 / 3
"""A sample is a near-copy if its nearest training image is closer than this times its second."""


def _features(name: str, x: Tensor, minimum: int = 2) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim < 2 or x.shape[0] < minimum:
        what = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must have shape (n, *D) with n >= {minimum}; got {what}")
    return x.detach().flatten(1).to(torch.float64)


def _sqrt_psd(matrix: Tensor) -> Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix (eigenvalues < 0
    from rounding are set to 0)."""
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def gaussian_frechet_distance(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """``||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1^(1/2) S2 S1^(1/2))^(1/2))`` in float64.

    ``(S1^(1/2) S2 S1^(1/2))^(1/2)`` is symmetric positive semi-definite and has the trace of
    ``(S1 S2)^(1/2)``; its eigenvalues come from ``eigh``, which is stable where the covariances
    are singular (fewer samples than features).
    """
    mu1, mu2, cov1, cov2 = (torch.as_tensor(a, dtype=torch.float64) for a in (mu1, mu2, cov1, cov2))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or cov1.shape != (d, d) or cov2.shape != (d, d):
        raise ValueError(
            f"means must be (d,) and covariances (d, d) for one d; got {tuple(mu1.shape)}, "
            f"{tuple(cov1.shape)}, {tuple(mu2.shape)}, {tuple(cov2.shape)}"
        )
    root1 = _sqrt_psd(cov1)
    cross = torch.linalg.eigvalsh(root1 @ cov2 @ root1).clamp(min=0).sqrt().sum()
    return float((mu1 - mu2).square().sum() + cov1.trace() + cov2.trace() - 2 * cross)


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """The Fréchet distance of Gaussians fitted to features ``a`` ``(n, d)`` and ``b`` ``(m, d)``.

    Means and covariances are the sample ones (``n - 1`` in the denominator, as in FID).
    """
    a, b = _features("a", a), _features("b", b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must have the same width; got {a.shape[1]} and {b.shape[1]}")
    return gaussian_frechet_distance(a.mean(0), torch.cov(a.T), b.mean(0), torch.cov(b.T))


CHUNK = 1024
"""Rows of a distance matrix computed at once (memory ``CHUNK x N``, not ``n x N``)."""


def _kth_neighbour_radius(x: Tensor, k: int) -> Tensor:
    """The distance from each point to its ``k``-th nearest other point, ``(n,)``."""
    radii = []
    for start in range(0, len(x), CHUNK):
        distances = torch.cdist(x[start : start + CHUNK], x)
        rows = torch.arange(len(distances))
        distances[rows, start + rows] = float("inf")  # not its own neighbour
        radii.append(distances.kthvalue(k, dim=1).values)
    return torch.cat(radii)


def _covered(points: Tensor, centres: Tensor, radii: Tensor) -> Tensor:
    """Whether each point lies in some ball ``||p - c_i|| <= r_i``, ``(n,)`` boolean."""
    return torch.cat(
        [(torch.cdist(chunk, centres) <= radii).any(dim=1) for chunk in points.split(CHUNK)]
    )


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[float, float]:
    """Kynkäänniemi et al.'s improved precision and recall of ``fake`` against ``real``.

    ``precision = mean_j [exists i: ||f_j - r_i|| <= rho_k(r_i)]`` with ``rho_k(r_i)`` the distance
    from ``r_i`` to its ``k``-th nearest neighbour among the other real points, and ``recall`` the
    same with the roles swapped. The paper uses ``k = 3`` and equal set sizes; the radii grow as a
    set shrinks, so compare numbers at equal sizes.

    Arguments:
        real, fake: features ``(n, *D)`` and ``(m, *D)``, each with more than ``k`` points.
        k: which neighbour sets the radii.
    """
    k = check_int("k", k, 1)
    real, fake = _features("real", real, k + 1), _features("fake", fake, k + 1)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"real and fake must have the same width; got {real.shape[1]} and {fake.shape[1]}"
        )
    precision = _covered(fake, real, _kth_neighbour_radius(real, k)).double().mean()
    recall = _covered(real, fake, _kth_neighbour_radius(fake, k)).double().mean()
    return float(precision), float(recall)


def class_fractions(predictions: Tensor, num_classes: int) -> Tensor:
    """The share of ``predictions`` ``(n,)`` (class indices) in each class, ``(num_classes,)``."""
    num_classes = check_int("num_classes", num_classes, 1)
    if predictions.ndim != 1 or predictions.is_floating_point() or predictions.numel() == 0:
        raise ValueError(
            f"predictions must be class indices of shape (n,), n >= 1; got {predictions.dtype} "
            f"{tuple(predictions.shape)}"
        )
    if int(predictions.min()) < 0 or int(predictions.max()) >= num_classes:
        raise ValueError(
            f"predictions must lie in [0, {num_classes - 1}]; got "
            f"[{int(predictions.min())}, {int(predictions.max())}]"
        )
    counts = torch.bincount(predictions.cpu(), minlength=num_classes)
    return counts.double() / predictions.numel()


def nearest_neighbours(x: Tensor, reference: Tensor, k: int = 2) -> tuple[Tensor, Tensor]:
    """The Euclidean distances ``(n, k)`` from each ``x`` ``(n, *D)`` to its ``k`` nearest
    ``reference`` points ``(N, *D)``, ascending, and their indices ``(n, k)``."""
    k = check_int("k", k, 1)
    x, reference = _features("x", x, 1), _features("reference", reference, k)
    if x.shape[1] != reference.shape[1]:
        raise ValueError(
            f"x and reference must have the same number of values per sample; got {x.shape[1]} "
            f"and {reference.shape[1]}"
        )
    nearest = [
        torch.cdist(chunk, reference).topk(k, dim=1, largest=False) for chunk in x.split(CHUNK)
    ]
    return torch.cat([v for v, _ in nearest]), torch.cat([i for _, i in nearest])


def near_copy_fraction(samples: Tensor, train: Tensor, ratio: float = NEAR_COPY_RATIO) -> float:
    """The fraction of ``samples`` whose nearest training image is closer than ``ratio`` times the
    second nearest, ``d_1 < ratio d_2`` (module doc; ``ratio`` in ``(0, 1]``)."""
    ratio = check_number("ratio", ratio, 0, 1, low_open=True)
    distances, _ = nearest_neighbours(samples, train, k=2)
    return float((distances[:, 0] < ratio * distances[:, 1]).double().mean())


@torch.no_grad()
def classify(classifier: nn.Module, x: Tensor, batch_size: int = 1024) -> tuple[Tensor, Tensor]:
    """The features ``(n, F)`` and the predicted classes ``(n,)`` of the images ``x``, on the CPU,
    by ``classifier`` (``features(x)`` and ``head(features)``, in eval mode, on its own device;
    its mode is restored)."""
    was_training = classifier.training
    classifier.eval()
    device = next(classifier.parameters()).device
    feats, preds = [], []
    for chunk in x.split(batch_size):
        f = classifier.features(chunk.to(device))
        feats.append(f.cpu())
        preds.append(classifier.head(f).argmax(dim=1).cpu())
    classifier.train(was_training)
    return torch.cat(feats), torch.cat(preds)


def check_labels(labels: Tensor | None, n: int) -> None:
    """Refuse ``labels`` that are not ``None`` or one class per image, shape ``(n,)``."""
    if labels is not None and tuple(labels.shape) != (n,):
        raise ValueError(f"labels' shape must be ({n},), one per sample; got {tuple(labels.shape)}")


def label_accuracy(classifier: nn.Module, images: Tensor, labels: Tensor) -> float:
    """The fraction of ``images`` that ``classifier`` assigns to their ``labels`` ``(n,)``."""
    check_labels(labels, len(images))
    _, predicted = classify(classifier, images)
    return _share_right(predicted, labels)


def _share_right(predicted: Tensor, labels: Tensor) -> float:
    return float((predicted == labels.cpu()).double().mean())


@torch.no_grad()
def sample_quality(
    classifier: nn.Module,
    samples: Tensor,
    train: Tensor,
    test: Tensor,
    *,
    labels: Tensor | None = None,
    k: int = 3,
    batch_size: int = 1024,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """Every measure of this module for ``samples``, against the ``test`` images, as a dict.

    Arguments:
        classifier: a module with ``features(x) -> (B, F)`` and ``forward(x) -> (B, C)`` logits
            (:class:`~scoresde.nets.classifier.ImageClassifier`), on model-unit images.
        samples, train, test: images ``(n, C, H, W)`` in model units (as the model sees them).
        labels: ``None``, or the ``(n,)`` class each sample should show (a requested label, the
            true class of an inpainted image).
        k: the neighbour of :func:`precision_recall`.
        batch_size: images per classifier call.
        generator: draws the training images of the floor.

    Returns:
        ``fd``: features of the samples vs the test images.
        ``fd_floor``: the same for ``n = min(len(samples), len(train))`` training images drawn
        without replacement, what samples as good as the training data score at this ``n``. The
        estimate's upward bias grows fast as ``n`` falls (digits: 13 with all 1,497 training
        images, 51 with 300), so compare at equal ``n``, best ``n`` = the training set's size.
        ``precision``, ``recall``: pixel space, samples vs the floor's training images (module
        doc; the paper compares sets of equal size).
        ``class_fractions``: a list, the share of each predicted class among the samples.
        ``near_copy_fraction``: :func:`near_copy_fraction` of the samples.
        ``nn_distance_median``: the median distance from a sample to its nearest training image
        (model units), beside ``nn_distance_median_test``, the same for the test images.
        ``label_accuracy`` (with ``labels``): the fraction of samples the classifier assigns to
        their label.
    """
    check_labels(labels, len(samples))
    f_samples, predicted = classify(classifier, samples, batch_size)
    f_train, _ = classify(classifier, train, batch_size)
    f_test, _ = classify(classifier, test, batch_size)
    floor_rows = torch.randperm(len(train), generator=generator)[: len(samples)]
    precision, recall = precision_recall(train[floor_rows], samples, k)  # at equal sizes
    nn_samples, _ = nearest_neighbours(samples, train, k=2)
    nn_test, _ = nearest_neighbours(test, train, k=1)
    out = {
        "fd": frechet_distance(f_samples, f_test),
        "fd_floor": frechet_distance(f_train[floor_rows], f_test),
        "precision": precision,
        "recall": recall,
        "class_fractions": class_fractions(predicted, classifier.num_classes).tolist(),
        "near_copy_fraction": float(
            (nn_samples[:, 0] < NEAR_COPY_RATIO * nn_samples[:, 1]).double().mean()
        ),
        "nn_distance_median": float(nn_samples[:, 0].median()),
        "nn_distance_median_test": float(nn_test[:, 0].median()),
    }
    if labels is not None:
        out["label_accuracy"] = _share_right(predicted, labels)
    return out
