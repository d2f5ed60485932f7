"""The SDEs of ``scoresde.sde`` against closed-form and independently computed truth.

Every SDE here has a linear drift, ``dx = f(t) x dt + g(t) dw``, so its Gaussian kernel
``N(alpha(t) x0, sigma(t)^2 I)`` solves the moment ODEs

    alpha' = f alpha,              alpha(0) = 1
    v'     = 2 f v + g^2,          v(0) = sigma_0^2   (v = sigma^2)

which the tests solve with scipy from nothing but ``sde.sde``: they never read the formulas the
library uses for ``marginal_prob``. The discrete models (DDPM, SMLD) are checked against their
own exact chains and against the SDE in the limit of many steps.
"""

import math
import re

import numpy as np
import pytest
import torch
from closed_forms import WrittenKernel
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp
from scipy.stats import multivariate_normal
from torch import Tensor
from user_sde import TimeVaryingOU

from scoresde import SDE, VESDE, VPSDE, LinearSDE, SubVPSDE
from scoresde.sampling.chain import chain_transitions
from scoresde.sde import CosineSchedule, unchecked_times

F64 = torch.float64


def user_f(c: float):
    """A non-monotone drift coefficient ``f(t) = -c (1 + sin(2 pi t) / 2)``."""
    return lambda t: -c * (1 + 0.5 * torch.sin(2 * math.pi * t))


def user_g(d: float):
    """A growing diffusion coefficient ``g(t) = d exp(t)``."""
    return lambda t: d * torch.exp(t)


def user_linear(c: float, d: float, initial_std: float) -> LinearSDE:
    return LinearSDE(user_f(c), user_g(d), initial_std=initial_std)


def initial_var(sde: SDE) -> float:
    """``sigma_0^2``, the kernel's variance at ``t = 0``: ``sigma_min^2`` for VE (the reference's
    kernel starts there), a LinearSDE's ``initial_std^2``, else 0."""
    if hasattr(sde, "sigma_min"):
        return sde.sigma_min**2
    return getattr(sde, "initial_std", 0.0) ** 2


# Hypothesis strategies over each SDE's parameters (valid ranges, ordered where required).
SDE_STRATEGIES = {
    "vp-linear": st.builds(
        lambda lo, span: VPSDE(lo, lo + span), st.floats(0.01, 5.0), st.floats(0.01, 45.0)
    ),
    "vp-cosine": st.builds(lambda hi: VPSDE(0.01, hi, schedule="cosine"), st.floats(0.02, 200.0)),
    "subvp": st.builds(
        lambda lo, span: SubVPSDE(lo, lo + span), st.floats(0.01, 5.0), st.floats(0.01, 45.0)
    ),
    "ve": st.builds(
        lambda lo, ratio: VESDE(lo, lo * ratio), st.floats(1e-3, 1.0), st.floats(1.5, 1e4)
    ),
    "linear-fg": st.builds(
        user_linear, st.floats(0.0, 3.0), st.floats(0.1, 3.0), st.floats(0.0, 1.0)
    ),
    "user-ou": st.builds(
        TimeVaryingOU, a=st.floats(0.1, 5.0), b=st.floats(0.0, 10.0), s=st.floats(0.1, 5.0)
    ),
}

# One default instance per kind (with N steps), for the tests that are not about parameters.
SDE_FACTORIES = {
    "vp-linear": lambda N=1000: VPSDE(N=N),
    "vp-cosine": lambda N=1000: VPSDE(N=N, schedule="cosine"),
    "subvp": lambda N=1000: SubVPSDE(N=N),
    "ve": lambda N=1000: VESDE(N=N),
    "linear-fg": lambda N=1000: LinearSDE(user_f(1.5), user_g(1.0), initial_std=0.1, N=N),
    "user-ou": lambda N=1000: TimeVaryingOU(N=N),
}
DEFAULT_SDES = {kind: factory() for kind, factory in SDE_FACTORIES.items()}
KINDS = list(DEFAULT_SDES)


def coefficients(sde: SDE, t: float) -> tuple[float, float]:
    """``f(t)`` and ``g(t)`` read off ``sde.sde`` (the drift at ``x = 1`` is ``f(t)``)."""
    drift, diffusion = sde.sde(torch.ones(1, 1, dtype=F64), torch.tensor([t], dtype=F64))
    return drift.item(), diffusion.item()


def moment_ode(sde: SDE, ts: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """``alpha(t)`` and ``sigma(t)^2`` at sorted times ``ts`` by solving the moment ODEs."""

    def rhs(t, y):
        f, g = coefficients(sde, t)
        return [f * y[0], 2 * f * y[1] + g * g]

    # Solved piecewise between the times where a coefficient's derivative jumps (the cosine
    # schedule's clip), which a step-size controller does not see: across the kink at t_c = 0.989
    # of VPSDE(beta_max=174, schedule="cosine") one solve was off by 9e-8 relative.
    schedule = getattr(sde, "schedule", None)
    kinks = [k for k in [getattr(schedule, "clip_time", None)] if k is not None and 0 < k < ts[-1]]
    y, out = [1.0, initial_var(sde)], {}
    for start, stop in zip([0.0, *kinks], [*kinks, ts[-1]], strict=True):
        at = sorted({t for t in ts if start < t <= stop} | {stop})
        # Pure relative error control (atol ~ 0): the variance starts at 0 for most SDEs.
        sol = solve_ivp(rhs, (start, stop), y, method="DOP853", t_eval=at, rtol=1e-11, atol=1e-30)
        assert sol.success, sol.message
        out.update({t: (a, v) for t, a, v in zip(at, sol.y[0], sol.y[1], strict=True)})
        y = [sol.y[0][-1], sol.y[1][-1]]
    alpha, var = zip(*(out[t] for t in ts), strict=True)
    return np.array(alpha), np.array(var)


# -- marginal_prob --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=10)
@given(data=st.data())
def test_marginal_prob_solves_the_moment_odes(kind, data):
    sde = data.draw(SDE_STRATEGIES[kind], label="sde")
    # The user SDE computes its variance as s^2 (1 - alpha^2), which cancels to ~1e-16 / t
    # relative as t -> 0 (that is the user's formula, not the library's): t >= 1e-5 for it.
    t_min = 1e-5 if kind == "user-ou" else 1e-8
    times = st.lists(st.floats(t_min, 1.0), min_size=1, max_size=3)
    ts = sorted(set(data.draw(times, label="t")))
    alpha_ode, var_ode = moment_ode(sde, ts)
    x0 = torch.ones(len(ts), 1, dtype=F64)
    mean, std = sde.marginal_prob(x0, torch.tensor(ts, dtype=F64))
    # The ODE is solved to rtol 1e-11 (measured agreement: <= 7e-11 relative; 1e-9 for the user
    # SDE's variance at t ~ 1e-5, its own cancellation). 1e-8 leaves a margin of >= 10 over that
    # and still catches any formula error, e.g. cancellation in a closed form at small t.
    np.testing.assert_allclose(mean[:, 0].numpy(), alpha_ode, rtol=1e-8)
    np.testing.assert_allclose(std.numpy() ** 2, var_ode, rtol=1e-8)


@pytest.mark.parametrize(
    "sde, initial_std",
    [
        (VPSDE(0.1, 20.0), 0.0),
        (VPSDE(0.5, 8.0), 0.0),
        (SubVPSDE(0.1, 20.0), 0.0),
        (SubVPSDE(0.01, 50.0), 0.0),
        (VPSDE(0.1, 20.0, schedule="cosine"), 0.0),
        (VESDE(0.01, 50.0), 0.01),
        (VESDE(0.1, 1000.0), 0.1),
    ],
    ids=repr,
)
def test_linear_sde_from_f_g_reproduces_the_closed_forms(sde, initial_std):
    lin = LinearSDE(sde.f, sde.g, initial_std=initial_std)
    t = torch.cat([torch.logspace(-8, -1, 50, dtype=F64), torch.linspace(0.1, 1.0, 500, dtype=F64)])
    # Measured: ~1e-15 relative for the smooth schedules (quadrature at machine precision), and
    # 1.2e-7 (alpha) / 5e-10 (sigma) for the cosine schedule, whose beta has a kink at t_c
    # between grid points (O(h^2) there). Asserted: 1e-12 smooth, 1e-6 cosine.
    rtol = 1e-6 if isinstance(getattr(sde, "schedule", None), CosineSchedule) else 1e-12
    torch.testing.assert_close(lin.mean_coeff(t), sde.mean_coeff(t), rtol=rtol, atol=0)
    torch.testing.assert_close(lin.marginal_std(t), sde.marginal_std(t), rtol=rtol, atol=0)
    assert lin.prior_std == pytest.approx(float(sde.marginal_std(torch.tensor([1.0], dtype=F64))))


# -- the cosine schedule ------------------------------------------------------------------------


def nichol_dhariwal_alpha_bar(t: np.ndarray, s: float = 0.008) -> np.ndarray:
    """``alpha_bar(t) = cos^2(pi/2 (t + s)/(1 + s)) / cos^2(pi/2 s/(1 + s))`` (their eq. 17)."""
    return np.cos(0.5 * np.pi * (t + s) / (1 + s)) ** 2 / np.cos(0.5 * np.pi * s / (1 + s)) ** 2


@pytest.mark.parametrize("beta_max", [1.0, 20.0, 200.0])
def test_cosine_schedule_is_nichol_dhariwal_clipped_at_beta_max(beta_max):
    sde = VPSDE(0.01, beta_max, schedule="cosine")
    # beta(t) = d/dt -log alpha_bar = pi/(1+s) tan(u(t)), u(t) = pi/2 (t + s)/(1 + s), reaches
    # beta_max at t_c.
    s, a = 0.008, math.pi / 2 / 1.008
    t_c = min((math.atan(beta_max / (2 * a)) - a * s) / a, 1.0)
    t = np.linspace(0.0, 1.0, 10_001)
    below = t[t < t_c]
    alpha = sde.mean_coeff(torch.tensor(below, dtype=F64)).numpy()
    # Same formula evaluated two ways in float64: only rounding (< 1e-13 relative) separates them.
    np.testing.assert_allclose(alpha**2, nichol_dhariwal_alpha_bar(below), rtol=1e-12)
    beta = sde.beta(torch.tensor(t, dtype=F64)).numpy()
    assert beta.max() <= beta_max * (1 + 1e-12)
    np.testing.assert_array_equal(beta[t > t_c], beta_max)
    # Continuity at the clip time: beta'(t) <= 2 a^2 + beta^2 / 2, so 1e-9 below t_c the jump is
    # below ~1e-5 of beta_max.
    left = sde.beta(torch.tensor([t_c - 1e-9], dtype=F64)).item()
    assert left == pytest.approx(beta_max, rel=1e-5)
    # The drift the SDE reports is -beta/2, its diffusion sqrt(beta).
    f, g = coefficients(sde, 0.5)
    b = sde.beta(torch.tensor([0.5], dtype=F64)).item()
    assert (f, g) == pytest.approx((-0.5 * b, math.sqrt(b)), rel=1e-14)


def test_cosine_discrete_betas_are_clipped_at_0999():
    sde = VPSDE(0.1, 1e4, N=10, schedule="cosine")
    t = torch.linspace(0, 1, 11, dtype=F64)
    alpha_bar = sde.mean_coeff(t) ** 2
    unclipped = 1 - alpha_bar[1:] / alpha_bar[:-1]
    assert unclipped.max() > 0.999  # the clip is exercised
    expected = unclipped.clamp(max=0.999).float()
    torch.testing.assert_close(sde.discrete_betas, expected, rtol=1e-6, atol=0)  # float32 table
    assert sde.discrete_betas.max().item() == pytest.approx(0.999, rel=1e-7)


def test_cosine_with_beta_max_below_beta0_is_constant_beta():
    # beta(0) of the cosine schedule is ~0.039; below it beta is clipped everywhere: t_c = 0.
    sde = VPSDE(0.001, 0.02, schedule="cosine")
    t = torch.linspace(0, 1, 11, dtype=F64)
    torch.testing.assert_close(sde.mean_coeff(t), torch.exp(-0.01 * t), rtol=1e-14, atol=0)
    torch.testing.assert_close(sde.beta(t), torch.full_like(t, 0.02), rtol=0, atol=0)


# -- discretisations ----------------------------------------------------------------------------


def per_step_rates(sde: SDE, t: float) -> tuple[float, float]:
    """``f_i / dt`` (per unit ``x``) and ``G_i^2 / dt`` of ``sde.discretize`` at ``t``."""
    dt = sde.T / sde.N
    f_i, G_i = sde.discretize(torch.ones(1, 1, dtype=F64), torch.tensor([t], dtype=F64))
    return f_i.item() / dt, G_i.item() ** 2 / dt


@pytest.mark.parametrize("kind", ["subvp", "linear-fg", "user-ou"])
@pytest.mark.parametrize("N", [1, 7, 1000])
def test_euler_maruyama_discretisation_is_the_sde_times_dt(kind, N):
    sde = SDE_FACTORIES[kind](N)
    for t in (0.0, 0.123, 0.5, 1.0):
        f, g = coefficients(sde, t)
        # f_i = f dt and G_i = g sqrt(dt) exactly: zero error at every N, up to rounding.
        assert per_step_rates(sde, t) == pytest.approx((f, g * g), rel=1e-13, abs=0)


def grid_time(N: int, s: float) -> float:
    """A time just above the discrete grid point ``i / (N - 1)`` nearest ``s`` (index exactly i)."""
    return (round(s * (N - 1)) + 1e-6) / (N - 1)


@pytest.mark.parametrize("s", [0.3, 0.8])
def test_ddpm_discretisation_converges_at_first_order(s):
    sde0 = VPSDE(0.1, 20.0)
    errors = {}
    for N in (1_000, 10_000):
        sde = VPSDE(0.1, 20.0, N=N)
        t = grid_time(N, s)
        beta = sde0.beta(torch.tensor(t, dtype=F64)).item()
        drift_rate, var_rate = per_step_rates(sde, t)
        # At grid times N beta_i = beta(t) (up to the 1e-6 offset and float32 tables, ~1e-7).
        assert var_rate == pytest.approx(beta, rel=1e-6)
        # N (sqrt(1 - beta/N) - 1) = -beta/2 - beta^2/(8N) - O(beta^3/N^2): first order, with
        # this leading constant; the next term is beta/(2N) <= 1% of it at N >= 1000.
        errors[N] = drift_rate - (-0.5 * beta)
        assert N * errors[N] == pytest.approx(-(beta**2) / 8, rel=0.01)
    assert math.log10(errors[1_000] / errors[10_000]) == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("s", [0.3, 0.8])
def test_smld_discretisation_converges_at_first_order(s):
    # L = log(sigma_max/sigma_min); g^2 = 2 L sigma(t)^2. With h = 1/(N-1) and dt = 1/N,
    # N (sigma(t)^2 - sigma(t-h)^2) / g^2 = 1 + (1 - L)/N + O(L^2/N^2).
    sigma_min, sigma_max = 0.1, 10.0
    L = math.log(sigma_max / sigma_min)
    for N in (1_000, 3_000):
        sde = VESDE(sigma_min, sigma_max, N=N)
        t = grid_time(N, s)
        drift_rate, var_rate = per_step_rates(sde, t)
        assert drift_rate == 0.0
        _, g = coefficients(sde, t)
        rel_err = var_rate / g**2 - 1
        # Remainder O(L^2/N) ~ 2% of (1 - L) at N = 1000; float32 tables add ~N 1e-7 / L.
        assert N * rel_err == pytest.approx(1 - L, rel=0.05)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_ddpm_discretisation_converges_off_grid(schedule):
    # Off the grid, the index floor(t (N-1)) lags t by < 1/(N-1) (and the cosine betas live on
    # the grid i/N, another 1/N): |N beta_i - beta(t)| <= 2 max|beta'| / (N - 1) + beta^2 / N.
    # For the cosine schedule max|beta'| = 2 a^2 + beta_max^2 / 2 (a = pi / 2 / 1.008).
    sde0 = VPSDE(0.1, 20.0, schedule=schedule)
    a = math.pi / 2 / 1.008
    slope = 19.9 if schedule == "linear" else 2 * a**2 + 20.0**2 / 2
    for N in (100, 1_000, 10_000, 100_000):
        sde = VPSDE(0.1, 20.0, N=N, schedule=schedule)
        for t in (0.1234, 0.5, 0.98765):
            beta = sde0.beta(torch.tensor(t, dtype=F64)).item()
            drift_rate, var_rate = per_step_rates(sde, t)
            bound = (2 * slope + beta**2) / (N - 1)
            assert abs(var_rate - beta) <= bound
            assert abs(drift_rate + 0.5 * beta) <= bound


def step_time(N: int, i: int) -> float:
    """A time in the middle of discrete step ``i``: ``floor(t (N - 1)) = i``."""
    return min((i + 0.5) / (N - 1), 1.0)


def forward_chain_moments(sde: SDE, steps: int) -> tuple[Tensor, Tensor]:
    """Mean coefficient and variance of ``x_steps`` of the chain ``x_{i+1} = x_i + f_i + G_i z``
    started at ``x_0 = 1`` (exact: the chain is linear-Gaussian), in float64."""
    m, v = torch.ones(1, 1, dtype=F64), torch.zeros(1, dtype=F64)
    for i in range(steps):
        t = torch.tensor([step_time(sde.N, i)], dtype=F64)
        f_i, G_i = sde.discretize(torch.ones(1, 1, dtype=F64), t)
        scale = 1 + f_i[0, 0]  # f_i is linear in x: x + f_i(x) = scale x
        m, v = scale * m, scale**2 * v + G_i**2
    return m[0, 0], v[0]


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_ddpm_chain_marginal_is_sqrt_alpha_bar_scaled_data(schedule):
    sde = VPSDE(0.1, 20.0, N=50, schedule=schedule)
    alpha_bar64 = torch.cumprod(1 - sde.discrete_betas.double(), 0)
    # The stored float32 table agrees with the float64 product to N float32 roundings.
    torch.testing.assert_close(sde.alphas_cumprod.double(), alpha_bar64, rtol=50 * 6e-8, atol=0)
    for i in (1, 2, 25, 50):
        m, v = forward_chain_moments(sde, i)
        # Exact algebra in float64: only rounding separates the chain from the closed form.
        torch.testing.assert_close(m, alpha_bar64[i - 1].sqrt(), rtol=1e-13, atol=0)
        torch.testing.assert_close(v, 1 - alpha_bar64[i - 1], rtol=1e-12, atol=0)
        # The exposed float32 tables: 1 - alpha_bar >= beta_0 = 2e-3 loses up to 6e-8 / 2e-3
        # relative in float32, i.e. 1.5e-5 on its square root.
        assert m.item() == pytest.approx(sde.sqrt_alphas_cumprod[i - 1].item(), rel=1e-6)
        assert v.sqrt().item() == pytest.approx(sde.sqrt_1m_alphas_cumprod[i - 1].item(), rel=3e-5)


def test_smld_chain_marginal_variance_is_sigma_i_squared():
    sde = VESDE(0.01, 50.0, N=50)
    for i in (1, 2, 25, 50):
        m, v = forward_chain_moments(sde, i)
        assert m.item() == 1.0
        # The first step adds sigma_0^2 (the kernel's initial noise), then the increments
        # telescope; float32 sigmas squared and differenced: ~1e-7 relative.
        torch.testing.assert_close(v.float(), sde.discrete_sigmas[i - 1] ** 2, rtol=1e-6, atol=0)


# -- priors ---------------------------------------------------------------------------------------


def expected_prior_std(kind: str, sde: SDE) -> float:
    """Each SDE's prior std from its definition."""
    if kind == "ve":
        return sde.sigma_max
    if kind == "user-ou":
        return sde.s
    if kind == "linear-fg":  # a LinearSDE's default prior: the kernel's std at T (moment ODE)
        return math.sqrt(moment_ode(sde, [sde.T])[1][0])
    return 1.0  # VP, cosine VP, sub-VP


@pytest.mark.parametrize("kind", KINDS)
def test_prior_logp_is_the_gaussian_density(kind):
    sde = DEFAULT_SDES[kind]
    std = expected_prior_std(kind, sde)
    g = torch.Generator().manual_seed(0)
    z = std * torch.randn(16, 3, generator=g, dtype=F64)
    direct = multivariate_normal(np.zeros(3), std**2 * np.eye(3)).logpdf(z.numpy())
    # The LinearSDE's prior std (quadrature) vs the moment ODE's: ~1e-11 apart; others exact.
    np.testing.assert_allclose(sde.prior_logp(z).numpy(), direct, rtol=1e-8)
    # Image-shaped input: the log-density sums over every non-batch dimension.
    z_img = std * torch.randn(5, 2, 3, 4, generator=g, dtype=F64)
    direct = multivariate_normal(np.zeros(24), std**2 * np.eye(24)).logpdf(z_img.flatten(1).numpy())
    np.testing.assert_allclose(sde.prior_logp(z_img).numpy(), direct, rtol=1e-8)


@pytest.mark.parametrize("kind", KINDS)
def test_prior_sampling_has_the_prior_moments(kind):
    sde = DEFAULT_SDES[kind]
    std = expected_prior_std(kind, sde)
    n = 40_000
    # The protocol is prior_sampling(shape, generator); the draw is cast by the caller.
    z = sde.prior_sampling((n, 2), torch.Generator().manual_seed(1)).to(F64)
    assert z.shape == (n, 2)
    # Mean: standard error std / sqrt(n); variance: std^2 sqrt(2 / n). Within 5 standard errors
    # (false-alarm chance ~6e-7 per entry; the seed is fixed).
    assert z.mean(0).abs().max() <= 5 * std / math.sqrt(n)
    assert (z.var(0) / std**2 - 1).abs().max() <= 5 * math.sqrt(2 / n)
    # Same generator state, same samples; float32 by default.
    z2 = sde.prior_sampling((n, 2), torch.Generator().manual_seed(1)).to(F64)
    assert torch.equal(z, z2)
    assert sde.prior_sampling((3, 1, 2, 2)).dtype == torch.float32


# -- reverse ------------------------------------------------------------------------------------


def toy_score(x: Tensor, t: Tensor) -> Tensor:
    """Any smooth function of (x, t) will do: reverse() must use it exactly as given."""
    return -x * (1 + t.reshape(-1, *[1] * (x.ndim - 1))) + torch.sin(x)


@pytest.mark.parametrize("kind", KINDS)
def test_reverse_drift_and_diffusion(kind):
    sde = DEFAULT_SDES[kind]
    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, 3, generator=g, dtype=F64)
    t = torch.rand(6, generator=g, dtype=F64)
    drift, diffusion = sde.sde(x, t)
    score = toy_score(x, t)
    g2 = diffusion[:, None] ** 2
    rev_drift, rev_diffusion = sde.reverse(toy_score).sde(x, t)
    torch.testing.assert_close(rev_drift, drift - g2 * score, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(rev_diffusion, diffusion, rtol=0, atol=0)
    flow_drift, flow_diffusion = sde.reverse(toy_score, probability_flow=True).sde(x, t)
    torch.testing.assert_close(flow_drift, drift - 0.5 * g2 * score, rtol=1e-14, atol=1e-14)
    assert torch.equal(flow_diffusion, torch.zeros_like(diffusion))
    assert sde.reverse(toy_score).T == sde.T


# -- shapes and dtypes ----------------------------------------------------------------------------


def everything(kind: str, sde: SDE, x: Tensor, t: Tensor) -> list[Tensor]:
    """Every per-element output of the protocol, for shape and dtype comparisons."""
    out = [*sde.sde(x, t), *sde.marginal_prob(x, t), *sde.discretize(x, t), sde.prior_logp(x)]
    out += [*sde.reverse(toy_score).sde(x, t), *sde.reverse(toy_score, True).sde(x, t)]
    return out + [*sde.chain_coefficients(t)]


@pytest.mark.parametrize("kind", KINDS)
def test_points_and_images_share_every_code_path(kind):
    sde = DEFAULT_SDES[kind]
    g = torch.Generator().manual_seed(3)
    x_img = torch.randn(4, 2, 3, 5, generator=g, dtype=F64)
    t = torch.tensor([0.0, 0.01, 0.5, 1.0], dtype=F64)
    images = everything(kind, sde, x_img, t)
    points = everything(kind, sde, x_img.flatten(1), t)
    for a, b in zip(images, points, strict=True):
        assert a.shape[0] == 4 and a.shape[1:] in ((), x_img.shape[1:])
        # Elementwise maths on the same numbers: identical up to summation order (prior_logp).
        torch.testing.assert_close(a.reshape(b.shape), b, rtol=1e-14, atol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_float32_and_float64_keep_dtype_and_agree(kind):
    sde = DEFAULT_SDES[kind]
    g = torch.Generator().manual_seed(4)
    x = torch.randn(5, 3, generator=g, dtype=F64)
    t = torch.tensor([1e-5, 1e-3, 0.3, 0.9, 1.0], dtype=F64)
    out64 = everything(kind, sde, x, t)
    out32 = everything(kind, sde, x.float(), t.float())
    for a64, a32 in zip(out64, out32, strict=True):
        assert a64.dtype == F64 and a32.dtype == torch.float32
        # float32 keeps ~1e-7 relative per operation, a few dozen operations deep: 2e-5 relative
        # (absolute 1e-5 for entries that cancel to ~0, e.g. reverse drifts).
        torch.testing.assert_close(a32.double(), a64, rtol=2e-5, atol=1e-5)


# -- the discrete chains -------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_vp_chain_is_ddpm_on_its_own_grid(schedule):
    """DDPM: x_i = sqrt(1 - beta_i) x_{i-1} + sqrt(beta_i) z. Between the times of steps i - 1 and
    i the chain's transition (a, v) is (sqrt(1 - beta_i), beta_i); over several steps the products.
    Float64 algebra on the float32 betas: 1e-12."""
    sde = VPSDE(0.1, 20.0, N=100, schedule=schedule)
    betas = sde.discrete_betas.double()
    for i, j in ((1, 0), (2, 1), (50, 49), (99, 98), (99, 40)):
        t = torch.tensor([step_time(sde.N, i), step_time(sde.N, j)], dtype=F64)
        a, v, _ = chain_transitions(sde, t, "test")
        a2 = torch.prod(1 - betas[j + 1 : i + 1])
        torch.testing.assert_close(a[0] ** 2, a2, rtol=1e-12, atol=0)
        torch.testing.assert_close(v[0], 1 - a2, rtol=1e-12, atol=0)


def test_ve_chain_is_smld_on_its_own_grid():
    """SMLD: x_i = x_{i-1} + sqrt(sigma_i^2 - sigma_{i-1}^2) z, so a = 1 and v = sigma_i^2 -
    sigma_j^2 between the times of steps j < i."""
    sde = VESDE(0.01, 50.0, N=100)
    sigmas = sde.discrete_sigmas.double()
    for i, j in ((1, 0), (50, 49), (99, 98), (99, 10)):
        t = torch.tensor([step_time(sde.N, i), step_time(sde.N, j)], dtype=F64)
        a, v, post = chain_transitions(sde, t, "test")
        assert a.item() == 1.0
        torch.testing.assert_close(v[0], sigmas[i] ** 2 - sigmas[j] ** 2, rtol=1e-12, atol=0)
        torch.testing.assert_close(post[0], sigmas[j] ** 2 / sigmas[i] ** 2, rtol=1e-12, atol=0)


@pytest.mark.parametrize("kind", ["subvp", "linear-fg", "user-ou"])
def test_an_sde_without_a_discrete_model_chains_with_its_kernel(kind):
    sde = DEFAULT_SDES[kind]
    t = torch.tensor([1e-3, 0.3, 1.0], dtype=F64)
    for chain, kernel in zip(sde.chain_coefficients(t), sde.kernel_coefficients(t), strict=True):
        torch.testing.assert_close(chain, kernel, rtol=0, atol=0)


def test_chain_refuses_a_grid_finer_than_its_steps():
    sde = VPSDE(0.1, 5.0, N=10)
    t = torch.tensor([1.0, 0.5, 0.49], dtype=F64)  # 0.5 and 0.49 are both in step 4
    with pytest.raises(ValueError, match="does not move between t=0.5 and t=0.49"):
        chain_transitions(sde, t, "reverse_diffusion")


# -- bad input ----------------------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")
FG = {"f": user_f(1.0), "g": user_g(1.0)}  # valid coefficients for LinearSDE

BAD_PARAMETERS = [
    # (constructor, kwargs, parameter name, bad value as printed, what is allowed)
    (VPSDE, {"beta_min": -0.1}, "beta_min", "-0.1", "> 0"),
    (VPSDE, {"beta_min": 0.0}, "beta_min", "0.0", "> 0"),
    (VPSDE, {"beta_max": NAN}, "beta_max", "nan", "finite"),
    (VPSDE, {"beta_max": INF}, "beta_max", "inf", "finite"),
    (VPSDE, {"beta_min": 5.0, "beta_max": 1.0}, "beta_max", "1.0", "> beta_min = 5.0"),
    (VPSDE, {"N": 20}, "N", "20", "> beta_max = 20.0"),
    (VPSDE, {"beta_max": 1e308}, "N", "1000", "> beta_max = 1e+308"),
    (VPSDE, {"N": 0}, "N", "0", ">= 1"),
    (VPSDE, {"N": -3}, "N", "-3", ">= 1"),
    (VPSDE, {"N": 10.5}, "N", "10.5", "integer"),
    (VPSDE, {"N": "1000"}, "N", "'1000'", "integer"),
    (VPSDE, {"schedule": "quadratic"}, "schedule", "'quadratic'", "'linear', 'cosine'"),
    (SubVPSDE, {"beta_min": 2.0, "beta_max": 2.0}, "beta_max", "2.0", "> beta_min = 2.0"),
    (SubVPSDE, {"N": 0}, "N", "0", ">= 1"),
    (VESDE, {"sigma_min": -0.01}, "sigma_min", "-0.01", "> 0"),
    (VESDE, {"sigma_min": 0}, "sigma_min", "0", "> 0"),
    (VESDE, {"sigma_max": INF}, "sigma_max", "inf", "finite"),
    (VESDE, {"sigma_min": 50.0, "sigma_max": 0.01}, "sigma_max", "0.01", "> sigma_min = 50.0"),
    (VESDE, {"sigma_max": 1e300}, "sigma_max", "1e+300", "is finite"),
    (VESDE, {"N": 2.0}, "N", "2.0", "integer"),
    (LinearSDE, {**FG, "T": -1.0}, "T", "-1.0", "> 0"),
    (LinearSDE, {**FG, "T": NAN}, "T", "nan", "finite"),
    (LinearSDE, {**FG, "initial_std": -1.0}, "initial_std", "-1.0", ">= 0"),
    (LinearSDE, {**FG, "initial_std": INF}, "initial_std", "inf", "finite"),
    (LinearSDE, {**FG, "prior_std": 0.0}, "prior_std", "0.0", "> 0"),
    (LinearSDE, {**FG, "sampling_eps": 0.0}, "sampling_eps", "0.0", "(0, 1.0)"),
    (LinearSDE, {**FG, "grid_size": 0}, "grid_size", "0", ">= 1"),
    (LinearSDE, {"f": user_f(1.0)}, "LinearSDE", "f and g", "LinearSDE(f, g)"),
]


@pytest.mark.parametrize(
    "cls, kwargs, name, value, allowed",
    BAD_PARAMETERS,
    ids=[f"{row[0].__name__}-{row[2]}-{row[3]}" for row in BAD_PARAMETERS],
)
def test_bad_parameters_raise_naming_parameter_value_and_allowed(cls, kwargs, name, value, allowed):
    with pytest.raises(ValueError) as info:
        cls(**kwargs)
    message = str(info.value)
    assert message.startswith(name), message  # the message opens with the parameter's name
    for part in (value, allowed):
        assert part in message, f"{part!r} missing from {message!r}"


@pytest.mark.parametrize("kind", ["vp-linear", "vp-cosine", "subvp", "ve", "linear-fg"])
@pytest.mark.parametrize("bad_t", [-0.1, 1.5, NAN])
def test_times_outside_0_T_raise_unless_unchecked(kind, bad_t):
    sde = DEFAULT_SDES[kind]
    x = torch.ones(3, 2, dtype=F64)
    t = torch.tensor([0.0, bad_t, 1.0], dtype=F64)
    calls = [sde.marginal_prob, sde.sde, sde.discretize, sde.reverse(toy_score).sde]
    for call in calls:
        expected = f"t must lie in [0, T] = [0, 1.0]; got {bad_t}"
        with pytest.raises(ValueError, match=re.escape(expected)):
            call(x, t)
    # Inside unchecked_times() the check (a host-device sync) is skipped: no error is raised.
    with unchecked_times():
        sde.marginal_prob(x, t)
        sde.sde(x, t)
    with pytest.raises(ValueError):  # and it is back on afterwards
        sde.marginal_prob(x, t)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("ndim", [2, 4])
def test_kernel_coefficients_are_the_kernel_of_marginal_prob(kind, ndim):
    """``(alpha, sigma)`` equal the mean of ``marginal_prob(x0)`` divided by ``x0`` and its std, for
    the closed forms of LinearSDE subclasses and the base class's probe alike (float64, 1e-14)."""
    sde = DEFAULT_SDES[kind]
    t = torch.tensor([1e-5, 0.01, 0.5, 1.0], dtype=F64)
    alpha, sigma = sde.kernel_coefficients(t, ndim)
    assert alpha.shape == sigma.shape == (4,)
    x0 = torch.full((4,) + (3,) * (ndim - 1), 2.5, dtype=F64)
    mean, std = sde.marginal_prob(x0, t)
    torch.testing.assert_close(alpha, mean.flatten(1)[:, 0] / 2.5, rtol=1e-14, atol=0)
    torch.testing.assert_close(sigma, std, rtol=1e-14, atol=0)
    base_alpha, base_sigma = SDE.kernel_coefficients(sde, t, ndim)  # the derived probe
    torch.testing.assert_close(alpha, base_alpha, rtol=1e-14, atol=0)
    torch.testing.assert_close(sigma, base_sigma, rtol=1e-14, atol=0)


def test_linear_sde_without_coefficients_raises():
    with pytest.raises(ValueError, match="LinearSDE needs the coefficients f and g"):
        LinearSDE()


def test_linear_sde_tables_follow_the_device_of_t():
    """The quadrature tables are copied to ``t``'s device; the 'meta' device stands in for an
    accelerator (shapes and devices only), so a table left on the CPU would raise here."""
    sde = SDE_FACTORIES["linear-fg"]()
    t = torch.tensor([0.1, 0.5], device="meta")
    assert sde.marginal_std(t).device.type == "meta"
    assert sde.mean_coeff(t).device.type == "meta"


def test_subvp_has_no_discrete_model():
    """Sub-VP has no DDPM chain of its own: no tables a discrete loss could silently borrow."""
    sde = SubVPSDE()
    assert not hasattr(sde, "discrete_betas") and not hasattr(sde, "alphas_cumprod")


def test_cosine_schedule_ignores_beta_min():
    a = VPSDE(beta_min=30.0, beta_max=20.0, schedule="cosine")
    b = VPSDE(beta_min=0.1, beta_max=20.0, schedule="cosine")
    t = torch.linspace(0, 1, 11, dtype=F64)
    torch.testing.assert_close(a.marginal_std(t), b.marginal_std(t), rtol=0, atol=0)


def test_discrete_tables_are_cast_once_per_dtype():
    sde = VPSDE(N=100)
    x = torch.ones(3, 2, dtype=F64)
    t = torch.full((3,), 0.5, dtype=F64)
    sde.discretize(x, t)
    table = sde.chain.table("discrete_betas", x)
    assert table.dtype == F64 and sde.chain.table("discrete_betas", x) is table


# -- the built-in SDEs against their formulas, written out independently ---------------------------
@pytest.mark.parametrize("kind", ["vp", "subvp", "ve"])
def test_builtin_sdes_are_their_papers_formulas(kind):
    """kernel_coefficients, marginal_prob, sde and the prior against tests/closed_forms.py (float64
    algebra on the same numbers: 1e-12 relative)."""
    sde = {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE()}[kind]
    written = WrittenKernel(kind)
    t = torch.cat([torch.logspace(-6, -1, 20, dtype=F64), torch.linspace(0.1, 1.0, 50, dtype=F64)])
    truth = written.coefficients(t)
    alpha, sigma = sde.kernel_coefficients(t)
    torch.testing.assert_close(alpha, truth["alpha"], rtol=1e-12, atol=0)
    torch.testing.assert_close(sigma, truth["sigma"], rtol=1e-12, atol=0)
    x = torch.full((len(t), 3), 2.0, dtype=F64)
    mean, std = sde.marginal_prob(x, t)
    torch.testing.assert_close(
        mean, 2.0 * truth["alpha"][:, None].expand(-1, 3), rtol=1e-12, atol=0
    )
    torch.testing.assert_close(std, truth["sigma"], rtol=1e-12, atol=0)
    drift, diffusion = sde.sde(x, t)
    torch.testing.assert_close(drift, 2.0 * truth["f"][:, None].expand(-1, 3), rtol=1e-12, atol=0)
    torch.testing.assert_close(diffusion, truth["g"], rtol=1e-12, atol=0)
    prior_std = truth["sigma"][-1].item() if kind == "ve" else 1.0
    z = torch.randn(7, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    expected = -0.5 * (z**2).sum(1) / prior_std**2 - 3 * math.log(
        prior_std * math.sqrt(2 * math.pi)
    )
    torch.testing.assert_close(sde.prior_logp(z), expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("kind", ["vp-linear", "subvp", "ve", "linear-fg"])
def test_a_time_of_the_wrong_shape_is_refused(kind):
    """A (B, 1) time would broadcast against (B, D) data into a (B, B, D) or wrong (B, D) result."""
    sde = DEFAULT_SDES[kind]
    x = torch.ones(4, 2, dtype=F64)
    for bad in (torch.full((4, 1), 0.5, dtype=F64), torch.full((3,), 0.5, dtype=F64)):
        for call in (sde.sde, sde.marginal_prob):
            with pytest.raises(ValueError, match=r"t must have shape \(4,\), one time per sample"):
                call(x, bad)
    with pytest.raises(ValueError, match=r"t must have shape \(B,\); got shape \(4, 1\)"):
        sde.kernel_coefficients(torch.full((4, 1), 0.5, dtype=F64))
