"""The discrete Markov chains behind the VP and VE SDEs: DDPM and SMLD.

An ``N``-step chain ``x_0 -> x_1 -> ... -> x_{N-1}`` with Gaussian steps has a Gaussian kernel
``x_i | x_0 ~ N(a_i x_0, s_i^2 I)``:

* DDPM (Ho et al., 2020): ``x_i = sqrt(1 - beta_i) x_{i-1} + sqrt(beta_i) z``, so
  ``a_i = sqrt(abar_i)`` and ``s_i = sqrt(1 - abar_i)``, ``abar_i = prod_{j <= i} (1 - beta_j)``;
* SMLD (Song & Ermon, 2019): ``x_i = x_{i-1} + sqrt(sigma_i^2 - sigma_{i-1}^2) z``, so ``a_i = 1``
  and ``s_i = sigma_i``.

The chain sits on ``[0, T]`` with step ``i`` at time ``t_i = i T / (N - 1)``; a time ``t`` maps to
the step ``i = floor(t (N - 1) / T)`` (the reference implementation's map). Through
:meth:`coefficients` a sampler steps from any grid time to any earlier one with the chain's own
transition, which on the reference grid ``linspace(T, eps, N)`` is exactly the reference's chain.
"""

from __future__ import annotations

import abc
import math

import torch
from torch import Tensor

from scoresde.sde.base import batch_broadcast

__all__ = ["DiscreteChain", "DDPMChain", "SMLDChain"]


class DiscreteChain(abc.ABC):
    """An ``N``-step Gaussian chain on ``[0, T]``, given by its kernel ``(a_i, s_i)`` and its step.

    Arguments:
        a: ``(N,)`` the chain's kernel scales ``a_i``, float64 (samplers take differences and
            ratios of neighbouring entries, which float32 would round to a few digits).
        s: ``(N,)`` the chain's kernel stds ``s_i``, float64.
        T: the end time.
    """

    def __init__(self, a: Tensor, s: Tensor, T: float):
        self.a, self.s, self.T = a, s, float(T)
        self.N = a.shape[0]
        self._cache: dict[tuple[str, torch.device, torch.dtype], Tensor] = {}

    def table(self, name: str, like: Tensor) -> Tensor:
        """The table ``self.<name>`` in ``like``'s device and dtype, cast once (not at every step
        of a sampler: a copy to an accelerator would also synchronise it)."""
        key = (name, like.device, like.dtype)
        if key not in self._cache:
            self._cache[key] = getattr(self, name).to(like.device, like.dtype)
        return self._cache[key]

    def index(self, t: Tensor) -> Tensor:
        """The step ``i = floor(t (N - 1) / T)`` of each time, clamped into ``[0, N - 1]``."""
        return (t * (self.N - 1) / self.T).long().clamp(0, self.N - 1)

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(a_i, s_i)`` at the step of each time in ``t``, each of shape ``(B,)``."""
        i = self.index(t)
        return self.table("a", t)[i], self.table("s", t)[i]

    @abc.abstractmethod
    def discretize(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """The chain's forward step at ``t`` as ``(f_i, G_i)``: ``x_{i+1} = x_i + f_i + G_i z``."""


class DDPMChain(DiscreteChain):
    """The DDPM chain of betas ``beta_i`` in ``(0, 1)``.

    Attributes (the reference implementation's names): ``discrete_betas``, ``alphas = 1 - beta``,
    ``alphas_cumprod = abar``, ``sqrt_alphas_cumprod``, ``sqrt_1m_alphas_cumprod``.
    """

    def __init__(self, betas: Tensor, T: float):
        self.discrete_betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.sqrt_alphas_cumprod = torch.sqrt(self.alphas_cumprod)
        self.sqrt_1m_alphas_cumprod = torch.sqrt(1.0 - self.alphas_cumprod)
        abar = torch.cumprod(1.0 - betas.to(torch.float64), dim=0)
        super().__init__(abar.sqrt(), (1.0 - abar).sqrt(), T)

    def discretize(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """The reference's forward step at ``t``: ``x_{i+1} = sqrt(1 - beta_i) x_i + sqrt(beta_i)
        z`` as ``(f_i, G_i) = (sqrt(1 - beta_i) x - x, sqrt(beta_i))``."""
        beta = self.table("discrete_betas", x)[self.index(t)]
        return batch_broadcast(torch.sqrt(1 - beta), x) * x - x, torch.sqrt(beta)


class SMLDChain(DiscreteChain):
    """The SMLD chain of noise levels ``sigma_i = exp(linspace(log sigma_min, log sigma_max,
    N))``, i.e. ``sigma(t_i)`` of the VE SDE at ``t_i = i / (N - 1)``.

    Attributes: ``discrete_sigmas`` (the reference implementation's name).
    """

    def __init__(self, sigma_min: float, sigma_max: float, N: int, T: float):
        self.discrete_sigmas = torch.exp(
            torch.linspace(math.log(sigma_min), math.log(sigma_max), N)
        )
        super().__init__(torch.ones(N, dtype=torch.float64), self.discrete_sigmas.double(), T)

    def discretize(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """The reference's forward step: ``x_{i+1} = x_i + sqrt(sigma_{i+1}^2 - sigma_i^2) z``,
        i.e. ``(0, sqrt(sigma_i^2 - sigma_{i-1}^2))`` with ``sigma_{-1} = 0``."""
        i = self.index(t)
        sigmas = self.table("discrete_sigmas", x)
        sigma = sigmas[i]
        below = torch.where(i == 0, torch.zeros_like(sigma), sigmas[(i - 1).clamp(min=0)])
        return torch.zeros_like(x), torch.sqrt(sigma**2 - below**2)
