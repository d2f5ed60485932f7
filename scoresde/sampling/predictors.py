"""Predictors: one step of a reverse-time solver, from grid time ``t_i`` down to ``t_{i+1}``.

In the predictor–corrector sampler (Song et al., 2021, Algorithm 1) a predictor moves a sample of
``p_{t_i}`` to an (approximate) sample of ``p_{t_{i+1}}`` by discretising the reverse-time SDE

    dx = [f(x, t) - g(t)^2 s(x, t)] dt + g(t) dw_bar,      t from T down to eps.

Predictors are registered by name in :data:`PREDICTORS`; :func:`register_predictor` adds a new one:
a subclass of :class:`Predictor` that implements :meth:`~Predictor.update` and, to tabulate
coefficients on the grid once (or refuse a grid before any work), :meth:`~Predictor.prepare`.
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor

from scoresde.registry import Registry
from scoresde.sampling.base import GridStep
from scoresde.sampling.chain import chain_transitions
from scoresde.sde import batch_broadcast

__all__ = [
    "Predictor",
    "EulerMaruyamaPredictor",
    "ReverseDiffusionPredictor",
    "AncestralSamplingPredictor",
    "NonePredictor",
    "PREDICTORS",
    "register_predictor",
]

PREDICTORS: Registry[type[Predictor]] = Registry("predictor")
"""Predictor classes by name."""

#: ``@register_predictor("name")`` adds a :class:`Predictor` subclass to :data:`PREDICTORS`.
register_predictor = PREDICTORS.register


class Predictor(GridStep, abc.ABC):
    """A step of a reverse-time solver along a decreasing time grid; built as a
    :class:`~scoresde.sampling.base.GridStep`."""

    @abc.abstractmethod
    def update(self, x: Tensor, i: int) -> Tensor:
        """Move ``x`` (updated in place where possible) from ``t_i`` to ``t_{i+1}``."""


@register_predictor("euler_maruyama")
class EulerMaruyamaPredictor(Predictor):
    """Euler–Maruyama on the reverse SDE with the grid's own step ``dt_i = t_{i+1} - t_i < 0``::

    x <- x + [f(x, t_i) - g(t_i)^2 s(x, t_i)] dt_i + g(t_i) sqrt(-dt_i) z,    z ~ N(0, I).
    """

    def prepare(self, times: Tensor, dtype: torch.dtype) -> None:
        self.reverse = self.sde.reverse(self.score_fn)
        self.dt = times.diff().to(dtype)
        self.sqrt_minus_dt = (-times.diff()).sqrt().to(dtype)

    def update(self, x: Tensor, i: int) -> Tensor:
        drift, diffusion = self.reverse.sde(x, self.time(x, i))
        x.addcmul_(drift, self.dt[i])
        return x.addcmul_(self.noise.like(x), batch_broadcast(diffusion, x) * self.sqrt_minus_dt[i])


@register_predictor("reverse_diffusion")
class ReverseDiffusionPredictor(Predictor):
    """Reverse diffusion (Song et al., 2021, eq. 46): the chain's forward step ``x_s = a x_t +
    sqrt(v) z`` from ``t = t_{i+1}`` to ``s = t_i`` (:mod:`~scoresde.sampling.chain`), run
    backwards with the score::

        x <- x - (a - 1) x + v s(x, t_i) + sqrt(v) z.

    For DDPM (``a = sqrt(1 - beta_i)``, ``v = beta_i``) and SMLD (``a = 1``, ``v = sigma_i^2 -
    sigma_{i-1}^2``) on the grid ``linspace(T, eps, N)`` it is the reference implementation's step.
    """

    def prepare(self, times: Tensor, dtype: torch.dtype) -> None:
        a, v, _ = chain_transitions(self.sde, times, "reverse_diffusion")
        self.keep, self.v, self.std = (2 - a).to(dtype), v.to(dtype), v.sqrt().to(dtype)

    def update(self, x: Tensor, i: int) -> Tensor:
        score = self.score_fn(x, self.time(x, i))
        x = x.mul_(self.keep[i]).addcmul_(score, self.v[i])
        return x.addcmul_(self.noise.like(x), self.std[i])


@register_predictor("ancestral_sampling")
class AncestralSamplingPredictor(Predictor):
    """Ancestral sampling of the SDE's chain (DDPM for VP, SMLD for VE; Ho et al. 2020, Song et
    al. 2021 App. F)::

        x <- (x + v s(x, t_i)) / a + std_i z,

    with ``(a, v)`` the chain's transition from ``t_{i+1}`` to ``t_i`` and ``std_i^2`` either the
    posterior variance ``v S(t_{i+1})^2 / S(t_i)^2`` or ``v`` itself, as
    ``sde.ancestral_variance`` says (``"transition"`` for VP, as DDPM and the reference). With the
    posterior variance it is DDIM with ``eta = 1`` on the chain's kernel.
    """

    def prepare(self, times: Tensor, dtype: torch.dtype) -> None:
        a, v, post = chain_transitions(self.sde, times, "ancestral_sampling")
        variance = v if self.sde.ancestral_variance == "transition" else v * post
        self.inv_a, self.v, self.std = (1 / a).to(dtype), v.to(dtype), variance.sqrt().to(dtype)

    def update(self, x: Tensor, i: int) -> Tensor:
        score = self.score_fn(x, self.time(x, i))
        x = x.addcmul_(score, self.v[i]).mul_(self.inv_a[i])
        return x.addcmul_(self.noise.like(x), self.std[i])


@register_predictor("none")
class NonePredictor(Predictor):
    """No predictor: the sample is left unchanged (corrector-only sampling: annealed Langevin)."""

    def update(self, x: Tensor, i: int) -> Tensor:
        return x
