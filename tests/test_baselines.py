"""Bits/dim baselines: closed forms on hand-made data, normalisation, Monte-Carlo dequantisation,
and the digits numbers the docs quote."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from scoresde.baselines import categorical_bpd, gaussian_bpd, uniform_bpd
from scoresde.datasets import load_dataset


def test_uniform_is_log2_of_the_levels():
    assert uniform_bpd(17) == pytest.approx(4.0874628, abs=1e-7)
    assert uniform_bpd(256) == 8.0
    with pytest.raises(ValueError, match="num_levels must be an integer >= 2; got 1"):
        uniform_bpd(1)


def test_categorical_by_hand():
    """Pixel 0 saw levels (0, 0, 1), pixel 1 saw (1, 2, 1); with alpha = 1/2 and L = 3 the test
    image (0, 1) has p = (2 + 1/2) / (3 + 3/2) at both pixels."""
    train = torch.tensor([[0, 1], [0, 2], [1, 1]])
    bpd = categorical_bpd(train, torch.tensor([[0, 1], [2, 0]]), 3)
    assert bpd[0].item() == pytest.approx(math.log2(4.5 / 2.5), rel=1e-14)
    # (2, 0): level 2 never seen at pixel 0, level 0 never at pixel 1: 1/2 / 4.5 each.
    assert bpd[1].item() == pytest.approx(math.log2(4.5 / 0.5), rel=1e-14)
    bpd_one = categorical_bpd(train, torch.tensor([[0, 1]]), 3, alpha=1.0)
    assert bpd_one.item() == pytest.approx(math.log2(6 / 3), rel=1e-14)


def test_categorical_is_a_normalised_distribution():
    """Summing 2^(-D bpd) over all L^D images gives 1 (D = 3 pixels, L = 4 levels)."""
    g = torch.Generator().manual_seed(0)
    train = torch.randint(0, 4, (7, 3), generator=g)
    every = torch.tensor(list(itertools.product(range(4), repeat=3)))
    total = torch.exp2(-3 * categorical_bpd(train, every, 4, alpha=0.3)).sum()
    assert total.item() == pytest.approx(1.0, abs=1e-12)


def test_gaussian_matches_monte_carlo_dequantisation():
    """The closed-form expectation equals a Monte-Carlo average of -log2 N(k + u) / D over u, with
    the Gaussian fitted by NumPy to 4000 dequantised copies of the training set (an independent
    fit of mean(k) + 1/2 and cov(k) + I/12). Pixel 2 never changes, so only the I/12 term keeps
    the covariance invertible. Tolerance: 5 Monte-Carlo standard errors plus the fit's error."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 5, (40, 3))
    base[:, 1] = np.clip(base[:, 0] + rng.integers(-1, 2, 40), 0, 4)  # correlated pixels
    base[:, 2] = 3
    train, test = torch.from_numpy(base[:30]), torch.from_numpy(base[30:])
    exact = gaussian_bpd(train, test).numpy()
    copies = np.concatenate([base[:30] + rng.random((30, 3)) for _ in range(4000)])
    fit = multivariate_normal(copies.mean(0), np.cov(copies.T, bias=True))
    u = rng.random((20_000, 1, 3))
    samples = -fit.logpdf(base[30:][None] + u) / (3 * math.log(2))  # (20000, 10)
    stderr = samples.std(0) / math.sqrt(len(samples))
    np.testing.assert_array_less(np.abs(samples.mean(0) - exact), 5 * stderr + 2e-3)


def test_gaussian_one_pixel_by_hand():
    """One pixel, train levels (0, 2): mu = 1 + 1/2, var = 1 + 1/12; test level 1:
    E(1 + u - 1.5)^2 = (1.5 - 1.5)^2 + 1/12."""
    bpd = gaussian_bpd(torch.tensor([[0], [2]]), torch.tensor([[1]]))
    var = 1 + 1 / 12
    nats = 0.5 * (math.log(2 * math.pi * var) + (1 / 12) / var)
    assert bpd.item() == pytest.approx(nats / math.log(2), rel=1e-13)


def test_digits_baselines_are_the_documented_numbers():
    data = load_dataset("digits")
    train, test = data.split("train").levels, data.split("test").levels
    assert uniform_bpd(data.num_levels) == pytest.approx(4.087, abs=5e-4)
    assert categorical_bpd(train, test, data.num_levels).mean().item() == pytest.approx(
        2.434, abs=5e-4
    )
    assert gaussian_bpd(train, test).mean().item() == pytest.approx(2.995, abs=5e-4)


def test_bad_inputs():
    levels = torch.zeros(4, 2, dtype=torch.int64)
    with pytest.raises(
        ValueError, match=r"train must be integer levels of shape \(N, \*D\); got torch.float32"
    ):
        categorical_bpd(torch.zeros(4, 2), levels, 3)
    with pytest.raises(ValueError, match=r"test must hold levels in \[0, 2\]; got \[0, 3\]"):
        categorical_bpd(levels, levels + 3 * torch.eye(4, 2, dtype=torch.int64), 3)
    with pytest.raises(ValueError, match="same number of dimensions; got 2 and 3"):
        gaussian_bpd(levels, torch.zeros(1, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="alpha must be a finite number > 0; got 0"):
        categorical_bpd(levels, levels, 3, alpha=0)
    with pytest.raises(ValueError, match="train must hold at least 2 images; got 1"):
        gaussian_bpd(levels[:1], levels)
