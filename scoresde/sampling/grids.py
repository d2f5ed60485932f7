"""Time grids: the decreasing times ``T = t_0 > t_1 > ... > t_n = eps`` a sampler steps along.

A grid is data, a 1-D tensor: every sampler and :func:`scoresde.log_likelihood` take ``times=``, and
:func:`time_grid` makes the usual ones for any SDE whose kernel is ``N(alpha(t) x0, sigma(t)^2 I)``
(every SDE with a linear drift), through :meth:`~scoresde.SDE.kernel_coefficients` alone:

=============  ====================================================================================
kind           ``n + 1`` times from ``T`` down to ``eps``, ``u = i / n``
=============  ====================================================================================
``uniform``    ``t_i = T + u (eps - T)``: uniform in time (the reference implementation's grid)
``quadratic``  ``t_i = eps + (T - eps) (1 - u)^2``: dense near ``eps``
``log_snr``    uniform in ``lambda(t) = log(alpha^2 / sigma^2)`` (DPM-Solver, Lu et al. 2022)
``karras``     ``s_i = (s_max^(1/rho) + u (s_min^(1/rho) - s_max^(1/rho)))^rho`` in
               ``s = sigma / alpha`` (EDM, Karras et al. 2022, eq. 5; ``rho = 7``)
=============  ====================================================================================

The last two are uniform in a function of ``lambda``; their times come from inverting ``lambda(t)``
(:meth:`~scoresde.SDE.time_at_log_snr`, by bisection unless an SDE has a closed form). Grids are
float64: solvers compute their coefficients from them at full precision and evaluate the score at
the times cast to the samples' dtype.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scoresde.sde import SDE
from scoresde.validation import check_choice, check_int, check_number, check_positive, refusal

__all__ = ["GRIDS", "time_grid", "grid_end", "check_times"]

GRIDS = ("uniform", "quadratic", "log_snr", "karras")
"""The kinds of :func:`time_grid`."""


def time_grid(
    sde: SDE,
    num_steps: int,
    *,
    kind: str = "uniform",
    eps: float | None = None,
    rho: float = 7.0,
    sigma_max: float | None = None,
    sigma_min: float | None = None,
) -> Tensor:
    """``num_steps + 1`` decreasing times from ``sde.T`` to ``eps``, float64, on the CPU.

    The ends can also be given as noise levels ``s = sigma(t) / alpha(t)`` (EDM's ``sigma_max`` and
    ``sigma_min``): ``sigma_min`` sets ``eps`` to its time; ``sigma_max`` makes the first step go
    from ``T`` straight down to its time, and the other ``num_steps - 1`` steps of the grid's kind
    run from there. Where ``s`` is large the data prediction hardly changes, and a solver's steps
    are better spent below it.

    Arguments:
        sde: the forward SDE.
        num_steps: the number of steps, >= 1 (>= 2 with ``sigma_max``).
        kind: one of :data:`GRIDS` (table above).
        eps: the last time, in ``(0, T)``; default ``sde.sampling_eps``.
        rho: the exponent of the ``karras`` grid, > 0.
        sigma_max: the noise level ``sigma / alpha`` of the second time, below that at ``T``.
        sigma_min: the noise level of the last time, instead of ``eps``.

    Returns:
        the grid, shape ``(num_steps + 1,)``, with ``times[0] = T`` and ``times[-1] = eps`` exactly.
    """
    n = check_int("num_steps", num_steps, minimum=1 if sigma_max is None else 2)
    check_choice("kind", kind, GRIDS)
    check_positive("rho", rho)
    T = float(sde.T)
    eps = grid_end(sde, eps=eps, sigma_min=sigma_min)
    if sigma_max is None:
        times = _between(sde, T, eps, n, kind, rho)
    else:
        s_T = float(torch.exp(-sde.log_snr(torch.tensor([T], dtype=torch.float64)) / 2))
        s_eps = float(torch.exp(-sde.log_snr(torch.tensor([eps], dtype=torch.float64)) / 2))
        check_number("sigma_max", sigma_max, s_eps, s_T, low_open=True, high_open=True)
        rest = _between(sde, _time_at_noise(sde, sigma_max), eps, n - 1, kind, rho)
        times = torch.cat([torch.tensor([T], dtype=torch.float64), rest])
    return check_times(sde, times)


def grid_end(sde: SDE, *, eps: float | None = None, sigma_min: float | None = None) -> float:
    """The last time of a grid: ``eps`` (default ``sde.sampling_eps``), or the time at which
    ``sigma / alpha = sigma_min``; one of the two at most. A time in ``(0, T)``."""
    if sigma_min is not None:
        if eps is not None:
            raise ValueError("give eps or sigma_min (the same end as a time or a noise level)")
        eps = _time_at_noise(sde, check_positive("sigma_min", sigma_min))
    eps = sde.sampling_eps if eps is None else eps
    return check_number("eps", eps, 0, float(sde.T), low_open=True, high_open=True)


def _time_at_noise(sde: SDE, s: float) -> float:
    """The time at which ``sigma / alpha = s``."""
    lam = torch.tensor([-2 * math.log(s)], dtype=torch.float64)
    return float(sde.time_at_log_snr(lam))


def _between(sde: SDE, start: float, end: float, n: int, kind: str, rho: float) -> Tensor:
    """``n + 1`` times of the grid ``kind`` from ``start`` down to ``end``, both exact."""
    u = torch.linspace(0.0, 1.0, n + 1, dtype=torch.float64)
    if kind == "uniform":
        times = start + u * (end - start)
    elif kind == "quadratic":
        times = end + (start - end) * (1 - u) ** 2
    else:
        ends = sde.log_snr(torch.tensor([start, end], dtype=torch.float64))
        if not bool(ends.isfinite().all()) or not ends[0] < ends[1]:
            raise ValueError(
                f"a {kind!r} grid needs lambda(t) = log(alpha^2 / sigma^2) finite and decreasing "
                f"on [eps, T]; {sde!r} has lambda = {ends[0].item():.4g} at t = {start} and "
                f"{ends[1].item():.4g} at t = {end}"
            )
        if kind == "log_snr":
            lam = ends[0] + u * (ends[1] - ends[0])
        else:  # karras, in sigma~ = sigma / alpha = exp(-lambda / 2)
            s_max, s_min = torch.exp(-ends / 2) ** (1 / rho)
            lam = -2 * rho * torch.log(s_max + u * (s_min - s_max))
        times = sde.time_at_log_snr(lam)
    times[0], times[-1] = start, end
    return times


def check_times(sde: SDE, times: Tensor, name: str = "times") -> Tensor:
    """``times`` as float64 if it is a grid a sampler can step along, else ``ValueError``.

    A grid is a 1-D tensor of at least 2 finite, strictly decreasing times inside ``(0, T]``.
    """
    T = float(sde.T)
    if not isinstance(times, Tensor) or times.ndim != 1 or times.shape[0] < 2:
        got = tuple(times.shape) if isinstance(times, Tensor) else type(times).__name__
        raise ValueError(refusal(name, "a 1-D tensor of at least 2 times", got))
    t = times.detach().to(torch.float64)
    if not bool(t.isfinite().all()):
        raise ValueError(refusal(name, "finite", t[~t.isfinite()][0].item()))
    steps = t.diff()
    if not bool((steps < 0).all()):
        i = int(torch.nonzero(steps >= 0)[0])
        raise ValueError(
            f"{name} must be strictly decreasing; got {t[i].item()!r} then {t[i + 1].item()!r} "
            f"at positions {i} and {i + 1}"
        )
    if not (0 < t[-1].item() and t[0].item() <= T):
        raise ValueError(
            f"{name} must lie inside (0, T] = (0, {T}]; got times from {t[0].item()!r} down to "
            f"{t[-1].item()!r}"
        )
    return t
