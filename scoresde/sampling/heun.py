"""EDM's stochastic Heun sampler (Karras et al. 2022, Algorithm 2) for any linear SDE.

For a kernel ``N(alpha(t) x_0, sigma(t)^2 I)`` the scaled variable ``y = x / alpha`` is the data
plus noise of level ``s = sigma / alpha`` (EDM's ``sigma``; here ``scaled_sigma``), and the
probability-flow ODE in ``y`` and ``s`` is EDM's (their eq. 4)::

    dy/ds = (y - D(y; s)) / s = -sigma(t) grad_x log p_t(alpha(t) y),     s = s(t),

with ``D`` the data prediction ``E[x_0 | x_t]`` (the right-hand form avoids the cancellation in
``y - D`` at small ``s``). On a decreasing grid ``s_0 > s_1 > ... > s_n`` (default the ``karras``
grid, EDM's eq. 5 with ``rho = 7``), step ``i`` is::

    gamma_i = min(S_churn / n, sqrt(2) - 1) if S_tmin <= s_i <= S_tmax else 0
    s_hat   = min(s_i (1 + gamma_i), s(T)),   t_hat with s(t_hat) = s_hat   (never after T)
    y_hat   = y_i + sqrt(s_hat^2 - s_i^2) S_noise z,                         z ~ N(0, I)
    d       = dy/ds at (y_hat, t_hat)
    y'      = y_hat + (s_{i+1} - s_hat) d                                     (Euler)
    y_{i+1} = y_hat + (s_{i+1} - s_hat) (d + d') / 2,   d' = dy/ds at (y', t_{i+1})   (Heun)

Churn adds noise that raises the noise level from ``s_i`` to ``s_hat``, then integrates the ODE
down from there: a Langevin-like correction that ``S_churn = 0`` (the default) turns off, leaving
the deterministic second-order Heun method. ``t_hat`` inverts ``lambda(t) = -2 log s(t)`` with
:meth:`~scoresde.SDE.time_at_log_snr`; ``gamma_i`` is capped so that ``t_hat <= T`` (at the first
step of a grid that starts at ``T`` there is no churn).

The grid ends at ``eps > 0``, so every step, the last included, takes Heun's correction (EDM's
grid ends at ``s = 0``, where their last step is Euler's): ``2 n`` score evaluations for ``n``
steps. EDM's last Euler step to ``s = 0`` is exactly Tweedie's denoising ``D(y_n)`` of
:func:`scoresde.sample` (``denoise=True``, one more evaluation), so ``n`` steps here with
``denoise=True`` are EDM's sampler with ``n + 1`` steps, at ``2 n + 1`` evaluations.

Defaults: 18 steps (EDM's choice for CIFAR-10) on the ``karras`` grid with ``rho = 7``, no churn:
``rho = 7`` beat 2, 3 and 5 at every step count measured, and churn only added error with an exact
score below about 100 evaluations (it is for imperfect denoisers); see ``docs/benchmarks.md``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scoresde.sampling.base import GridCoefficients, StepHook, expand_time, register_sampler
from scoresde.sampling.noise import GaussianNoise
from scoresde.sde import SDE, ScoreFn
from scoresde.validation import Rule, check_number, number

__all__ = ["heun"]

_MAX_GAMMA = math.sqrt(2) - 1
_LEVEL_OR_INF = Rule(lambda v: v == math.inf or number(0).accepts(v), "a number >= 0 or math.inf")


@register_sampler("heun", default_steps=18, default_grid="karras")
def heun(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    times: Tensor,
    *,
    noise: GaussianNoise,
    on_step: StepHook,
    churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
) -> Tensor:
    """EDM's Heun sampler along ``times`` (two score evaluations per step).

    Options (EDM's ``S_churn``, ``S_tmin``, ``S_tmax``, ``S_noise``; the levels are in ``s =
    sigma / alpha``):
        churn: the total amount of churn, >= 0; each step's ``gamma = min(churn / n, sqrt(2) -
            1)`` with ``n`` the number of steps. 0 (default): deterministic.
        s_tmin, s_tmax: churn only at levels ``s_tmin <= s_i <= s_tmax``.
        s_noise: the scale of the churn noise, >= 0 (EDM's 1.007 offsets a denoiser's bias).
    """
    churn = check_number("churn", churn, 0)
    s_tmin = check_number("s_tmin", s_tmin, 0)
    s_tmax = float(_LEVEL_OR_INF.check("s_tmax", s_tmax))
    s_noise = check_number("s_noise", s_noise, 0)
    k = GridCoefficients.on(sde, times, x.dtype)
    n = len(times) - 1
    gamma = torch.where(
        (k.scaled_sigma[:-1] >= s_tmin) & (k.scaled_sigma[:-1] <= s_tmax),
        min(churn / n, _MAX_GAMMA),
        0.0,
    )
    hat = _raised(sde, times[:-1], k.scaled_sigma[:-1], 1 + gamma, x.dtype)
    churned = (hat.t.to(times.dtype) > times[:-1]).tolist()
    spread = (s_noise * (hat.scaled_sigma**2 - k.scaled_sigma[:-1] ** 2).clamp(min=0).sqrt()).to(
        x.dtype
    )
    h = (k.scaled_sigma[1:] - hat.scaled_sigma).to(x.dtype)
    alpha, sigma = k.alpha.to(x.dtype), k.sigma.to(x.dtype)
    alpha_hat, sigma_hat = hat.alpha.to(x.dtype), hat.sigma.to(x.dtype)
    for i in range(n):
        y = x / alpha[i]
        if churned[i]:
            y = y.addcmul_(noise.like(y), spread[i])
        d = -sigma_hat[i] * score_fn(alpha_hat[i] * y, expand_time(hat.t[i], y))
        y_euler = y + h[i] * d
        d_next = -sigma[i + 1] * score_fn(alpha[i + 1] * y_euler, expand_time(k.t[i + 1], y))
        y = y + (0.5 * h[i]) * (d + d_next)
        x = on_step(i + 1, alpha[i + 1] * y)
    return x


def _raised(
    sde: SDE, times: Tensor, level: Tensor, factor: Tensor, dtype: torch.dtype
) -> GridCoefficients:
    """The kernel at the times ``t_hat`` whose level ``s = sigma / alpha`` is ``level * factor``
    capped at ``s(T)`` (float64); ``t_hat = times`` where that is not above ``level``."""
    T = torch.full((1,), float(sde.T), dtype=times.dtype, device=times.device)
    raised = torch.minimum(level * factor, GridCoefficients.on(sde, T, dtype).scaled_sigma)
    t_hat = sde.time_at_log_snr(-2 * raised.log()).clamp(max=float(sde.T))
    t_hat = torch.where(raised > level, torch.maximum(t_hat, times), times)
    return GridCoefficients.on(sde, t_hat, dtype)
