"""Sample-quality metrics against closed forms."""

import math

import pytest
import torch
from scipy.stats import norm

from scoresde import metrics


def _gaussian_energy_distance(shift: float) -> float:
    """Energy distance between N(0, 1) and N(shift, 1): X - Y ~ N(-shift, 2), and for
    Z ~ N(m, s^2), E|Z| = s sqrt(2/pi) exp(-m^2 / 2s^2) + m (1 - 2 Phi(-m/s))."""
    s = math.sqrt(2)
    e_xy = s * math.sqrt(2 / math.pi) * math.exp(-(shift**2) / (2 * s * s)) + shift * (
        1 - 2 * norm.cdf(-shift / s)
    )
    e_xx = s * math.sqrt(2 / math.pi)
    return 2 * e_xy - 2 * e_xx


def test_energy_distance_matches_the_gaussian_closed_form():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 1, generator=g)
    y = torch.randn(4000, 1, generator=g) + 1.0
    # The estimate's standard deviation at n = 4000 is about 0.027 (0.0385 measured over 20 seeds
    # at n = 2000); 0.1 is ~4 standard deviations.
    assert metrics.energy_distance(x, y) == pytest.approx(_gaussian_energy_distance(1.0), abs=0.1)


def test_energy_distance_is_near_zero_for_equal_distributions_and_grows_with_the_shift():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(2000, 2, generator=g), torch.randn(2000, 2, generator=g)
    # Unbiased U-statistics: under equality the estimate is centred at 0 with a standard
    # deviation of about 7e-4 at n = 2000 (measured over 20 seeds); 5e-3 is a wide margin.
    assert abs(metrics.energy_distance(x, y)) < 5e-3
    assert metrics.energy_distance(x, y + 1.0) > metrics.energy_distance(x, y + 0.3) > 5e-3


def test_energy_distance_chunking_does_not_change_the_value():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(300, 2, generator=g), torch.randn(200, 2, generator=g)
    assert metrics.energy_distance(x, y, chunk=7) == pytest.approx(
        metrics.energy_distance(x, y, chunk=1000), rel=1e-12
    )


def test_sliced_wasserstein_of_a_shift_is_its_length_over_sqrt_d():
    # y = x + mu: every projection of y is that of x shifted by theta . mu, so the 1D W2 is
    # exactly |theta . mu| and SW2^2 = E (theta . mu)^2 = |mu|^2 / d. The only error is the
    # Monte-Carlo average over 4000 directions (relative std of (theta . mu)^2 ~ sqrt(2/4000)
    # in 2D, about 2% on SW2^2, 1% on SW2); 4% is 4 of those.
    g = torch.Generator().manual_seed(3)
    x = torch.randn(500, 2, generator=g)
    mu = torch.tensor([3.0, -1.0])
    sw = metrics.sliced_wasserstein(x, x + mu, n_projections=4000, generator=g)
    assert sw == pytest.approx(float(mu.norm()) / math.sqrt(2), rel=0.04)
    assert metrics.sliced_wasserstein(x, x, generator=g) == 0.0


def test_mean_and_stderr():
    mean, stderr = metrics.mean_and_stderr(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert mean == 2.5
    assert stderr == pytest.approx(math.sqrt(5 / 3) / 2)
    assert math.isinf(metrics.mean_and_stderr(torch.tensor([1.0, math.inf]))[0])


def test_support_fraction_counts_finite_log_densities():
    logp = torch.tensor([-1.0, -math.inf, -3.0, -math.inf])
    assert metrics.support_fraction(logp) == 0.5


@pytest.mark.parametrize(
    "call",
    [
        lambda: metrics.energy_distance(torch.zeros(1, 2), torch.zeros(5, 2)),
        lambda: metrics.energy_distance(torch.zeros(5, 2), torch.zeros(5, 3)),
        lambda: metrics.sliced_wasserstein(torch.zeros(5, 2), torch.zeros(6, 2)),
        lambda: metrics.sliced_wasserstein(torch.zeros(5, 2), torch.zeros(5, 2), n_projections=0),
        lambda: metrics.mean_and_stderr(torch.zeros(1)),
        lambda: metrics.support_fraction(torch.zeros(2, 2)),
        lambda: metrics.fraction_outside(torch.zeros(5, 2), torch.zeros(5, 3)),
        lambda: metrics.fraction_outside(torch.zeros(5, 2), torch.zeros(5, 2), coverage=1.0),
    ],
)
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_fraction_outside_the_data_range_matches_the_box_it_describes():
    g = torch.Generator().manual_seed(4)
    reference = torch.randn(200_000, 1, generator=g, dtype=torch.float64)
    # The box: the 0.05% and 99.95% quantiles of N(0, 1), +-3.2905, widened by 5% of its width
    # on each side: +-3.6196. Uniform points on [-10, 10] fall outside with probability
    # 1 - 7.239 / 20 = 0.638 (binomial std 0.0015 at n = 100,000; the quantiles' own error is
    # about 0.02 in x, 0.001 in the fraction).
    uniform = 20 * torch.rand(100_000, 1, generator=g, dtype=torch.float64) - 10
    assert metrics.fraction_outside(uniform, reference) == pytest.approx(0.638, abs=0.006)
    # Points of the reference's own distribution: well below 0.1% outside (margin included).
    same = torch.randn(100_000, 1, generator=g, dtype=torch.float64)
    assert metrics.fraction_outside(same, reference) < 1e-3
    # Any coordinate outside puts the point outside.
    far = torch.cat([torch.zeros(10, 1), torch.full((10, 1), 50.0)], dim=1)
    near = torch.zeros(10, 2)
    reference_2d = torch.randn(1000, 2, generator=g)
    assert metrics.fraction_outside(torch.cat([far, near]), reference_2d) == 0.5
