"""DDIM against closed-form truth: exact for a point mass, first order for Gaussian data, and
ancestral sampling at eta = 1."""

import math

import pytest
import torch
from gaussian_flow import MU, SDES, gaussian_flow, gaussian_score

import scoresde
from scoresde import VPSDE, SubVPSDE

F64 = torch.float64


@pytest.mark.parametrize("kind", SDES)
def test_deterministic_ddim_is_exact_for_a_point_mass(kind):
    """With s = 0 the data prediction is the constant mu, which DDIM integrates exactly: the
    error is round-off (1e-10), on a coarse grid of 4 steps."""
    sde = SDES[kind]()
    times = scoresde.time_grid(sde, 4, eps=0.05)
    g = torch.Generator().manual_seed(1)
    prior = sde.prior_sampling((64, 2), g).to(F64)
    # the sampler draws its own prior from the generator: reproduce it with the same seed
    out = scoresde.sample(
        sde,
        gaussian_score(sde, MU, 0.0),
        (64, 2),
        sampler="ddim",
        times=times,
        denoise=False,
        dtype=F64,
        generator=torch.Generator().manual_seed(1),
    )
    exact = gaussian_flow(sde, MU, 0.0, prior, float(times[0]), float(times[-1]))
    torch.testing.assert_close(out, exact, rtol=0, atol=1e-9)


@pytest.mark.parametrize("kind", ["vp", "subvp", "ve", "user"])
def test_deterministic_ddim_converges_at_first_order(kind):
    """Gaussian data N(mu, 0.5^2 I): the error at eps against the exact flow map halves with the
    step (slope of log error against log steps in [-1.15, -0.85])."""
    sde = SDES[kind]()
    errors = []
    steps = (16, 32, 64)
    for n in steps:
        times = scoresde.time_grid(sde, n, kind="log_snr", eps=0.02)
        out = scoresde.sample(
            sde,
            gaussian_score(sde, MU, 0.5),
            (256, 2),
            sampler="ddim",
            times=times,
            denoise=False,
            dtype=F64,
            generator=torch.Generator().manual_seed(2),
        )
        prior = sde.prior_sampling((256, 2), torch.Generator().manual_seed(2)).to(F64)
        exact = gaussian_flow(sde, MU, 0.5, prior, float(times[0]), float(times[-1]))
        errors.append((out - exact).abs().max().item())
    slope = math.log(errors[-1] / errors[0]) / math.log(steps[-1] / steps[0])
    assert -1.15 < slope < -0.85, (errors, slope)


def test_eta_one_is_ancestral_sampling_with_the_posterior_variance():
    """On an SDE whose chain is its continuous kernel, DDIM(eta=1) and the ancestral predictor
    are the same update, given the same noise: equal to round-off."""
    sde = SubVPSDE()
    oracle = scoresde.GaussianMixture.ring()
    times = scoresde.time_grid(sde, 30)
    common = dict(times=times, dtype=F64, denoise=False)
    a = scoresde.sample(
        sde,
        oracle.score_fn(sde),
        (500, 2),
        sampler="ddim",
        eta=1.0,
        generator=torch.Generator().manual_seed(3),
        **common,
    )
    b = scoresde.sample(
        sde,
        oracle.score_fn(sde),
        (500, 2),
        sampler="pc",
        predictor="ancestral_sampling",
        corrector="none",
        generator=torch.Generator().manual_seed(3),
        **common,
    )
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_eta_must_be_a_number_at_least_zero():
    sde = VPSDE()
    with pytest.raises(ValueError, match="eta must be a finite number >= 0; got -1"):
        scoresde.sample(sde, lambda x, t: -x, (2, 2), sampler="ddim", eta=-1)
