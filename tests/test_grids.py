"""Time grids against their definitions, for every kind of SDE with a linear drift."""

import math

import pytest
import torch
from user_sde import TimeVaryingOU

from scoresde import VESDE, VPSDE, LinearSDE, SubVPSDE, time_grid
from scoresde.sampling import GRIDS, check_times

F64 = torch.float64
SDES = {
    "vp": VPSDE(),
    "vp-cosine": VPSDE(schedule="cosine"),
    "subvp": SubVPSDE(),
    "ve": VESDE(),
    "linear": LinearSDE(lambda t: -(1 + t), lambda t: torch.sqrt(2 * (1 + t))),
    "user": TimeVaryingOU(),
}


def log_snr(sde, t: torch.Tensor) -> torch.Tensor:
    alpha, sigma = sde.kernel_coefficients(t.to(F64))
    return 2 * (alpha.log() - sigma.log())


@pytest.mark.parametrize("kind", GRIDS)
@pytest.mark.parametrize("name", SDES)
def test_grids_run_from_T_to_eps_and_decrease(name, kind):
    sde = SDES[name]
    times = time_grid(sde, 12, kind=kind, eps=0.01)
    assert times.dtype == F64 and times.shape == (13,)
    assert times[0].item() == sde.T and times[-1].item() == 0.01
    assert bool((times.diff() < 0).all())


@pytest.mark.parametrize("name", SDES)
def test_each_kind_is_uniform_in_its_variable(name):
    """uniform: in t; quadratic: in sqrt(t - eps); log_snr: in lambda(t); karras: in
    (sigma / alpha)^(1/rho) = exp(-lambda / (2 rho)). Uniform spacing to 1e-9 of the span: the
    bisection that inverts lambda(t) reaches float64's resolution in t."""
    sde, eps, n = SDES[name], 0.01, 10
    variables = {
        "uniform": lambda t: t,
        "quadratic": lambda t: (t - eps).sqrt(),
        "log_snr": lambda t: log_snr(sde, t),
        "karras": lambda t: torch.exp(-log_snr(sde, t) / (2 * 7.0)),
    }
    for kind, variable in variables.items():
        u = variable(time_grid(sde, n, kind=kind, eps=eps))
        steps = u.diff()
        span = (u[-1] - u[0]).abs()
        torch.testing.assert_close(steps, steps.mean().expand(n), rtol=0, atol=1e-9 * span.item())


@pytest.mark.parametrize("name", SDES)
def test_inverse_log_snr_is_the_inverse(name):
    sde = SDES[name]
    t = torch.tensor([1e-4, 1e-3, 0.05, 0.3, 0.77, 1.0], dtype=F64)
    back = sde.time_at_log_snr(log_snr(sde, t))
    torch.testing.assert_close(back, t, rtol=1e-10, atol=1e-13)


def test_log_snr_of_the_vp_sde_is_its_closed_form():
    """lambda(t) = -log(exp(B(t)) - 1) with B(t) = 0.1 t + 9.95 t^2 (written out, not the
    library's)."""
    t = torch.tensor([1e-3, 0.2, 0.9], dtype=F64)
    B = 0.1 * t + 9.95 * t**2
    torch.testing.assert_close(VPSDE().log_snr(t), -torch.log(torch.expm1(B)), rtol=1e-12, atol=0)


def test_karras_grid_is_edm_in_sigma_for_the_ve_sde():
    """For VE (alpha = 1) the karras grid is EDM's eq. 5 in sigma itself, with rho = 7."""
    sde = VESDE(sigma_min=0.01, sigma_max=50.0)
    eps, n, rho = 1e-3, 8, 7.0
    times = time_grid(sde, n, kind="karras", eps=eps)
    s_max, s_min = 0.01 * 5000.0, 0.01 * 5000.0**eps
    i = torch.arange(n + 1, dtype=F64)
    edm = (s_max ** (1 / rho) + i / n * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    torch.testing.assert_close(0.01 * 5000.0**times, edm, rtol=1e-9, atol=0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_steps": 0}, "num_steps must be an integer >= 1; got 0"),
        ({"num_steps": 2.5}, "num_steps must be an integer >= 1; got 2.5"),
        ({"kind": "cubic"}, "kind must be one of 'uniform', 'quadratic', 'log_snr', 'karras'"),
        ({"eps": 0.0}, r"eps must be a number in \(0, 1.0\); got 0.0"),
        ({"eps": 1.0}, r"eps must be a number in \(0, 1.0\); got 1.0"),
        ({"rho": -1.0}, "rho must be a finite number > 0; got -1.0"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"num_steps": 5, **kwargs}
    with pytest.raises(ValueError, match=match):
        time_grid(VPSDE(), args.pop("num_steps"), **args)


@pytest.mark.parametrize(
    "times,match",
    [
        (torch.tensor([1.0]), "a 1-D tensor of at least 2 times"),
        (torch.tensor([[1.0, 0.5]]), "a 1-D tensor of at least 2 times"),
        ([1.0, 0.5], "a 1-D tensor of at least 2 times"),
        (torch.tensor([1.0, 0.5, 0.5]), "strictly decreasing; got 0.5 then 0.5"),
        (torch.tensor([0.1, 0.5]), "strictly decreasing"),
        (torch.tensor([1.0, math.nan]), "must be finite; got nan"),
        (torch.tensor([1.0, -0.1]), r"inside \(0, T\] = \(0, 1.0\]"),
        (torch.tensor([1.5, 0.1]), r"inside \(0, T\] = \(0, 1.0\]"),
    ],
)
def test_bad_grids_are_refused(times, match):
    with pytest.raises(ValueError, match=match):
        check_times(VPSDE(), times)


@pytest.mark.parametrize("kind", GRIDS)
@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "user"])
def test_noise_level_ends(name, kind):
    """sigma_max puts the second time where sigma / alpha = sigma_max and the rest of the grid
    below it; sigma_min puts the last time where sigma / alpha = sigma_min (1e-9 relative)."""
    sde = SDES[name]
    times = time_grid(sde, 6, kind=kind, sigma_max=5.0, sigma_min=0.05)
    s = torch.exp(-log_snr(sde, times) / 2)
    assert times[0].item() == sde.T and times.shape == (7,)
    assert s[1].item() == pytest.approx(5.0, rel=1e-9)
    assert s[-1].item() == pytest.approx(0.05, rel=1e-9)
    rest = time_grid(sde, 5, kind=kind, eps=times[-1].item())  # the same kind below sigma_max
    assert bool((times[1:].diff() < 0).all()) and not torch.equal(times[1:], rest)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"sigma_max": 1e6}, r"sigma_max must be a number in \(0.0104.*, 152.1.*; got 1000000.0"),
        ({"sigma_max": 0.01}, r"sigma_max must be a number in \(0.0104.*; got 0.01"),
        ({"sigma_min": -1.0}, "sigma_min must be a finite number > 0; got -1.0"),
        ({"sigma_min": 0.1, "eps": 0.01}, "give eps or sigma_min"),
        ({"sigma_max": 5.0, "num_steps": 1}, "num_steps must be an integer >= 2; got 1"),
    ],
)
def test_bad_noise_level_ends(kwargs, match):
    args = {"num_steps": 5, **kwargs}
    with pytest.raises(ValueError, match=match):
        time_grid(VPSDE(), args.pop("num_steps"), **args)
