"""Predictors: one step of a reverse-time solver, from grid time ``t_i`` down to ``t_{i+1}``.

In the predictor–corrector sampler of Song et al. (2021, Algorithm 1), a predictor moves a sample of
``p_{t_i}`` to an (approximate) sample of ``p_{t_{i+1}}`` by discretising the reverse-time SDE

    dx = [f(x, t) - g(t)^2 s(x, t)] dt + g(t) dw_bar,      t from T down to eps.

Predictors are registered by name in :data:`PREDICTORS`; :func:`register_predictor` adds a new one.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import Tensor

from scoresde.registry import Registry
from scoresde.sampling.chain import chain_probe, check_chain_finite
from scoresde.sampling.noise import GaussianNoise
from scoresde.sde import SDE, ScoreFn, batch_broadcast

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
"""Predictor classes by name, as :func:`scoresde.sample` looks them up."""

#: ``@register_predictor("name")`` adds a :class:`Predictor` subclass to :data:`PREDICTORS`.
register_predictor = PREDICTORS.register


class Predictor(abc.ABC):
    """A step of a reverse-time solver along a decreasing time grid.

    Predictors and correctors are built with the same arguments (correctors add ``snr``): a new
    one is a subclass that implements :meth:`update` and, if it tabulates coefficients on the grid
    or must refuse an SDE before sampling, :meth:`prepare`.

    Arguments:
        sde: the forward SDE.
        score_fn: the score ``s(x, t)``.
        grid: the times ``t_0 = T > t_1 > ... > t_{n-1} = eps``, shape ``(n,)``; per-time
            coefficients may be tabulated on it once.
        ndim: number of dimensions of a batch of data ``(B, *D)``: probes that read coefficients
            off the SDE have this many, so they broadcast as the data do.
        generator: the source of all randomness.
    """

    #: Whether the predictor follows the SDE's own ``N``-step discrete chain, and so needs a grid
    #: that takes the chain's steps one per grid time, which :func:`scoresde.sample` checks with
    #: :func:`~scoresde.sampling.chain.check_chain_grid`.
    follows_sde_chain: ClassVar[bool] = False

    def __init__(
        self,
        sde: SDE,
        score_fn: ScoreFn,
        grid: Tensor,
        *,
        ndim: int = 2,
        generator: torch.Generator | None = None,
    ):
        self.sde = sde
        self.score_fn = score_fn
        self.noise = GaussianNoise(generator)
        self.prepare(grid, ndim)

    def prepare(self, grid: Tensor, ndim: int) -> None:  # noqa: B027 (optional hook)
        """Tabulate per-time coefficients on ``grid`` and check that the SDE supports the
        predictor, once, before any sampling work (the constructor's last act). Default: nothing.

        Arguments:
            grid: the times of the constructor, shape ``(n,)``.
            ndim: the constructor's number of dimensions of a batch of data.
        """

    @abc.abstractmethod
    def update(self, x: Tensor, t: Tensor, i: int) -> Tensor:
        """Move ``x`` from ``t_i`` to ``t_{i+1}``.

        Arguments:
            x: a sample at time ``t_i``, shape ``(B, *D)``; it may be updated in place.
            t: ``t_i`` repeated for the batch, shape ``(B,)``.
            i: the index of ``t_i`` in the grid, ``0 <= i < n - 1``.

        Returns:
            the sample at ``t_{i+1}``.
        """


@register_predictor("euler_maruyama")
class EulerMaruyamaPredictor(Predictor):
    """Euler–Maruyama on the reverse SDE with the grid's own step ``dt_i = t_{i+1} - t_i < 0``::

    x <- x + [f(x, t_i) - g(t_i)^2 s(x, t_i)] dt_i + g(t_i) sqrt(-dt_i) z,    z ~ N(0, I).
    """

    def prepare(self, grid: Tensor, ndim: int) -> None:
        self.reverse = self.sde.reverse(self.score_fn)
        self.dt = grid.diff()
        self.sqrt_minus_dt = (-self.dt).sqrt()

    def update(self, x: Tensor, t: Tensor, i: int) -> Tensor:
        drift, diffusion = self.reverse.sde(x, t)
        x.addcmul_(drift, self.dt[i])
        return x.addcmul_(self.noise.like(x), batch_broadcast(diffusion, x) * self.sqrt_minus_dt[i])


@register_predictor("reverse_diffusion")
class ReverseDiffusionPredictor(Predictor):
    """Reverse diffusion (Song et al., 2021, eq. 46): the forward chain
    ``x_{i+1} = x_i + f_i(x_i) + G_i z`` of :meth:`SDE.discretize`, run backwards with the score::

        x <- x - f_i(x) + G_i^2 s(x, t_i) + G_i z.

    It follows the SDE's ``N``-step chain, so the grid must take the chain's steps one per grid
    time (``N`` points, ``eps < T / (N - 1)``); a chain whose steps are not finite (DDPM with
    ``N < beta_max``) raises ``ValueError`` before any work.
    """

    follows_sde_chain = True

    def prepare(self, grid: Tensor, ndim: int) -> None:
        self.reverse = self.sde.reverse(self.score_fn)
        steps = self.sde.discretize(chain_probe(grid, ndim), grid)
        check_chain_finite("reverse_diffusion", self.sde, grid, steps)

    def update(self, x: Tensor, t: Tensor, i: int) -> Tensor:
        rev_f, rev_G = self.reverse.discretize(x, t)
        x.sub_(rev_f)
        return x.addcmul_(self.noise.like(x), batch_broadcast(rev_G, x))


@register_predictor("ancestral_sampling")
class AncestralSamplingPredictor(Predictor):
    """Ancestral sampling of the SDE's discrete Markov chain (DDPM for VP, SMLD for VE)::

        x <- x_mean(x, s(x, t_i)) + std_i z,    (x_mean, std_i) = sde.ancestral_step(x, t_i, s).

    Only SDEs that define :meth:`SDE.ancestral_step` support it; for any other, constructing the
    predictor raises ``ValueError`` with the SDE's explanation, before any sampling work, as it does
    for a chain whose steps are not finite (DDPM with ``N <= beta_max``). It follows the SDE's
    ``N``-step chain, so the grid must take the chain's steps one per grid time (``N`` points,
    ``eps < T / (N - 1)``).
    """

    follows_sde_chain = True

    def prepare(self, grid: Tensor, ndim: int) -> None:
        probe = chain_probe(grid, ndim)
        try:
            steps = self.sde.ancestral_step(probe, grid, torch.zeros_like(probe))
        except NotImplementedError as err:
            raise ValueError(f"predictor='ancestral_sampling' is not available: {err}") from err
        check_chain_finite("ancestral_sampling", self.sde, grid, steps)

    def update(self, x: Tensor, t: Tensor, i: int) -> Tensor:
        x_mean, std = self.sde.ancestral_step(x, t, self.score_fn(x, t))
        return x_mean.addcmul_(self.noise.like(x), batch_broadcast(std, x))


@register_predictor("none")
class NonePredictor(Predictor):
    """No predictor: the sample is left unchanged (corrector-only sampling: annealed Langevin)."""

    def update(self, x: Tensor, t: Tensor, i: int) -> Tensor:
        return x
