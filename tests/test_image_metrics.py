"""Image sample-quality measures against closed forms and hand-made cases, and the shipped
evaluation classifier."""

import math
from pathlib import Path

import pytest
import torch

import scoresde.nets
from scoresde.datasets import load_dataset
from scoresde.image_metrics import (
    class_fractions,
    frechet_distance,
    gaussian_frechet_distance,
    near_copy_fraction,
    nearest_neighbours,
    precision_recall,
    sample_quality,
)
from scoresde.nets.classifier import (
    DIGITS_CLASSIFIER,
    ImageClassifier,
    load_classifier,
    load_digits_classifier,
    save_classifier,
)

F64 = torch.float64


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


# -- Fréchet distance ------------------------------------------------------------------------------


def test_frechet_distance_closed_forms():
    zero = torch.zeros(2, dtype=F64)
    # One dimension: (m1 - m2)^2 + (s1 - s2)^2.
    fd = gaussian_frechet_distance(
        torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([-2.0]), torch.tensor([[9.0]])
    )
    assert fd == pytest.approx(9 + 1, rel=1e-12)
    # Commuting (diagonal) covariances: sum_i (sqrt a_i - sqrt b_i)^2.
    a, b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    fd = gaussian_frechet_distance(torch.zeros(3), a.diag(), torch.ones(3), b.diag())
    assert fd == pytest.approx(3 + (1 - 3) ** 2 + (2 - 1) ** 2, rel=1e-12)
    # Non-commuting 2x2: tr (S1 S2)^(1/2) = sqrt(tr(S1 S2) + 2 sqrt(det S1 det S2)), since the two
    # eigenvalues of S1 S2 are positive with sum tr and product det.
    s1 = torch.tensor([[2.0, 0.9], [0.9, 1.0]], dtype=F64)
    s2 = torch.tensor([[1.0, -0.7], [-0.7, 3.0]], dtype=F64)
    cross = math.sqrt(float((s1 @ s2).trace()) + 2 * math.sqrt(float(s1.det() * s2.det())))
    want = float(s1.trace() + s2.trace()) - 2 * cross
    assert gaussian_frechet_distance(zero, s1, zero, s2) == pytest.approx(want, rel=1e-12)
    # Singular, orthogonal covariances: no shared directions, FD = tr S1 + tr S2.
    e1, e2 = torch.diag(torch.tensor([1.0, 0.0])), torch.diag(torch.tensor([0.0, 2.0]))
    assert gaussian_frechet_distance(zero, e1, zero, e2) == pytest.approx(3.0, abs=1e-12)
    assert gaussian_frechet_distance(zero, s1, zero, s1) == pytest.approx(0.0, abs=1e-12)


def test_frechet_distance_of_samples_converges_to_the_closed_form():
    """200,000 draws from each of two 3-D Gaussians: the plug-in estimate's standard deviation
    here is about 0.006 (measured over seeds) and its bias O(d / n); 0.03 is 5 deviations."""
    g = torch.Generator().manual_seed(0)
    m1, m2 = torch.tensor([0.0, 1.0, -1.0], dtype=F64), torch.tensor([0.5, 0.0, -1.0], dtype=F64)
    a1 = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.1, -0.3, 0.5]], dtype=F64)
    a2 = torch.tensor([[1.5, 0.0, 0.0], [-0.4, 0.9, 0.0], [0.0, 0.2, 1.1]], dtype=F64)
    x = m1 + torch.randn(200_000, 3, generator=g, dtype=F64) @ a1.T
    y = m2 + torch.randn(200_000, 3, generator=g, dtype=F64) @ a2.T
    want = gaussian_frechet_distance(m1, a1 @ a1.T, m2, a2 @ a2.T)
    assert frechet_distance(x, y) == pytest.approx(want, abs=0.03)


# -- precision and recall --------------------------------------------------------------------------


def test_precision_recall_by_hand():
    """Real points 0, 1, 3, 7 on a line. k = 1: radii 1, 1, 2, 4, so fake 1.5 and 5.5 are inside,
    12 and 20 are not: precision 1/2; the fakes' radii (4, 4, 6.5, 8) cover every real point.
    k = 2: radii 3, 2, 3, 6 also take in 12 (|12 - 7| = 5 <= 6): precision 3/4."""
    real = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    fake = torch.tensor([[1.5], [5.5], [12.0], [20.0]])
    assert precision_recall(real, fake, k=1) == (0.5, 1.0)
    assert precision_recall(real, fake, k=2) == (0.75, 1.0)
    # Recall with k = 1 when the fakes huddle: radii 0.1 cover only the real points near them.
    huddle = torch.tensor([[0.0], [0.1], [0.2], [0.3]])
    assert precision_recall(real, huddle, k=1) == (1.0, 0.25)


def test_precision_recall_on_separated_clusters():
    """Real: two far-apart clusters A and B; fake: other draws from A only, or from A and from a
    third far cluster C. B is never covered and C never inside, so recall <= 1/2 and precision
    <= 1/2 exactly; fresh draws from A fall outside A's 3-NN balls only in its tails (measured: 5%
    of points in 4-D with 200 real points), hence the lower bounds."""
    g = torch.Generator().manual_seed(0)

    def cluster(centre, n=200):
        return torch.randn(n, 4, generator=g) + centre

    a, b, c = (torch.full((4,), v) for v in (0.0, 100.0, -100.0))
    real = torch.cat([cluster(a), cluster(b)])
    precision, recall = precision_recall(real, cluster(a, 400))
    assert precision > 0.9 and 0.45 < recall <= 0.5
    precision, _ = precision_recall(real, torch.cat([cluster(a), cluster(c)]))
    assert 0.45 < precision <= 0.5


# -- classes and near-copies -----------------------------------------------------------------------


def test_class_fractions():
    torch.testing.assert_close(
        class_fractions(torch.tensor([0, 2, 2, 3]), 4),
        torch.tensor([0.25, 0.0, 0.5, 0.25], dtype=F64),
    )
    with pytest.raises(ValueError, match=r"predictions must lie in \[0, 3\]; got \[0, 4\]"):
        class_fractions(torch.tensor([0, 4]), 4)


def test_nearest_neighbours_and_near_copies():
    g = torch.Generator().manual_seed(0)
    train = torch.randn(50, 1, 3, 3, generator=g)
    distances, index = nearest_neighbours(train[:3] + 1e-3, train, k=2)
    assert index[:, 0].tolist() == [0, 1, 2]
    torch.testing.assert_close(
        distances[:, 0], torch.full((3,), 3e-3, dtype=F64), rtol=1e-3, atol=0
    )
    assert torch.all(distances[:, 1] > distances[:, 0])
    # A copy, a slightly perturbed copy, the midpoint of two training images (ratio 1), a new image.
    midpoint = (train[3] + train[4]) / 2
    samples = torch.stack([train[5], train[6] + 0.01, midpoint, torch.randn(1, 3, 3, generator=g)])
    assert near_copy_fraction(samples, train) == 0.5
    assert near_copy_fraction(samples, train, ratio=1e-6) == 0.25  # only the exact copy


def test_no_held_out_digit_is_a_near_copy(digits):
    """The near-copy threshold checked on the data: held-out images are fresh digits, not copies."""
    train, test = digits.split("train").x, digits.split("test").x
    assert near_copy_fraction(test, train) == 0.0
    distances, _ = nearest_neighbours(test, train, k=2)
    assert (distances[:, 0] / distances[:, 1]).min() > 0.45  # the docs quote 0.49
    assert near_copy_fraction(train[:40], train) == 1.0


# -- the shipped classifier and the whole report ---------------------------------------------------


def test_the_shipped_digits_classifier_has_its_stated_accuracy(digits):
    model = load_digits_classifier()
    _, metadata = load_classifier(Path(scoresde.nets.__file__).parent / DIGITS_CLASSIFIER)
    test = digits.split("test")
    with torch.no_grad():
        accuracy = float((model(test.x).argmax(1) == test.y).double().mean())
    assert accuracy >= 0.99 and f"{accuracy:.4f}" == metadata["test_accuracy"] == "0.9967"
    assert metadata["command"] == "python scripts/train_digits_classifier.py"
    assert model.features(test.x[:5]).shape == (5, 64) and not model.training


def test_save_and_load_a_classifier(tmp_path):
    model = ImageClassifier(
        (3, 5, 6), num_classes=4, width=4, feature_dim=8, generator=torch.Generator().manual_seed(0)
    )
    save_classifier(model, tmp_path / "c.safetensors", {"note": "x"})
    loaded, metadata = load_classifier(tmp_path / "c.safetensors")
    x = torch.randn(2, 3, 5, 6)
    torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)
    assert metadata["note"] == "x"
    with pytest.raises(
        ValueError, match=r"expected images of shape \(B, 3, 5, 6\); got \(2, 1, 5, 6\)"
    ):
        loaded(torch.randn(2, 1, 5, 6))


def test_sample_quality_tells_copies_noise_and_data_apart(digits):
    classifier = load_digits_classifier()
    train, test = digits.split("train"), digits.split("test")
    g = torch.Generator().manual_seed(0)
    some = train.x[torch.randperm(len(train.x), generator=g)[:300]]  # a random 300: the first
    copies = sample_quality(classifier, some, train.x, test.x, generator=g)  # are not (writers)
    noise = sample_quality(
        classifier, 2 * torch.rand(300, 1, 8, 8, generator=g) - 1, train.x, test.x, generator=g
    )
    assert copies["near_copy_fraction"] == 1.0 and noise["near_copy_fraction"] == 0.0
    assert copies["nn_distance_median"] == 0.0
    # The training images are as good as it gets: FD near the floor, high precision and recall,
    # every class near its 10%. Uniform noise is far off.
    assert copies["fd"] < 2 * copies["fd_floor"] and noise["fd"] > 10 * noise["fd_floor"]
    # Copies lie on the training manifold (of 300 other training images, by which precision is
    # measured at equal sizes, 0.95); noise is nowhere near it.
    assert copies["precision"] > 0.9 and noise["precision"] == noise["recall"] == 0.0
    assert max(abs(f - 0.1) for f in copies["class_fractions"]) < 0.04
    assert len(noise["class_fractions"]) == 10 and sum(noise["class_fractions"]) == pytest.approx(1)
    assert copies["nn_distance_median_test"] > 0.5  # model units: 2 / 16 per grey level


def test_sample_quality_scores_labels_when_given(digits):
    """``label_accuracy`` is the share of samples the classifier assigns to their own label: the
    test images with their labels score the classifier's accuracy (299 of 300), with labels
    shifted by one nearly nothing; a label per sample is required."""
    classifier = load_digits_classifier()
    train, test = digits.split("train"), digits.split("test")
    right = sample_quality(classifier, test.x, train.x, test.x, labels=test.y)
    wrong = sample_quality(classifier, test.x, train.x, test.x, labels=(test.y + 1) % 10)
    assert right["label_accuracy"] == pytest.approx(299 / 300) and wrong["label_accuracy"] < 0.01
    assert "label_accuracy" not in sample_quality(classifier, test.x, train.x, test.x)
    with pytest.raises(ValueError, match=r"labels' shape must be \(300,\), one per sample"):
        sample_quality(classifier, test.x, train.x, test.x, labels=test.y[:5])


def test_distances_are_the_same_in_chunks_as_at_once():
    """The distance matrices are computed ``CHUNK`` rows at a time; the answers are those of the
    whole matrix (more rows than one chunk, so a misplaced diagonal or offset shows)."""
    from scoresde import image_metrics

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2500, 5, generator=g, dtype=torch.float64)
    y = torch.randn(1300, 5, generator=g, dtype=torch.float64)
    whole = torch.cdist(x, x).fill_diagonal_(float("inf"))
    torch.testing.assert_close(
        image_metrics._kth_neighbour_radius(x, 3), whole.kthvalue(3, 1).values
    )
    values, indices = image_metrics.nearest_neighbours(y, x, k=2)
    expected = torch.cdist(y, x).topk(2, dim=1, largest=False)
    torch.testing.assert_close(values, expected.values)
    assert torch.equal(indices, expected.indices)
    radii = whole.kthvalue(3, 1).values
    covered = (torch.cdist(y, x) <= radii).any(1)
    assert torch.equal(image_metrics._covered(y, x, radii), covered)
