"""Correctors: score-based MCMC at a fixed time ``t_i`` that pulls a sample towards ``p_{t_i}``.

In the predictor–corrector sampler (Song et al., 2021, Algorithms 4 and 5) the corrector runs
``n_steps`` steps of Langevin dynamics at each grid time, with a step size set by a target
signal-to-noise ratio ``snr``::

    x <- x + e s(x, t_i) + sqrt(2 e) z,    z ~ N(0, I).

Correctors are registered by name in :data:`CORRECTORS`; :func:`register_corrector` adds a new one.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import torch
from torch import Tensor

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

CORRECTORS: dict[str, type[Corrector]] = {}
"""Corrector classes by name, as :func:`scoresde.sample` looks them up."""


def register_corrector(name: str) -> Callable[[type[Corrector]], type[Corrector]]:
    """Class decorator: add a :class:`Corrector` subclass to :data:`CORRECTORS` as ``name``."""

    def register(cls: type[Corrector]) -> type[Corrector]:
        if name in CORRECTORS:
            raise ValueError(f"a corrector named {name!r} is already registered")
        CORRECTORS[name] = cls
        return cls

    return register


def chain_scale(sde: SDE, t: Tensor, ndim: int) -> Tensor:
    """``a_i = (1 + f_i(1))^2``, the squared factor by which one forward step scales the data.

    The Langevin corrector's step size is multiplied by it (Song et al., 2021, Algorithm 4, where
    it is ``alpha_i = 1 - beta_i`` for DDPM and ``1`` otherwise). Read off :meth:`SDE.discretize`
    applied to ``x = 1`` (a probe of shape ``(n, 1, ..., 1)`` that broadcasts like a batch of
    data), with no branching on SDE types, it is exactly ``1 - beta_i`` for the DDPM chain of
    :class:`~scoresde.VPSDE`, ``1`` for the SMLD chain of :class:`~scoresde.VESDE`, and
    ``(1 + f(t) dt)^2 ~ 1 - beta(t) dt`` for the Euler–Maruyama chain of
    :class:`~scoresde.SubVPSDE` or a user's linear SDE (where the reference implementation crashes).

    Arguments:
        sde: the forward SDE.
        t: times, shape ``(n,)``, inside ``[0, T]``.
        ndim: number of dimensions of a batch of data ``(B, *D)``.

    Returns:
        ``a``, shape ``(n,)``.
    """
    probe = torch.ones((t.shape[0],) + (1,) * (ndim - 1), dtype=t.dtype, device=t.device)
    f, _ = sde.discretize(probe, t)
    return (1 + f).reshape(t.shape[0], -1).mean(1).pow(2)


class Corrector(abc.ABC):
    """MCMC steps that leave ``p_{t_i}`` (approximately) invariant, at each time of a grid.

    Arguments:
        sde: the forward SDE.
        score_fn: the score ``s(x, t)``.
        grid: the times ``t_0 = T > ... > t_{n-1} = eps``, shape ``(n,)``; per-time coefficients
            are tabulated on it once.
        ndim: number of dimensions of a batch of data ``(B, *D)``.
        snr: the target signal-to-noise ratio that sets the step size.
        n_steps: the number of MCMC steps per grid time.
        generator: the source of all randomness.
    """

    def __init__(
        self,
        sde: SDE,
        score_fn: ScoreFn,
        grid: Tensor,
        ndim: int,
        *,
        snr: float,
        n_steps: int,
        generator: torch.Generator | None = None,
    ):
        self.sde = sde
        self.score_fn = score_fn
        self.snr = snr
        self.n_steps = n_steps
        self.noise = GaussianNoise(generator)

    @abc.abstractmethod
    def update(self, x: Tensor, t: Tensor, i: int) -> Tensor:
        """Run the corrector at ``t_i``.

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
    :meth:`SDE.discretize` (:func:`chain_scale`): ``1 - beta_i`` for
    DDPM, ``1`` for SMLD, ``~ 1 - beta(t) dt`` for sub-VP and a user's SDE.
    """

    def __init__(
        self,
        sde: SDE,
        score_fn: ScoreFn,
        grid: Tensor,
        ndim: int,
        *,
        snr: float,
        n_steps: int,
        generator: torch.Generator | None = None,
    ):
        super().__init__(sde, score_fn, grid, ndim, snr=snr, n_steps=n_steps, generator=generator)
        self.two_a = 2 * chain_scale(sde, grid, ndim)

    def update(self, x: Tensor, t: Tensor, i: int) -> Tensor:
        for _ in range(self.n_steps):
            score = self.score_fn(x, t)
            z = self.noise.like(x)
            score_norm = torch.linalg.vector_norm(score.flatten(1), dim=1).mean()
            noise_norm = torch.linalg.vector_norm(z.flatten(1), dim=1).mean()
            step = self.two_a[i] * (self.snr * noise_norm / score_norm) ** 2
            x.addcmul_(score, step).addcmul_(z, (2 * step).sqrt())
        return x


@register_corrector("ald")
class AnnealedLangevinDynamics(Corrector):
    """Annealed Langevin dynamics (Song & Ermon, 2019; Song et al., 2021, Algorithm 5)::

        e_i = 2 a_i (snr sigma(t_i))^2,    x <- x + e_i s(x, t_i) + sqrt(2 e_i) z,

    with ``sigma(t_i)`` the kernel's std (:meth:`SDE.marginal_prob`) and ``a_i`` as in
    :class:`LangevinCorrector`. The step size depends on time only, so it is tabulated once.
    """

    def __init__(
        self,
        sde: SDE,
        score_fn: ScoreFn,
        grid: Tensor,
        ndim: int,
        *,
        snr: float,
        n_steps: int,
        generator: torch.Generator | None = None,
    ):
        super().__init__(sde, score_fn, grid, ndim, snr=snr, n_steps=n_steps, generator=generator)
        _, sigma = sde.kernel_coefficients(grid, ndim)
        self.step = 2 * chain_scale(sde, grid, ndim) * (snr * sigma) ** 2
        self.noise_scale = (2 * self.step).sqrt()

    def update(self, x: Tensor, t: Tensor, i: int) -> Tensor:
        for _ in range(self.n_steps):
            score = self.score_fn(x, t)
            x.addcmul_(score, self.step[i]).addcmul_(self.noise.like(x), self.noise_scale[i])
        return x


@register_corrector("none")
class NoneCorrector(Corrector):
    """No corrector: the sample is left unchanged."""

    def update(self, x: Tensor, t: Tensor, i: int) -> Tensor:
        return x
