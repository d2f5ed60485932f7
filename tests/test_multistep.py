"""The multistep solvers (dpm_solver, unipc, ipndm) against closed-form truth.

Gaussian data ``N(mu, s^2 I)`` has a closed-form probability-flow map (``gaussian_flow``), so each
solver's error is known exactly: its slope against the number of steps is the solver's order, on
every SDE with a linear drift. A point mass makes the data prediction constant along the flow,
which every solver here integrates exactly.
"""

import math
import re

import pytest
import torch
from gaussian_flow import MU, SDES, gaussian_flow, gaussian_score
from scipy import integrate

import scoresde
from scoresde import VESDE, VPSDE, SubVPSDE
from scoresde.sampling.ipndm import ADAMS_BASHFORTH
from scoresde.sampling.multistep import (
    exponential_moments,
    lagrange_weights,
    polynomial_moments,
    step_orders,
)
from scoresde.sde import batch_broadcast

F64 = torch.float64
SOLVERS = ("dpm_solver", "unipc", "ipndm")
S = 0.5  # the data's std in the convergence tests


def time_at_scaled_sigma(sde, scaled_sigma):
    """The time where sigma / alpha = scaled_sigma (a float or a float64 tensor)."""
    s = torch.as_tensor(scaled_sigma, dtype=F64).reshape(-1)
    return sde.time_at_log_snr(-2 * torch.log(s))


def flow_error(sde, sampler, times, s=S, **options):
    """Max abs error at times[-1] of ``sampler`` on data N(MU, s^2 I) against the exact flow map,
    from 256 prior draws taken as the state at times[0]."""
    shape = (256, 2)
    out = scoresde.sample(
        sde,
        gaussian_score(sde, MU, s),
        shape,
        sampler=sampler,
        times=times,
        denoise=False,
        dtype=F64,
        generator=torch.Generator().manual_seed(2),
        **options,
    )
    start = sde.prior_sampling(shape, torch.Generator().manual_seed(2)).to(F64)
    exact = gaussian_flow(sde, MU, s, start, float(times[0]), float(times[-1]))
    return (out - exact).abs().max().item()


# -- exactness ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", SDES)
@pytest.mark.parametrize("sampler", SOLVERS)
def test_exact_for_a_point_mass(sampler, kind):
    """With s = 0 the data prediction (and the noise prediction, iPNDM's slope) is constant along
    the flow, which every rule here integrates exactly: round-off error (1e-9 on values of order 1),
    on a 6-step grid uniform in time, at the default (highest) orders with their warm-up and
    lower-order final steps."""
    sde = SDES[kind]()
    times = scoresde.time_grid(sde, 6, eps=0.05)
    assert flow_error(sde, sampler, times, s=0.0) < 1e-9


# -- convergence orders -------------------------------------------------------------------------
# (sampler, options, order, sigma/alpha at the last time, steps, grid kind). Each row's grid runs
# from T down to the time where sigma / alpha = the given end, which is chosen where the leading
# error term dominates (for Gaussian data the leading term of an odd order partly integrates to
# boundary terms, so some ends show an order too many before the asymptotics). Log-SNR grids have
# equal steps in l; Karras grids unequal ones, which the variable-step weights must follow.
ORDERS = [
    ("dpm_solver", {"order": 1}, 1, 0.25, (16, 32, 64), "log_snr"),
    ("dpm_solver", {"order": 2}, 2, 0.1, (32, 64, 128), "log_snr"),
    ("dpm_solver", {"order": 3}, 3, 0.25, (16, 32, 64), "log_snr"),
    ("dpm_solver", {"order": 3}, 3, 0.25, (32, 64, 128), "karras"),
    ("unipc", {"order": 1}, 2, 0.25, (16, 32, 64), "log_snr"),  # UniC raises the order by one
    ("unipc", {"order": 2}, 3, 0.25, (32, 64, 128), "log_snr"),
    ("unipc", {"order": 2}, 3, 0.25, (64, 128, 256), "karras"),
    ("unipc", {"order": 3}, 4, 0.5, (32, 64, 128), "log_snr"),
    ("ipndm", {"order": 1}, 1, 0.25, (16, 32, 64), "log_snr"),
    ("ipndm", {"order": 2}, 2, 0.25, (16, 32, 64), "log_snr"),
    ("ipndm", {"order": 4}, 2, 0.25, (32, 64, 128), "log_snr"),  # fixed coefficients, unequal steps
]


@pytest.mark.parametrize("kind", SDES)
@pytest.mark.parametrize(
    ("sampler", "options", "order", "end", "steps", "grid"),
    ORDERS,
    ids=[f"{r[0]}-{r[1]['order']}-{r[5]}" for r in ORDERS],
)
def test_convergence_order(sampler, options, order, end, steps, grid, kind):
    """The slope of log max error against log steps, over a factor 4 in steps, is within
    [-order - 0.75, -order + 0.25]: pre-asymptotic terms make the slopes measured on these grids
    0.05 to 0.2 steeper, and up to 0.5 where the leading term nearly cancels (order 3 on the
    linear SDE), while a wrong coefficient in any rule costs a whole order."""
    sde = SDES[kind]()
    eps = float(time_at_scaled_sigma(sde, end))
    options = {**options, "lower_order_final": False} if sampler != "ipndm" else options
    errors = [
        flow_error(sde, sampler, scoresde.time_grid(sde, n, kind=grid, eps=eps), **options)
        for n in steps
    ]
    slope = math.log(errors[-1] / errors[0]) / math.log(steps[-1] / steps[0])
    assert -order - 0.75 < slope < -order + 0.25, (errors, slope)


def test_unipc_shortcuts_are_the_documented_steps():
    """UniPC-2 on two uneven steps is UniP-1 (DDIM), UniC-1 (``K_0 (m_0 + m_t) / 2``) with m_t at
    the prediction, then UniP-2 with its step ratio h / h_1 = 4 (``K_0 (m_0 + (h / h_1) (m_0 -
    m_1) / 2)``), uncorrected as the last step: equal to the hand-computed steps to 1e-12."""
    sde = VPSDE()
    score_fn = scoresde.GaussianMixture.ring().score_fn(sde)
    l_T = sde.log_snr(torch.tensor([1.0], dtype=F64)) / 2  # l = log(alpha / sigma)
    times = time_at_scaled_sigma(sde, torch.exp(-(l_T + torch.tensor([0.0, 1.0, 5.0]))))
    times[0] = 1.0
    alpha, sigma = sde.kernel_coefficients(times)
    lam = torch.log(alpha / sigma)
    h0, h1 = (lam[1] - lam[0]).item(), (lam[2] - lam[1]).item()
    assert h1 / h0 == pytest.approx(4.0)

    def m(x, i):
        return (x + sigma[i] ** 2 * score_fn(x, times[i].expand(x.shape[0]))) / alpha[i]

    x0 = sde.prior_sampling((64, 2), torch.Generator().manual_seed(8)).to(F64)
    m0 = m(x0, 0)
    k0 = -math.expm1(-h0)
    predicted = sigma[1] / sigma[0] * x0 + alpha[1] * k0 * m0
    m1 = m(predicted, 1)
    x1 = sigma[1] / sigma[0] * x0 + alpha[1] * k0 * (m0 + m1) / 2
    k1 = -math.expm1(-h1)
    x2 = sigma[2] / sigma[1] * x1 + alpha[2] * k1 * (m1 + h1 / h0 * (m1 - m0) / 2)
    out = scoresde.sample(
        sde,
        score_fn,
        (64, 2),
        sampler="unipc",
        order=2,
        lower_order_final=False,
        times=times,
        denoise=False,
        dtype=F64,
        generator=torch.Generator().manual_seed(8),
    )
    torch.testing.assert_close(out, x2, rtol=0, atol=1e-12)


def test_ipndm_coefficients_are_adams_bashforth_on_equal_steps():
    """Each row of iPNDM's table integrates the polynomial through the last p slopes over one step,
    on equal steps: the Lagrange weights on the nodes 0, -1, ..., 1 - p (to 1e-15)."""
    for p, row in enumerate(ADAMS_BASHFORTH, start=1):
        nodes = [-float(j) for j in range(p)]
        expected = lagrange_weights(nodes, polynomial_moments(1.0, p))
        assert row == pytest.approx(expected, abs=1e-15), p


@pytest.mark.parametrize(
    ("weight", "moments"),
    [
        (lambda u, h: 1.0, lambda h, k: polynomial_moments(h, k)),
        (lambda u, h: math.exp(-(h - u)), lambda h, k: exponential_moments(h, k)),
        (lambda u, h: 2 * math.exp(-2 * (h - u)), lambda h, k: exponential_moments(h, k, 2)),
    ],
    ids=["adams", "exponential", "exponential-sde"],
)
def test_weights_integrate_the_interpolating_polynomial(weight, moments):
    """sum_j W_j q(u_j) = int_0^h w(u) q(u) du for every polynomial q of degree below the number of
    nodes (scipy's quadrature to 1e-12), on uneven nodes, including a corrector's node at u = h."""
    h = 0.7
    for nodes in ([0.0], [0.0, -0.4], [0.0, -0.4, -1.1], [h, 0.0, -0.4, -1.1]):
        weights = lagrange_weights(nodes, moments(h, len(nodes)))
        for degree in range(len(nodes)):
            exact, _ = integrate.quad(lambda u, d=degree: weight(u, h) * u**d, 0, h, epsabs=1e-13)
            rule = sum(w * u**degree for w, u in zip(weights, nodes, strict=True))
            assert rule == pytest.approx(exact, abs=1e-12), (nodes, degree)


def test_the_exponential_moments_stay_accurate_for_short_steps():
    """M_k = int_0^h e^{-(h - u)} u^k du = k! sum_j (-1)^j h^{k+1+j} / (k+1+j)! (the series, to
    1e-30 here): at h = 1e-4 the recursion's cancellation leaves an absolute error below 1e-19
    (~ k! 1e-16 h), though M_2 = 3e-13 is computed as a difference of terms of size 1e-8."""
    h = 1e-4
    for k, moment in enumerate(exponential_moments(h, 3)):
        series = sum(
            (-1) ** j * math.factorial(k) * h ** (k + 1 + j) / math.factorial(k + 1 + j)
            for j in range(6)
        )
        assert abs(moment - series) < 1e-19, k


def test_step_orders_warm_up_and_lower_the_final_steps():
    assert step_orders(5, 3, True) == [1, 2, 3, 2, 1]
    assert step_orders(5, 3, False) == [1, 2, 3, 3, 3]
    assert step_orders(20, 2, True) == [1] + [2] * 18 + [1]
    assert step_orders(2, 4, True) == [1, 1]


# -- cost, times, shapes, dtypes ----------------------------------------------------------------
class RecordingScore:
    """The ring's exact score, recording the time of every call."""

    def __init__(self, sde):
        self.score = scoresde.GaussianMixture.ring().score_fn(sde)
        self.times = []

    def __call__(self, x, t):
        self.times.append(t.clone())
        return self.score(x, t)


@pytest.mark.parametrize("denoise", [False, True])
@pytest.mark.parametrize("sampler", SOLVERS)
def test_one_evaluation_per_step_at_the_grid_times(sampler, denoise):
    """n steps cost n score evaluations (n + 1 with denoising), at t_0, ..., t_{n-1} (then t_n),
    each the grid time cast to the samples' dtype for the whole batch: no time outside the grid."""
    sde = VPSDE()
    n = 7
    score = RecordingScore(sde)
    result = scoresde.sample(
        sde,
        score,
        (16, 2),
        sampler=sampler,
        num_steps=n,
        denoise=denoise,
        dtype=torch.float32,
        return_info=True,
        generator=torch.Generator().manual_seed(0),
    )
    assert result.nfe == len(score.times) == n + denoise
    grid = result.grid.to(torch.float32)
    for i, t in enumerate(score.times):
        assert torch.equal(t, grid[i].expand(16)), i


@pytest.mark.parametrize("sampler", SOLVERS)
def test_float32_follows_float64(sampler):
    """The ring (radius 4) under VE (sigma_max 50, eps 1e-5: states up to ~150, steps spanning 8.5
    in log sigma) with 12 steps: float32 samples agree with float64 ones to 5e-5 (measured 4e-6
    to 6e-6, some 30 float32 ulps of the samples' size, accumulated over the steps)."""
    sde = VESDE()
    ring = scoresde.GaussianMixture.ring()
    out = {
        dtype: scoresde.sample(
            sde,
            ring.score_fn(sde),
            (500, 2),
            sampler=sampler,
            num_steps=12,
            dtype=dtype,
            generator=torch.Generator().manual_seed(4),
        )
        for dtype in (torch.float32, F64)
    }
    assert out[torch.float32].dtype == torch.float32
    assert (out[torch.float32].to(F64) - out[F64]).abs().max().item() < 5e-5


def gaussian_score_any_shape(sde, mu, s):
    """The exact score of data N(mu, s^2 I) for x of any shape (B, *D), mu of shape D."""

    def score_fn(x, t):
        alpha, sigma = (batch_broadcast(c.to(x.dtype), x) for c in sde.kernel_coefficients(t))
        return -(x - alpha * mu.to(x.dtype)) / (alpha**2 * s**2 + sigma**2)

    return score_fn


@pytest.mark.parametrize("sampler", SOLVERS)
def test_images_and_vectors_follow_the_same_path(sampler):
    """Samples of shape (B, 3, 4, 4) equal those of shape (B, 48) from the same draws (the rules
    are elementwise in the data dimensions) to 1e-12."""
    sde = SubVPSDE()
    mu = torch.linspace(-1, 1, 48, dtype=F64)
    runs = [
        scoresde.sample(
            sde,
            gaussian_score_any_shape(sde, mu.reshape(shape[1:]), 0.3),
            shape,
            sampler=sampler,
            num_steps=8,
            dtype=F64,
            generator=torch.Generator().manual_seed(6),
        )
        for shape in ((5, 48), (5, 3, 4, 4))
    ]
    torch.testing.assert_close(runs[1].reshape(5, 48), runs[0], rtol=0, atol=1e-12)


# -- bad options --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sampler", "options", "message"),
    [
        ("dpm_solver", {"order": 4}, "order must be an integer in [1, 3]; got 4"),
        ("dpm_solver", {"order": 0}, "order must be an integer in [1, 3]; got 0"),
        ("dpm_solver", {"order": 2.0}, "order must be an integer in [1, 3]; got 2.0"),
        ("unipc", {"order": 4}, "order must be an integer in [1, 3]; got 4"),
        ("ipndm", {"order": 5}, "order must be an integer in [1, 4]; got 5"),
        ("dpm_solver", {"variant": "ddim"}, "variant must be one of 'ode', 'sde'; got 'ddim'"),
        ("dpm_solver", {"lower_order_final": 1}, "lower_order_final must be True or False; got 1"),
        ("unipc", {"lower_order_final": "yes"}, "lower_order_final must be True or False"),
        ("ipndm", {"lower_order_final": True}, "sampler 'ipndm' does not use 'lower_order_final'"),
        ("unipc", {"variant": "sde"}, "sampler 'unipc' does not use 'variant'"),
    ],
)
def test_bad_options_are_refused_by_name(sampler, options, message):
    """Refused before any score evaluation."""
    calls = []
    with pytest.raises(ValueError, match=re.escape(message)):
        scoresde.sample(
            VPSDE(), lambda x, t: calls.append(t) or -x, (2, 2), sampler=sampler, **options
        )
    assert calls == []
