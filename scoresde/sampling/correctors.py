"""Correctors: score-based MCMC at a fixed time ``t_i`` that pulls a sample towards ``p_{t_i}``.

In the predictor–corrector sampler (Song et al., 2021, Algorithms 4 and 5) the corrector runs
``n_steps`` steps of Langevin dynamics at each grid time, with a step size ``e`` set by a target
signal-to-noise ratio ``snr``::

    x <- x + e s(x, t_i) + sqrt(2 e) z,    z ~ N(0, I).

A corrector makes one such step per :meth:`Corrector.update`; the loop repeats it ``n_steps``
times. Correctors are registered by name in :data:`CORRECTORS`; :func:`register_corrector` adds a
new one.
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor

from scoresde.registry import Registry
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
"""Corrector classes by name, as :func:`scoresde.sample` looks them up."""

#: ``@register_corrector("name")`` adds a :class:`Corrector` subclass to :data:`CORRECTORS`.
register_corrector = CORRECTORS.register


class Corrector(abc.ABC):
    """MCMC steps that leave ``p_{t_i}`` (approximately) invariant, at each time of a grid.

    Built with the arguments of a :class:`~scoresde.sampling.Predictor` and ``snr``: a new one is
    a subclass that implements :meth:`update` and, if it tabulates coefficients on the grid,
    :meth:`prepare`.

    Arguments:
        sde: the forward SDE.
        score_fn: the score ``s(x, t)``.
        grid: the times ``t_0 = T > ... > t_{n-1} = eps``, shape ``(n,)``; per-time
            coefficients may be tabulated on it once.
        ndim: number of dimensions of a batch of data ``(B, *D)``: probes that read coefficients
            off the SDE have this many, so they broadcast as the data do.
        generator: the source of all randomness.
        snr: the target signal-to-noise ratio that sets the step size, > 0.
    """

    def __init__(
        self,
        sde: SDE,
        score_fn: ScoreFn,
        grid: Tensor,
        *,
        ndim: int = 2,
        generator: torch.Generator | None = None,
        snr: float = 0.16,
    ):
        self.sde = sde
        self.score_fn = score_fn
        self.noise = GaussianNoise(generator)
        self.snr = snr
        self.prepare(grid, ndim)

    def prepare(self, grid: Tensor, ndim: int) -> None:  # noqa: B027 (optional hook)
        """Tabulate per-time coefficients on ``grid``, once, before any sampling work (the
        constructor's last act). Default: nothing.

        Arguments:
            grid: the times of the constructor, shape ``(n,)``.
            ndim: the constructor's number of dimensions of a batch of data.
        """

    @abc.abstractmethod
    def update(self, x: Tensor, t: Tensor, i: int) -> Tensor:
        """One MCMC step at ``t_i``.

        Arguments:
            x: a sample at time ``t_i``, shape ``(B, *D)``; it may be updated in place.
            t: ``t_i`` repeated for the batch, shape ``(B,)``.
            i: the index of ``t_i`` in the grid.

        Returns:
            the corrected sample.
        """


@register_corrector("langevin")
class LangevinCorrector(Corrector):
    """Langevin MCMC with the step size of Song et al. (2021, Algorithm 4)::

        e = 2 a_i (snr ||z|| / ||s(x, t_i)||)^2,    x <- x + e s(x, t_i) + sqrt(2 e) z,

    where the norms are per-sample Euclidean norms averaged over the batch (as the reference does)
    and ``a_i = (1 + f_i(1))^2`` is the forward chain's squared scale factor, read off
    :meth:`SDE.discretize` (:func:`~scoresde.sampling.chain.chain_scale`): ``1 - beta_i`` for
    DDPM, ``1`` for SMLD, ``~ 1 - beta(t) dt`` for sub-VP and a user's SDE. Where the score is zero
    (``||s|| = 0``, as from a network initialised to output zeros) the step is ``e = 0``: the
    sample does not move, where the formula would give ``0 / 0``.
    """

    def prepare(self, grid: Tensor, ndim: int) -> None:
        self.two_a = 2 * chain_scale(self.sde, grid, ndim)

    def update(self, x: Tensor, t: Tensor, i: int) -> Tensor:
        score = self.score_fn(x, t)
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

    def prepare(self, grid: Tensor, ndim: int) -> None:
        _, sigma = self.sde.kernel_coefficients(grid, ndim)
        self.step = 2 * chain_scale(self.sde, grid, ndim) * (self.snr * sigma) ** 2
        self.noise_scale = (2 * self.step).sqrt()

    def update(self, x: Tensor, t: Tensor, i: int) -> Tensor:
        score = self.score_fn(x, t)
        return x.addcmul_(score, self.step[i]).addcmul_(self.noise.like(x), self.noise_scale[i])


@register_corrector("none")
class NoneCorrector(Corrector):
    """No corrector: the sample is left unchanged."""

    def update(self, x: Tensor, t: Tensor, i: int) -> Tensor:
        return x
