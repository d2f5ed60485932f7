"""The three SDEs of Song et al. (2021), in closed form, with the reference implementation's
defaults: variance preserving (:class:`VPSDE`), sub-VP (:class:`SubVPSDE`), variance exploding
(:class:`VESDE`). All have ``T = 1`` and a linear drift (:class:`LinearDriftSDE`)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scoresde.sde.discrete import DDPMChain, DiscreteChain, SMLDChain
from scoresde.sde.linear import LinearDriftSDE
from scoresde.sde.schedules import SCHEDULES, BetaSchedule, LinearSchedule
from scoresde.validation import check_positive, refusal

__all__ = ["VPSDE", "SubVPSDE", "VESDE"]

_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


class _UnitTime:
    """``T = 1``, the end time of the three SDEs."""

    @property
    def T(self) -> float:
        return 1.0


class _DiscreteModel:
    """An SDE with a discrete model ``self.chain`` (DDPM, SMLD): its kernel is the SDE's chain
    (:meth:`~scoresde.SDE.chain_coefficients`) and its step the SDE's :meth:`discretize`."""

    chain: DiscreteChain

    def chain_coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """The discrete model's kernel ``(a_i, s_i)`` at the step of each time."""
        return self.chain.coefficients(t)

    def discretize(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """The discrete model's forward step (the reference implementation's)."""
        self.check_time(t)
        return self.chain.discretize(x, t)


class _ScheduledDrift(_UnitTime, LinearDriftSDE):
    """The drift ``-1/2 beta(t) x`` of the VP family, ``beta`` from ``self.schedule``, so that
    ``alpha(t) = exp(-B(t) / 2)`` with ``B(t) = int_0^t beta``."""

    schedule: BetaSchedule

    def beta(self, t: Tensor) -> Tensor:
        """``beta(t)``, shape ``(B,)``."""
        return self.schedule.beta(t)

    def f(self, t: Tensor) -> Tensor:
        return -0.5 * self.schedule.beta(t)

    def log_mean_coeff(self, t: Tensor) -> Tensor:
        return -0.5 * self.schedule.integrated(t)


class VPSDE(_DiscreteModel, _ScheduledDrift):
    """Variance-preserving SDE ``dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw`` (DDPM in the limit).

    With ``B(t) = int_0^t beta``: ``alpha(t) = exp(-B(t)/2)``, ``sigma(t)^2 = 1 - alpha(t)^2``;
    prior ``N(0, I)``. The discrete model is DDPM with the schedule's ``N`` betas.

    Arguments:
        beta_min, beta_max: the linear schedule's ends; the cosine schedule clips ``beta`` at
            ``beta_max`` and ignores ``beta_min``.
        N: the number of DDPM steps; every DDPM beta must be below 1 (``N > beta_max`` for the
            linear schedule).
        schedule: ``"linear"``, ``"cosine"`` (:mod:`scoresde.sde.schedules`), or a
            :class:`~scoresde.sde.schedules.BetaSchedule`.
    """

    ancestral_variance = "transition"

    def __init__(
        self,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        N: int = 1000,
        schedule: str | BetaSchedule = "linear",
    ):
        super().__init__(N)
        if not isinstance(schedule, BetaSchedule):
            schedule = SCHEDULES.lookup(schedule)(beta_min, beta_max)
        self.schedule = schedule
        betas = schedule.discrete_betas(self.N)
        if not bool((betas < 1).all()):
            allowed = f"an integer > beta_max = {beta_max!r}, so that every DDPM beta_i < 1"
            raise ValueError(refusal("N", allowed, N))
        self.chain = DDPMChain(betas, self.T)
        # The reference implementation's names of the DDPM tables.
        self.discrete_betas, self.alphas = self.chain.discrete_betas, self.chain.alphas
        self.alphas_cumprod = self.chain.alphas_cumprod
        self.sqrt_alphas_cumprod = self.chain.sqrt_alphas_cumprod
        self.sqrt_1m_alphas_cumprod = self.chain.sqrt_1m_alphas_cumprod

    def g(self, t: Tensor) -> Tensor:
        return torch.sqrt(self.schedule.beta(t))

    def marginal_std(self, t: Tensor) -> Tensor:
        """``sqrt(1 - exp(-B(t)))``."""
        return torch.sqrt(-torch.expm1(-self.schedule.integrated(t)))

    def __repr__(self) -> str:
        return f"VPSDE(N={self.N}, schedule={self.schedule!r})"


class SubVPSDE(_ScheduledDrift):
    """Sub-VP SDE ``dx = -1/2 beta(t) x dt + sqrt(beta(t) (1 - exp(-2 B(t)))) dw``.

    Same mean as the VP SDE, ``alpha(t) = exp(-B(t)/2)``, with a variance bounded by the VP's:
    ``sigma(t) = 1 - exp(-B(t))``. Linear ``beta(t)``; prior ``N(0, I)``. It has no discrete model
    of its own: its chain is its continuous kernel and its :meth:`discretize` Euler–Maruyama.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000):
        super().__init__(N)
        self.schedule = LinearSchedule(beta_min, beta_max)

    def g(self, t: Tensor) -> Tensor:
        return torch.sqrt(self.schedule.beta(t) * -torch.expm1(-2 * self.schedule.integrated(t)))

    def marginal_std(self, t: Tensor) -> Tensor:
        """``1 - exp(-B(t))``."""
        return -torch.expm1(-self.schedule.integrated(t))

    def __repr__(self) -> str:
        return f"SubVPSDE(N={self.N}, schedule={self.schedule!r})"


class VESDE(_DiscreteModel, _UnitTime, LinearDriftSDE):
    """Variance-exploding SDE ``dx = sqrt(d sigma(t)^2 / dt) dw`` (SMLD / NCSN in the limit).

    ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``, so ``g(t) = sigma(t) sqrt(2 log(sigma_max
    / sigma_min))``. As in the reference, the kernel includes the initial noise ``sigma_min``:
    ``p_0t(x_t | x_0) = N(x_0, sigma(t)^2 I)``. The prior is ``N(0, sigma_max^2 I)``; samplers stop
    at ``eps = 1e-5`` by default. The discrete model is SMLD with the noise levels ``sigma(t_i)``,
    ``t_i = i / (N - 1)``.
    """

    sampling_eps = 1e-5

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, N: int = 1000):
        super().__init__(N)
        self.sigma_min = check_positive("sigma_min", sigma_min)
        self.sigma_max = check_positive("sigma_max", sigma_max)
        if not self.sigma_min < self.sigma_max:
            raise ValueError(refusal("sigma_max", f"> sigma_min = {sigma_min!r}", sigma_max))
        self.prior_std = self.sigma_max
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)
        if not self.sigma_max * self.sigma_max * 2 * self._log_ratio < _FLOAT32_MAX:
            allowed = "small enough that g(1)^2 = 2 sigma_max^2 log(sigma_max/sigma_min) is finite"
            raise ValueError(refusal("sigma_max", allowed, sigma_max))
        self.chain = SMLDChain(self.sigma_min, self.sigma_max, self.N, self.T)
        self.discrete_sigmas = self.chain.discrete_sigmas

    def sigma(self, t: Tensor) -> Tensor:
        """``sigma(t) = sigma_min (sigma_max / sigma_min)^t``."""
        return self.sigma_min * torch.exp(t * self._log_ratio)

    def f(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def g(self, t: Tensor) -> Tensor:
        return self.sigma(t) * math.sqrt(2 * self._log_ratio)

    def log_mean_coeff(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def marginal_std(self, t: Tensor) -> Tensor:
        return self.sigma(t)

    def __repr__(self) -> str:
        return f"VESDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, N={self.N})"
