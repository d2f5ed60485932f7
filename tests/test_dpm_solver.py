"""DPM-Solver++ beyond what every multistep solver shares (tests/test_multistep.py): its SDE
variant, its lower-order final steps, and its exponential integrals on a data prediction whose
flow is known in closed form."""

import math

import pytest
import torch
from test_multistep import SDES, time_at_scaled_sigma

import scoresde
from scoresde import VESDE, VPSDE
from scoresde.sampling.ddim import ddim
from scoresde.sampling.dpm_solver import dpm_solver

F64 = torch.float64
W = torch.tensor([1.0, -2.0], dtype=F64)
A = 1.0  # the data prediction's growth rate in l


class ZeroNoise:
    """A noise source that draws zeros: the SDE variant then integrates its drift alone."""

    def like(self, x):
        return torch.zeros_like(x)


def exponential_prediction_score(sde):
    """The 'score' whose data prediction is m = W e^{A l} at every x, l = log(alpha / sigma):
    s(x, t) = (alpha m - x) / sigma^2 (any vector field is a ScoreFn to a sampler)."""

    def score_fn(x, t):
        alpha, sigma = (c.to(x.dtype)[:, None] for c in sde.kernel_coefficients(t))
        return (alpha * W * (alpha / sigma) ** A - x) / sigma**2

    return score_fn


def exact_exponential_flow(sde, x, times, c):
    """The exact solution of dpm_solver's equation (module docstring) for m = W e^{A l}, without
    noise: x_t = (sigma_t / sigma_s) e^{-(c-1) H} x_s + alpha_t int_{l_s}^{l_t} c e^{-c (l_t - l)}
    W e^{A l} dl, the integral being c (e^{A l_t} - e^{(c + A) l_s - c l_t}) / (c + A)."""
    alpha, sigma = sde.kernel_coefficients(torch.stack([times[0], times[-1]]))
    l_s, l_t = torch.log(alpha / sigma)
    keep = sigma[1] / sigma[0] * torch.exp(-(c - 1) * (l_t - l_s))
    integral = c * (torch.exp(A * l_t) - torch.exp((c + A) * l_s - c * l_t)) / (c + A)
    return keep * x + alpha[1] * integral * W


@pytest.mark.parametrize("kind", SDES)
@pytest.mark.parametrize("variant", ["ode", "sde"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_exponential_integrals_converge_at_the_order(order, variant, kind):
    """With m = W e^{l} independent of x, the ODE (c = 1) and the SDE's drift (c = 2, no noise)
    have closed-form solutions, and a multistep rule's error is its quadrature error alone: the
    slope of log error against log steps (32 to 128 on a log-SNR grid from T to sigma / alpha =
    0.25) lies within [-order - 0.3, -order + 0.2] (measured: -order + 0.03 to 0.1, the
    asymptotics approached from above). A wrong correction coefficient costs an order."""
    sde = SDES[kind]()
    c = 1 if variant == "ode" else 2
    eps = float(time_at_scaled_sigma(sde, 0.25))
    x = sde.prior_sampling((4, 2), torch.Generator().manual_seed(2)).to(F64)
    steps = (32, 64, 128)
    errors = []
    for n in steps:
        times = scoresde.time_grid(sde, n, kind="log_snr", eps=eps)
        out = dpm_solver(
            sde,
            exponential_prediction_score(sde),
            x,
            times,
            noise=ZeroNoise(),
            on_step=lambda i, x: x,
            order=order,
            lower_order_final=False,
            variant=variant,
        )
        errors.append((out - exact_exponential_flow(sde, x, times, c)).abs().max().item())
    slope = math.log(errors[-1] / errors[0]) / math.log(steps[-1] / steps[0])
    assert -order - 0.3 < slope < -order + 0.2, (errors, slope)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_sde_variant_keeps_a_point_mass_marginal_exactly(order):
    """For a point mass at mu the data prediction is mu, and each step maps N(alpha_s mu,
    sigma_s^2 I) onto N(alpha_t mu, sigma_t^2 I) exactly: from the prior at T, 8 steps to eps = 0.05
    give (x - alpha mu) / sigma ~ N(0, I) up to e^{-(l_eps - l_T)} ~ 1e-3 of memory of the prior.
    On 20,000 x 2 values: mean within 0.02 and variance within 0.03 of (0, 1), 4 standard errors
    (1 / 200 and sqrt(2 / 40,000))."""
    sde = VPSDE()
    mu = torch.tensor([1.5, -0.5], dtype=F64)

    def score_fn(x, t):
        alpha, sigma = (c[:, None] for c in sde.kernel_coefficients(t))
        return -(x - alpha * mu) / sigma**2

    times = scoresde.time_grid(sde, 8, eps=0.05)
    out = scoresde.sample(
        sde,
        score_fn,
        (20_000, 2),
        sampler="dpm_solver",
        variant="sde",
        order=order,
        times=times,
        denoise=False,
        dtype=F64,
        generator=torch.Generator().manual_seed(7),
    )
    alpha, sigma = (c.item() for c in sde.kernel_coefficients(times[-1:]))
    z = (out - alpha * mu) / sigma
    assert abs(z.mean().item()) < 0.02
    assert abs(z.var().item() - 1) < 0.03


def test_sde_variant_samples_the_ring():
    """DPM-Solver++(2M) SDE with 100 steps on VP, the ring's exact score: mean -log p(samples) - H
    within 0.04 nats of 0 on 10,000 samples (4 Monte-Carlo standard errors of 0.01; the measured
    bias at 100 steps is within +-0.02 over three seeds and three SDEs)."""
    sde = VPSDE()
    ring = scoresde.GaussianMixture.ring()
    entropy, _ = ring.entropy(n=200_000, generator=torch.Generator().manual_seed(0))
    x = scoresde.sample(
        sde,
        ring.score_fn(sde),
        (10_000, 2),
        sampler="dpm_solver",
        variant="sde",
        order=2,
        num_steps=100,
        dtype=F64,
        generator=torch.Generator().manual_seed(3),
    )
    gap = -ring.log_prob(x).mean().item() - entropy
    assert abs(gap) < 0.04, gap


def test_sde_variant_draws_each_sample_from_its_own_generator():
    """With one generator per sample, sample i does not depend on the batch it is drawn in."""
    sde = VPSDE()
    ring = scoresde.GaussianMixture.ring()
    kwargs = dict(sampler="dpm_solver", variant="sde", num_steps=10, dtype=F64)
    batch = scoresde.sample(
        sde,
        ring.score_fn(sde),
        (3, 2),
        generator=[torch.Generator().manual_seed(s) for s in (10, 11, 12)],
        **kwargs,
    )
    alone = scoresde.sample(
        sde, ring.score_fn(sde), (1, 2), generator=[torch.Generator().manual_seed(11)], **kwargs
    )
    torch.testing.assert_close(batch[1:2], alone, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("make", "n", "grid"), [(VESDE, 5, "log_snr"), (VPSDE, 20, "uniform")])
def test_lower_order_final_ends_with_a_first_order_step(make, n, grid):
    """The last step of DPM-Solver++(3M) with lower_order_final is the first-order one, DDIM's,
    from the state at t_{n-1} (equal to 1e-12), on any number of steps; without it, the
    third-order step lands elsewhere (by more than 1e-3), so the comparison tells them apart."""
    sde = make()
    ring = scoresde.GaussianMixture.ring()
    times = scoresde.time_grid(sde, n, kind=grid)
    finals = {}
    for lower in (True, False):
        result = scoresde.sample(
            sde,
            ring.score_fn(sde),
            (200, 2),
            sampler="dpm_solver",
            lower_order_final=lower,
            times=times,
            denoise=False,
            dtype=F64,
            trajectory_times=times[-2:-1],
            return_info=True,
            generator=torch.Generator().manual_seed(5),
        )
        last = ddim(
            sde,
            ring.score_fn(sde),
            result.trajectory[0],
            times[-2:],
            noise=ZeroNoise(),
            on_step=lambda i, x: x,
        )
        finals[lower] = (result.samples - last).abs().max().item()
    assert finals[True] < 1e-12 and finals[False] > 1e-3, finals
