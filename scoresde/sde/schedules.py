"""Noise schedules ``beta(t)`` of the variance-preserving family, as objects.

A schedule gives ``beta(t)``, its integral ``B(t) = int_0^t beta(s) ds`` (the VP kernel is
``alpha(t) = exp(-B(t) / 2)``, ``sigma(t)^2 = 1 - alpha(t)^2``) and the ``N`` betas of its DDPM
chain. :class:`~scoresde.VPSDE` and :class:`~scoresde.SubVPSDE` take one; a new schedule is a
subclass of :class:`BetaSchedule`.
"""

from __future__ import annotations

import abc
import math

import torch
from torch import Tensor

from scoresde.registry import Registry
from scoresde.validation import check_positive, refusal

__all__ = ["BetaSchedule", "LinearSchedule", "CosineSchedule", "SCHEDULES"]


class BetaSchedule(abc.ABC):
    """``beta(t)`` on ``[0, 1]`` and what the VP kernel and the DDPM chain need of it."""

    @abc.abstractmethod
    def beta(self, t: Tensor) -> Tensor:
        """``beta(t)``, shape of ``t``."""

    @abc.abstractmethod
    def integrated(self, t: Tensor) -> Tensor:
        """``B(t) = int_0^t beta(s) ds``, shape of ``t``."""

    @abc.abstractmethod
    def discrete_betas(self, N: int) -> Tensor:
        """The ``N`` betas of the DDPM chain, float32, shape ``(N,)``."""


class LinearSchedule(BetaSchedule):
    """``beta(t) = beta_min + t (beta_max - beta_min)``, ``B(t) = beta_min t + (beta_max -
    beta_min) t^2 / 2`` (Song et al., 2021). DDPM betas ``linspace(beta_min / N, beta_max / N,
    N)``, as the reference implementation.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min = check_positive("beta_min", beta_min)
        self.beta_max = check_positive("beta_max", beta_max)
        if not self.beta_min < self.beta_max:
            raise ValueError(refusal("beta_max", f"> beta_min = {beta_min!r}", beta_max))

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integrated(self, t: Tensor) -> Tensor:
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def discrete_betas(self, N: int) -> Tensor:
        return torch.linspace(self.beta_min / N, self.beta_max / N, N, dtype=torch.float64).float()

    def __repr__(self) -> str:
        return f"LinearSchedule(beta_min={self.beta_min}, beta_max={self.beta_max})"


class CosineSchedule(BetaSchedule):
    """Nichol & Dhariwal (2021): ``alpha(t)^2 = cos^2(u(t)) / cos^2(u(0))``, ``u(t) = pi/2 (t + s)
    / (1 + s)``, ``s = 0.008``, i.e. ``beta(t) = pi / (1 + s) tan(u(t))``.

    That ``beta`` diverges at ``t = 1``; as Nichol & Dhariwal clip it, it is clipped here at
    ``beta_max`` (past the time ``t_c`` where ``beta(t_c) = beta_max``, :attr:`clip_time`), which
    keeps ``B(t)`` in closed form: ``B(t) = B(t_c) + beta_max (t - t_c)`` for ``t > t_c``. DDPM
    betas ``min(1 - alpha_bar(t_{i+1}) / alpha_bar(t_i), 0.999)`` on the grid ``t_i = i / N``.
    """

    S = 0.008

    def __init__(self, beta_max: float = 20.0):
        self.beta_max = check_positive("beta_max", beta_max)
        self._a = math.pi / (2 * (1 + self.S))
        self._u0 = self._a * self.S
        u_c = math.atan(self.beta_max / (2 * self._a))  # beta(t_c) = 2 a tan(u(t_c)) = beta_max
        # beta(0) > beta_max (a tiny beta_max) clips beta everywhere: t_c = 0.
        self.clip_time = min(max((u_c - self._u0) / self._a, 0.0), 1.0)
        """``t_c``: ``beta`` is clipped at ``beta_max`` past it (its derivative jumps there)."""

    def beta(self, t: Tensor) -> Tensor:
        u = self._u0 + self._a * t
        tangent = 2 * self._a * torch.tan(u.clamp(max=math.pi / 2 - 1e-6))
        return torch.where(t < self.clip_time, tangent, self.beta_max)

    def integrated(self, t: Tensor) -> Tensor:
        tc = torch.clamp(t, max=self.clip_time)
        # B = -2 log(cos(u0 + a t) / cos(u0)), with the ratio's distance from 1 written as
        # -2 sin(u0 + a t / 2) sin(a t / 2) / cos(u0) so that B keeps its relative precision as
        # t -> 0 (1 - cos ratio cancels catastrophically: 4% error in float32 at t = 1e-5).
        half = 0.5 * self._a * tc
        ratio_m1 = -2 * torch.sin(self._u0 + half) * torch.sin(half) / math.cos(self._u0)
        return -2 * torch.log1p(ratio_m1) + self.beta_max * (t - tc)

    def discrete_betas(self, N: int) -> Tensor:
        t = torch.linspace(0.0, 1.0, N + 1, dtype=torch.float64)
        log_abar = -self.integrated(t)
        return (1 - torch.exp(log_abar[1:] - log_abar[:-1])).clamp(max=0.999).float()

    def __repr__(self) -> str:
        return f"CosineSchedule(beta_max={self.beta_max})"


SCHEDULES: Registry = Registry(
    "schedule",
    {
        "linear": lambda beta_min, beta_max: LinearSchedule(beta_min, beta_max),
        "cosine": lambda beta_min, beta_max: CosineSchedule(beta_max),
    },
)
"""Schedule name -> ``constructor(beta_min, beta_max)`` (the cosine one ignores ``beta_min``)."""
