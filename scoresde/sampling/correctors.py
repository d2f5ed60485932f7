"""Correctors: score-based MCMC at a fixed time ``t_i`` that pulls a sample towards ``p_{t_i}``.

In the predictor–corrector sampler (Song et al., 2021, Algorithms 4 and 5) the corrector runs
``n_steps`` steps of Langevin dynamics at each grid time, with a step size ``e`` set by a target
signal-to-noise ratio ``snr``::

    x <- x + e s(x, t_i) + sqrt(2 e) z,    z ~ N(0, I).

A corrector makes one such step per :meth:`Corrector.update`; the loop repeats it ``n_steps``
times. Correctors are registered by name in :data:`CORRECTORS`; :func:`register_corrector` adds a
new one: a subclass of :class:`Corrector` with :meth:`~Corrector.update` and, to tabulate
coefficients once, :meth:`~Corrector.prepare`.
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor

from scoresde.registry import Registry
from scoresde.sampling.base import GridStep
from scoresde.sampling.chain import chain_scale
from scoresde.sampling.noise import GaussianNoise
from scoresde.sde import SDE, ScoreFn

__all__ = [
    "Corrector",
    "LangevinCorrector",
    "AnnealedLangevinDynamics",
    "NoneCorrector",
    "CORRECTORS",
    "register_corrector",
]

CORRECTORS: Registry[type[Corrector]] = Registry("corrector")
"""Corrector classes by name."""

#: ``@register_corrector("name")`` adds a :class:`Corrector` subclass to :data:`CORRECTORS`.
register_corrector = CORRECTORS.register


class Corrector(GridStep, abc.ABC):
    """MCMC steps that leave ``p_{t_i}`` (approximately) invariant, at each time of a grid.

    Built as a :class:`~scoresde.sampling.base.GridStep`, with one more argument:

    Arguments:
        snr: the target signal-to-noise ratio that sets the step size, > 0.
    """

    def __init__(
        self,
        sde: SDE,
        score_fn: ScoreFn,
        times: Tensor,
        noise: GaussianNoise,
        dtype: torch.dtype,
        snr: float,
    ):
        self.snr = snr
        super().__init__(sde, score_fn, times, noise, dtype)

    @abc.abstractmethod
    def update(self, x: Tensor, i: int) -> Tensor:
        """One MCMC step at ``t_i`` (``x`` may be updated in place); the corrected sample."""


@register_corrector("langevin")
class LangevinCorrector(Corrector):
    """Langevin MCMC with the step size of Song et al. (2021, Algorithm 4)::

        e = 2 a_i (snr ||z|| / ||s(x, t_i)||)^2,    x <- x + e s(x, t_i) + sqrt(2 e) z,

    where the norms are per-sample Euclidean norms averaged over the batch (as the reference does,
    so a sample depends on its batch through ``e``) and ``a_i`` is the chain's squared scale over
    the step below ``t_i`` (:func:`~scoresde.sampling.chain.chain_scale`: ``1 - beta_i`` for DDPM,
    ``1`` for SMLD). Where the score is zero (``||s|| = 0``, as from a network initialised to output
    zeros) the step is ``e = 0``: the sample does not move, where the formula would give ``0 / 0``.
    """

    def prepare(self, times: Tensor, dtype: torch.dtype) -> None:
        self.two_a = (2 * chain_scale(self.sde, times)).to(dtype)

    def update(self, x: Tensor, i: int) -> Tensor:
        score = self.score_fn(x, self.time(x, i))
        z = self.noise.like(x)
        score_norm = torch.linalg.vector_norm(score.flatten(1), dim=1).mean()
        noise_norm = torch.linalg.vector_norm(z.flatten(1), dim=1).mean()
        step = self.two_a[i] * (self.snr * noise_norm / score_norm) ** 2
        step = torch.where(score_norm > 0, step, 0.0)
        return x.addcmul_(score, step).addcmul_(z, (2 * step).sqrt())


@register_corrector("ald")
class AnnealedLangevinDynamics(Corrector):
    """Annealed Langevin dynamics (Song & Ermon, 2019; Song et al., 2021, Algorithm 5)::

        e_i = 2 a_i (snr sigma(t_i))^2,    x <- x + e_i s(x, t_i) + sqrt(2 e_i) z,

    with ``sigma(t_i)`` the kernel's std (:meth:`SDE.kernel_coefficients`) and ``a_i`` as in
    :class:`LangevinCorrector`. The step size depends on time only, so it is tabulated once.
    """

    def prepare(self, times: Tensor, dtype: torch.dtype) -> None:
        sigma = self.sde.kernel_coefficients(times)[1].to(torch.float64)
        step = 2 * chain_scale(self.sde, times) * (self.snr * sigma) ** 2
        self.step, self.noise_scale = step.to(dtype), (2 * step).sqrt().to(dtype)

    def update(self, x: Tensor, i: int) -> Tensor:
        score = self.score_fn(x, self.time(x, i))
        return x.addcmul_(score, self.step[i]).addcmul_(self.noise.like(x), self.noise_scale[i])


@register_corrector("none")
class NoneCorrector(Corrector):
    """No corrector: the sample is left unchanged."""

    def update(self, x: Tensor, i: int) -> Tensor:
        return x
