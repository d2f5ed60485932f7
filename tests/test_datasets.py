"""Toy datasets: FFJORD's recipes, exact log-densities, entropies, and batch samplers."""

import math

import numpy as np
import pytest
import torch

from scoresde.datasets import TOY_DATASETS, GaussianMixture, batch_sampler, get_dataset, knn_entropy

CURVES = ["swissroll", "moons", "2spirals", "rings", "circles"]


def _ffjord_reference(name: str, n: int, rng: np.random.RandomState) -> np.ndarray:
    """FFJORD's recipes written out in NumPy (scikit-learn's generators expanded), i.i.d. draws."""
    u = rng.rand(n)
    if name == "8gaussians":
        angle = rng.randint(8, size=n) * np.pi / 4
        return (4 * np.stack([np.cos(angle), np.sin(angle)], 1) + 0.5 * rng.randn(n, 2)) / 1.414
    if name == "checkerboard":
        x1 = rng.rand(n) * 4 - 2
        x2 = rng.rand(n) - rng.randint(0, 2, n) * 2 + np.floor(x1) % 2
        return np.stack([x1, x2], 1) * 2
    if name == "swissroll":  # make_swiss_roll(noise=1.0)[:, [0, 2]] / 5
        s = 1.5 * np.pi * (1 + 2 * u)
        return (np.stack([s * np.cos(s), s * np.sin(s)], 1) + rng.randn(n, 2)) / 5
    if name == "moons":  # make_moons(noise=0.1) * 2 + (-1, -0.2)
        a, inner = np.pi * u, rng.rand(n) < 0.5
        outer_pt = np.stack([np.cos(a), np.sin(a)], 1)
        inner_pt = np.stack([1 - np.cos(a), 1 - np.sin(a) - 0.5], 1)
        x = np.where(inner[:, None], inner_pt, outer_pt) + 0.1 * rng.randn(n, 2)
        return x * 2 + np.array([-1, -0.2])
    if name == "pinwheel":
        f = rng.randn(n, 2) * np.array([0.3, 0.1]) + np.array([1.0, 0.0])
        a = rng.randint(5, size=n) * 2 * np.pi / 5 + 0.25 * np.exp(f[:, 0])
        rot = np.stack([np.cos(a), -np.sin(a), np.sin(a), np.cos(a)], 1).reshape(-1, 2, 2)
        return 2 * np.einsum("ti,tij->tj", f, rot)
    if name == "2spirals":
        m = np.sqrt(u)[:, None] * 540 * (2 * np.pi) / 360
        d = np.hstack([-np.cos(m) * m, np.sin(m) * m]) + rng.rand(n, 2) * 0.5
        sign = np.where(rng.rand(n) < 0.5, 1.0, -1.0)[:, None]
        return sign * d / 3 + rng.randn(n, 2) * 0.1
    if name in ("rings", "circles"):
        radii = np.array([1.0, 0.75, 0.5, 0.25]) if name == "rings" else np.array([1.0, 0.5])
        r = radii[rng.randint(len(radii), size=n)]
        circle = r[:, None] * np.stack([np.cos(2 * np.pi * u), np.sin(2 * np.pi * u)], 1)
        return (
            3 * (circle + 0.08 * rng.randn(n, 2))
            if name == "circles"
            else 3 * circle + 0.08 * rng.randn(n, 2)
        )
    raise AssertionError(name)


def _features(x: np.ndarray) -> np.ndarray:
    """Per-point statistics whose means pin down location, scale, shape, radial profile and the
    handedness of a 5-armed spiral (angle -exp(r / 2) / 4 at radius r, as pinwheel's arms)."""
    r, theta = np.linalg.norm(x, axis=1), np.arctan2(x[:, 1], x[:, 0])
    spiral = 5 * theta + 1.25 * np.exp(r / 2)
    moments = [x[:, 0], x[:, 1], x[:, 0] ** 2, x[:, 1] ** 2, x[:, 0] * x[:, 1], r, np.cos(3 * r)]
    return np.stack([*moments, np.cos(spiral), np.sin(spiral)], 1)


def test_registry_and_errors():
    ffjord = {"8gaussians", "checkerboard", "swissroll", "moons", "pinwheel", "2spirals", "rings"}
    assert set(TOY_DATASETS) == ffjord | {"circles", "gmm"}
    with pytest.raises(ValueError, match="dataset must be one of .*'nope'"):
        get_dataset("nope")
    with pytest.raises(ValueError, match="dataset .moons. takes no arguments; got unknown .noise."):
        get_dataset("moons", noise=0.1)
    with pytest.raises(ValueError, match="mixture must be a GaussianMixture"):
        get_dataset("gmm", mixture=3)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        get_dataset("moons").sample(0)
    with pytest.raises(ValueError, match=r"x must have shape \(n, 2\)"):
        get_dataset("moons").log_prob(torch.zeros(3, 3))


@pytest.mark.parametrize("name", list(TOY_DATASETS))
def test_samples_match_ffjord_recipe(name):
    """Means of 9 statistics agree with FFJORD's recipe: |z| < 5 for a two-sample z-score."""
    dataset = get_dataset(name)
    x = dataset.sample(20_000, torch.Generator().manual_seed(0))
    assert x.shape == (20_000, 2) and x.dtype == torch.float32 and bool(torch.isfinite(x).all())
    assert torch.equal(x, dataset.sample(20_000, torch.Generator().manual_seed(0)))
    assert not torch.equal(x, dataset.sample(20_000, torch.Generator().manual_seed(1)))
    if name == "gmm":  # the oracle itself: compare with GaussianMixture's own sampler
        ref = dataset.mixture.sample(20_000, torch.Generator().manual_seed(5)).numpy()
    else:
        ref = _ffjord_reference(name, 20_000, np.random.RandomState(5))
    a, b = _features(x.double().numpy()), _features(ref)
    z = (a.mean(0) - b.mean(0)) / np.sqrt(a.var(0) / len(a) + b.var(0) / len(b))
    assert np.abs(z).max() < 5, z


def test_eight_gaussians_log_prob_and_modes():
    dataset = get_dataset("8gaussians")
    x = dataset.sample(40_000, torch.Generator().manual_seed(0)).double()
    angle = torch.arange(8, dtype=torch.float64) * math.pi / 4
    centres = 4 / math.sqrt(2) * torch.stack([angle.cos(), angle.sin()], 1)
    var = (0.5 / math.sqrt(2)) ** 2
    comp = -((x[:, None] - centres) ** 2).sum(-1) / (2 * var) - math.log(2 * math.pi * var)
    truth = torch.logsumexp(comp, 1) - math.log(8)
    torch.testing.assert_close(
        dataset.log_prob(x), truth, rtol=0, atol=1e-10
    )  # float64 closed form
    # Every mode has weight 1/8; binomial standard error sqrt(p (1 - p) / n) = 0.0017, 5 SE allowed.
    weights = dataset.mixture.mode_weights(x)
    assert (weights - 1 / 8).abs().max() < 5 * math.sqrt(1 / 8 * 7 / 8 / 40_000)
    value, se = dataset.entropy()
    assert abs(value + truth.mean().item()) < 5 * math.hypot(se, truth.std().item() / 200)


def test_checkerboard_is_uniform_on_its_squares():
    dataset = get_dataset("checkerboard")
    x = dataset.sample(40_000, torch.Generator().manual_seed(0))
    assert bool((dataset.log_prob(x) == -math.log(32)).all())
    points = torch.tensor(
        [[0.5, 0.5], [0.5, 2.5], [-3.5, -3.5], [-3.5, -1.5], [2.5, -1.5], [4.5, 0.5]]
    )
    expected = torch.tensor(
        [True, False, True, False, True, False]
    )  # FFJORD: x2 in [0,2) + 2 (floor(x1/2) mod 2)
    logp = dataset.log_prob(points)
    assert torch.equal(torch.isfinite(logp), expected) and bool(
        (logp[~expected] == -math.inf).all()
    )
    # 1/8 of the points on each square: binomial standard error 0.0017, 5 SE allowed.
    cells = torch.floor(x / 2).long() + 2
    counts = torch.bincount(cells[:, 0] * 4 + cells[:, 1], minlength=16).double() / len(x)
    assert (counts[counts > 0] - 1 / 8).abs().max() < 5 * math.sqrt(1 / 8 * 7 / 8 / 40_000)
    assert (counts > 0).sum() == 8
    assert dataset.entropy() == (math.log(32), 0.0)


@pytest.mark.parametrize(
    ("name", "radii", "std"),
    [("circles", (3.0, 1.5), 0.24), ("rings", (3.0, 2.25, 1.5, 0.75), 0.08)],
)
def test_noisy_circles_match_bessel_closed_form(name, radii, std):
    """Quadrature vs ``exp(-(|x| - r)^2 / 2s^2) I0e(r|x|/s^2) / (2 pi s^2)`` per circle: < 1e-6."""
    dataset = get_dataset(name)
    gen = torch.Generator().manual_seed(0)
    x = dataset.sample(2000, gen).double()
    x = torch.cat([x, 1.3 * x, 4 * torch.randn(500, 2, generator=gen, dtype=torch.float64)])
    r = x.norm(dim=1)
    terms = [
        -((r - R) ** 2) / (2 * std**2)
        + torch.log(torch.special.i0e(R * r / std**2))
        - math.log(2 * math.pi * std**2)
        for R in radii
    ]
    truth = torch.logsumexp(torch.stack(terms), 0) - math.log(len(radii))
    assert (dataset.log_prob(x) - truth).abs().max() < 1e-6


@pytest.mark.parametrize("name", CURVES)
def test_curve_densities_integrate_to_sample_frequencies(name):
    """The density's mass in 12 boxes (2D Gauss-Legendre, 12x12 nodes: error < 1e-6) matches the
    fraction of 40,000 samples in them within 5 binomial standard errors (+ 1e-4 for the rule)."""
    dataset = get_dataset(name)
    x = dataset.sample(40_000, torch.Generator().manual_seed(0)).double()
    nodes, weights = (torch.as_tensor(a) for a in np.polynomial.legendre.leggauss(12))
    gen = torch.Generator().manual_seed(1)
    centres = x[torch.randint(0, len(x), (12,), generator=gen)]  # boxes where the data are
    half = 0.3
    for centre in centres:
        grid = centre + half * torch.stack(torch.meshgrid(nodes, nodes, indexing="ij"), -1).reshape(
            -1, 2
        )
        mass = (
            dataset.log_prob(grid).exp() * (weights[:, None] * weights).flatten()
        ).sum() * half**2
        freq = ((x - centre).abs() <= half).all(1).double().mean()
        assert abs(freq - mass) < 5 * math.sqrt(mass * (1 - mass) / len(x)) + 1e-4, (
            centre,
            freq,
            mass,
        )


@pytest.mark.parametrize("name", ["moons", "swissroll", "circles"])
def test_curve_densities_are_normalised(name):
    """Midpoint rule, 0.025 grid on [-6, 6]^2 (density smooth on a 0.2 scale): error < 1e-4."""
    dataset = get_dataset(name)
    axis = torch.arange(-6, 6, 0.025, dtype=torch.float64) + 0.0125
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    total = dataset.log_prob(grid).exp().sum() * 0.025**2
    assert abs(total - 1) < 1e-4


def test_entropies_agree_with_nearest_neighbour_estimates():
    """Two independent estimators: MC with the exact density (SE ~0.005) and Kozachenko-Leonenko on
    2e5 points (|bias| <= 0.002 on smooth 2D densities, SE ~0.003): agree within 0.03 nats."""
    for name in ["moons", "circles", "swissroll"]:
        dataset = get_dataset(name)
        value, se = dataset.entropy()
        assert 0 < se < 0.01
        knn, _ = knn_entropy(dataset.sample(200_000, torch.Generator().manual_seed(3)).double())
        assert abs(value - knn) < 0.03, (name, value, knn)


def test_knn_entropy_of_a_gaussian():
    """Closed form ``1/2 log((2 pi e)^d det S)``; bias at n = 2e4 is < 0.02 for a smooth density."""
    cov = torch.tensor([[2.0, 0.6], [0.6, 0.5]], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20_000, 2, generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    value, se = knn_entropy(x)
    truth = 0.5 * math.log((2 * math.pi * math.e) ** 2 * torch.linalg.det(cov).item())
    assert abs(value - truth) < 0.02 + 5 * se
    with pytest.raises(ValueError, match="duplicate points"):
        knn_entropy(torch.zeros(10, 2))
    with pytest.raises(ValueError, match="n > k"):
        knn_entropy(torch.randn(4, 2), k=4)


def test_pinwheel_has_an_estimated_entropy_only():
    dataset = get_dataset("pinwheel")
    assert not dataset.has_exact_log_prob
    with pytest.raises(NotImplementedError, match="has_exact_log_prob"):
        dataset.log_prob(torch.zeros(2, 2))
    value, se = dataset.entropy(n=20_000)
    # The same estimator on a 10x larger sample: the two differ by its bias change (< 0.03) + noise.
    assert abs(value - dataset.entropy()[0]) < 0.03 + 5 * se


def test_gmm_accepts_a_user_mixture():
    mixture = GaussianMixture([1.0, 3.0], [[0.0, 0.0], [3.0, 1.0]], [0.5, 0.2])
    dataset = get_dataset("gmm", mixture=mixture)
    x = torch.randn(10, 2, dtype=torch.float64)
    torch.testing.assert_close(dataset.log_prob(x), mixture.log_prob(x), rtol=0, atol=0)


# -- batch samplers --------------------------------------------------------------------------------


def test_batch_sampler_from_a_dataset_is_a_function_of_the_generator():
    sample = batch_sampler("8gaussians", 64)
    gen = torch.Generator().manual_seed(0)
    first = sample(gen)
    state = gen.get_state()
    second = sample(gen)
    gen.set_state(state)  # resuming from a saved generator state repeats the batch bitwise
    assert (
        first.shape == (64, 2)
        and torch.equal(second, sample(gen))
        and not torch.equal(first, second)
    )


def test_batch_sampler_from_a_tensor_draws_its_rows_uniformly():
    points = torch.arange(20, dtype=torch.float32).reshape(10, 1, 2)  # image-like (N, *D) works too
    sample = batch_sampler(points, 50_000)
    batch = sample(torch.Generator().manual_seed(0))
    assert batch.shape == (50_000, 1, 2)
    rows = (batch[:, 0, 0] / 2).long()
    assert torch.equal(batch, points[rows])
    # Each row has probability 1/10: binomial standard error 0.0013, 5 SE allowed.
    assert (torch.bincount(rows, minlength=10) / 50_000 - 0.1).abs().max() < 5 * math.sqrt(
        0.09 / 50_000
    )


def test_batch_sampler_from_an_iterable_concatenates_once():
    batches = [torch.randn(3, 2), torch.randn(5, 2)]
    loader = (
        (b, torch.zeros(len(b))) for b in batches
    )  # (points, labels) items, a one-shot generator
    sample = batch_sampler(loader, 4)
    drawn = sample(torch.Generator().manual_seed(0))
    allowed = torch.cat(batches)
    assert all(any(torch.equal(row, a) for a in allowed) for row in drawn)
    assert torch.equal(
        batch_sampler(np.ones((4, 2)), 2)(torch.Generator()), torch.ones(2, 2, dtype=torch.float64)
    )


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (torch.zeros(0, 2), "N >= 1"),
        (torch.zeros(5), r"shape \(N, \*D\)"),
        (torch.zeros(4, 2, dtype=torch.long), "floating point"),
        (torch.tensor([[0.0, float("nan")]]), "finite"),
        ([], "empty iterable"),
        ([torch.zeros(2, 2), torch.zeros(2, 3)], r"item 1 of source has points of shape \(3,\)"),
        ([torch.zeros(2, 2), "a"], "item 1 of source must be a tensor"),
        (3.5, "source must be a dataset name"),
        ("nope", "dataset must be one of"),
    ],
)
def test_batch_sampler_rejects_bad_sources(source, message):
    with pytest.raises(ValueError, match=message):
        batch_sampler(source, 8)


def test_batch_sampler_rejects_bad_batch_sizes():
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
            batch_sampler("moons", bad)


def test_toy_draws_on_the_cpu_are_torchs_own():
    """Draws (the toy densities' source of randomness, on the generator's device) is exactly
    torch's CPU draws for a CPU generator, so the toy data did not change with it."""
    from scoresde.datasets.draws import Draws

    def g():
        return torch.Generator().manual_seed(3)

    draw = Draws(g())
    assert torch.equal(draw.rand(4, 2), torch.rand(4, 2, generator=g(), dtype=torch.float64))
    draw = Draws(g())
    assert torch.equal(draw.randn(5), torch.randn(5, generator=g(), dtype=torch.float64))
    draw = Draws(g())
    expected = torch.randint(0, 7, (6,), generator=g(), dtype=torch.float64)
    assert torch.equal(draw.randint(7, 6), expected)
    w = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    draw = Draws(g())
    assert torch.equal(draw.choice(w, 9), torch.multinomial(w, 9, True, generator=g()))
