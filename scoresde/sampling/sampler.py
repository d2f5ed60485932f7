"""``scoresde.sample``: one entry point for every sampler, usable with any score function.

Three samplers turn a prior sample ``x ~ p_T`` into a sample of the data distribution, given the
forward SDE and its score ``s(x, t) = grad_x log p_t(x)``:

* ``"em"``: Euler–Maruyama on the reverse-time SDE;
* ``"pc"``: predictor–corrector (Song et al., 2021, Algorithm 1) with a predictor and a corrector
  chosen by name from :data:`PREDICTORS` and :data:`CORRECTORS`;
* ``"ode"``: the probability-flow ODE, solved by torchdiffeq (adaptive or fixed step).

**The time grid.** The stochastic samplers and the fixed-step ODE solvers run on the grid
``t_k = linspace(T, eps, num_steps)``: ``num_steps`` counts grid *times*, so there are
``num_steps - 1`` steps, each of the grid's real size ``(T - eps) / (num_steps - 1)``, that end
exactly at ``eps``. (:func:`scoresde.log_likelihood` counts *steps* instead.) The correctors run at
every grid time, the predictors between them. The predictors that follow the SDE's own discrete
chain (``reverse_diffusion``, ``ancestral_sampling``) need ``num_steps = sde.N`` (the default) and
``eps < T / (N - 1)`` (true of the defaults), so that the grid takes the chain's steps
``N - 1, ..., 1`` once each, at the reference implementation's times; anything else raises
``ValueError`` before any work (:func:`~scoresde.sampling.chain.check_chain_grid`). The chain's
last step, whose mean is Tweedie's formula to first order in the step, is replaced by the
denoising step below.

**Denoising.** With ``denoise=True`` the sample of ``p_eps`` is replaced by its posterior mean
``E[x_0 | x_eps] = (x + sigma(eps)^2 s(x, eps)) / alpha(eps)`` (one more score evaluation).

**Cost.** ``nfe`` in the returned :class:`SampleResult` counts the calls of ``score_fn`` exactly
(one call on a batch is one evaluation): ``em``: ``num_steps - 1``; ``pc``: ``(num_steps - 1) p +
num_steps c n_steps`` with ``p``, ``c`` the evaluations per predictor / corrector step (1 or 0);
fixed-step ODE: ``(num_steps - 1)`` times the method's stages (euler 1, midpoint 2, rk4 4); adaptive
ODE: as many as the solver needs; plus 1 for denoising. The default ``num_steps = sde.N`` (1000) is
the reference's and is far more than a fixed-step ODE solver needs: on a 2-D mixture rk4 with
``num_steps=20`` (77 evaluations) is as accurate as dopri5 at ``rtol = atol = 1e-5``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from scoresde.sampling.chain import check_chain_grid
from scoresde.sampling.correctors import CORRECTORS
from scoresde.sampling.denoise import tweedie_denoise
from scoresde.sampling.ode import ODE_METHODS, probability_flow_solve
from scoresde.sampling.pc import pc_loop
from scoresde.sampling.predictors import PREDICTORS
from scoresde.score_calls import CountedScore
from scoresde.sde import SDE, ScoreFn, unchecked_times

__all__ = ["SAMPLERS", "SampleResult", "sample"]

SAMPLERS = ("em", "pc", "ode")
"""The names of the samplers :func:`sample` offers."""


class SampleResult(NamedTuple):
    """What :func:`sample` returns with ``return_info=True``.

    Attributes:
        samples: the samples, shape ``(B, *D)``.
        nfe: the number of score evaluations the call made (one call on a batch counts once).
        times: the times at which the trajectory was kept, decreasing, shape ``(K,)``; ``None``
            without ``trajectory_times``.
        trajectory: the samples at ``times`` (before denoising), shape ``(K, B, *D)``; ``None``
            without ``trajectory_times``.
    """

    samples: Tensor
    nfe: int
    times: Tensor | None
    trajectory: Tensor | None


def _choice(name: str, value: str, allowed: Iterable[str]) -> None:
    allowed = sorted(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


def _integer(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _batch_shape(shape: Sequence[int]) -> tuple[int, ...]:
    valid = (
        isinstance(shape, Sequence)
        and len(shape) > 0
        and all(
            isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n > 0 for n in shape
        )
    )
    if not valid:
        raise ValueError(
            f"shape must be a non-empty sequence of positive ints (B, *D), got {shape!r}"
        )
    return tuple(int(n) for n in shape)


def _times(name: str, values: Iterable[float] | Tensor, eps: float, T: float) -> list[float]:
    values = values.tolist() if isinstance(values, Tensor) else list(values)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not eps <= v <= T:
            raise ValueError(f"{name} must be numbers in [eps, T] = [{eps}, {T}], got {v!r}")
    return values


def sample(
    sde: SDE,
    score_fn: ScoreFn,
    shape: Sequence[int],
    *,
    sampler: str = "pc",
    predictor: str = "reverse_diffusion",
    corrector: str = "langevin",
    snr: float = 0.16,
    n_steps: int = 1,
    num_steps: int | None = None,
    eps: float | None = None,
    denoise: bool = True,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    trajectory_times: Iterable[float] | Tensor | None = None,
    return_info: bool = False,
    score_needs_grad: bool = False,
) -> Tensor | SampleResult:
    """Draw samples by reversing ``sde`` with the score ``score_fn``.

    Arguments:
        sde: the forward SDE (any :class:`~scoresde.SDE`).
        score_fn: ``s(x, t) -> grad_x log p_t(x)``, ``x`` of shape ``(B, *D)``, ``t`` ``(B,)``.
        shape: ``(B, *D)``, the shape of the batch of samples.
        sampler: ``"em"``, ``"pc"`` or ``"ode"``.
        predictor: for ``"pc"``, a name in :data:`PREDICTORS`: ``"euler_maruyama"``,
            ``"reverse_diffusion"``, ``"ancestral_sampling"`` (SDEs with a discrete chain only) or
            ``"none"``. ``reverse_diffusion`` and ``ancestral_sampling`` follow the SDE's ``N``-step
            chain and need ``num_steps == sde.N`` and ``eps < T / (N - 1)``.
        corrector: for ``"pc"``, a name in :data:`CORRECTORS`: ``"langevin"``, ``"ald"``,
            ``"none"``.
        snr: the corrector's target signal-to-noise ratio, > 0.
        n_steps: corrector steps per grid time, >= 0.
        num_steps: the number of grid *times* of ``linspace(T, eps, num_steps)``, >= 2 (default
            ``sde.N``), so ``num_steps - 1`` predictor (or fixed-step ODE) steps; unused by
            adaptive ODE methods. (:func:`scoresde.log_likelihood`'s ``num_steps`` counts steps.)
        eps: the final time, in ``(0, T)`` (default ``sde.sampling_eps``).
        denoise: replace the final sample by Tweedie's ``E[x_0 | x_eps]`` (one score evaluation).
        method: for ``"ode"``, a torchdiffeq method in :data:`~scoresde.sampling.ode.ODE_METHODS`.
        rtol: relative tolerance of an adaptive ODE method, > 0.
        atol: absolute tolerance of an adaptive ODE method, > 0.
        generator: the only source of randomness: the same state gives the same samples.
        dtype: the samples' dtype (default torch's default dtype).
        device: the samples' device (default ``generator``'s, or torch's default without one).
            The prior sample is drawn by ``sde.prior_sampling(shape, generator)`` and then cast to
            ``dtype`` and moved to ``device``, so an SDE needs nothing beyond that signature.
        trajectory_times: times in ``[eps, T]`` at which to keep the samples; the stochastic
            samplers keep them at the nearest grid times, the ODE sampler at the exact times.
        return_info: return a :class:`SampleResult` instead of the samples alone.
        score_needs_grad: run under ``torch.no_grad()`` instead of ``torch.inference_mode()``, so
            that ``score_fn`` may enable gradients itself (an energy's gradient, classifier
            guidance).

    Returns:
        the samples, shape ``shape``; with ``return_info``, a :class:`SampleResult`.

    Raises:
        ValueError: for a bad argument (naming it and what is allowed), a predictor the SDE or the
            grid does not support, or a ``score_fn`` whose output does not have the input's shape.
    """
    T = float(sde.T)
    shape = _batch_shape(shape)
    _choice("sampler", sampler, SAMPLERS)
    _choice("predictor", predictor, PREDICTORS)
    _choice("corrector", corrector, CORRECTORS)
    _choice("method", method, ODE_METHODS)
    num_steps = _integer("num_steps", sde.N if num_steps is None else num_steps, 2)
    n_steps = _integer("n_steps", n_steps, 0)
    for name, value in (("snr", snr), ("rtol", rtol), ("atol", atol)):
        _positive(name, value)
    eps = sde.sampling_eps if eps is None else eps
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < T:
        raise ValueError(f"eps must be a number in (0, T) = (0, {T}), got {eps!r}")
    keep = None
    if trajectory_times is not None:
        keep = _times("trajectory_times", trajectory_times, eps, T)
    if sampler == "em":
        predictor, corrector = "euler_maruyama", "none"
    if sampler == "pc":
        if predictor == "none" and corrector == "none":
            raise ValueError(
                "predictor='none' with corrector='none' does nothing; choose at least one"
            )
        if PREDICTORS[predictor].follows_sde_chain:
            check_chain_grid(predictor, sde, num_steps, eps)

    counted = CountedScore(score_fn)
    wanted = [] if keep is None else keep
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if device is None and generator is not None:
        device = generator.device
    context = torch.no_grad() if score_needs_grad else torch.inference_mode()
    with context, unchecked_times():
        grid = torch.linspace(T, eps, num_steps, dtype=dtype, device=device)
        grid[-1] = eps
        if sampler == "ode":
            x = _prior(sde, shape, generator, grid)
            x, times, kept = _solve_ode(sde, counted, x, grid, wanted, method, rtol, atol)
        else:
            options = {"ndim": len(shape), "generator": generator}
            steps = PREDICTORS[predictor](sde, counted, grid, **options)
            corrections = CORRECTORS[corrector](sde, counted, grid, snr=snr, **options)
            x = _prior(sde, shape, generator, grid)
            index = sorted({round((T - v) / (T - eps) * (num_steps - 1)) for v in wanted})
            x, kept = pc_loop(x, grid, steps, corrections, n_steps, index)
            times = grid[index]
        if denoise:
            x = tweedie_denoise(sde, counted, x, grid[-1])
    # Copies made outside inference mode are ordinary tensors, usable later with autograd.
    samples = x.clone()
    if not return_info:
        return samples
    if keep is None:
        return SampleResult(samples, counted.calls, None, None)
    trajectory = torch.stack(kept).clone() if kept else x.new_empty((0, *shape)).clone()
    return SampleResult(samples, counted.calls, times.clone(), trajectory)


def _prior(
    sde: SDE, shape: tuple[int, ...], generator: torch.Generator | None, grid: Tensor
) -> Tensor:
    """``sde.prior_sampling(shape, generator)`` (the protocol's signature, nothing more), in the
    grid's dtype and on its device."""
    return sde.prior_sampling(shape, generator).to(device=grid.device, dtype=grid.dtype)


def _solve_ode(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    grid: Tensor,
    wanted: list[float],
    method: str,
    rtol: float,
    atol: float,
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """The probability-flow solution at ``eps`` and at the distinct ``wanted`` times, decreasing."""
    ends = grid[[0, -1]]
    wanted_t = torch.tensor(wanted, dtype=grid.dtype, device=grid.device)
    out = torch.cat([ends, wanted_t]).unique().flip(0)
    path = probability_flow_solve(sde, score_fn, x, grid, out, method=method, rtol=rtol, atol=atol)
    mask = torch.isin(out, wanted_t)
    return path[-1], out[mask], list(path[mask])
