"""Sampling by the probability-flow ODE, solved with torchdiffeq.

The ODE shares the marginals ``p_t`` of the forward SDE (Song et al., 2021, eq. 13)::

    dx/dt = f(x, t) - 1/2 g(t)^2 s(x, t),

so integrating it from ``x ~ p_T`` at ``T`` down to ``eps`` gives a sample of ``p_eps``,
deterministically. The solver is :func:`scoresde.odeint.odeint_within` (torchdiffeq under a guard
that never lets the score see a time outside the grid), from grid time to grid time:

* an adaptive method (:data:`ADAPTIVE_METHODS`, e.g. ``"dopri5"``) chooses its own steps from
  ``rtol`` and ``atol`` between grid times, which only say where the state is reported (by default
  the grid is just ``[T, eps]``);
* a fixed-step method (:data:`FIXED_METHODS`, e.g. ``"rk4"``) takes one step per grid interval.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from scoresde.odeint import (
    ADAPTIVE_METHODS,
    FIXED_METHODS,
    ODE_METHODS,
    check_tolerances,
    odeint_within,
)
from scoresde.sampling.base import StepHook, register_sampler
from scoresde.sampling.noise import GaussianNoise
from scoresde.sde import SDE, ScoreFn
from scoresde.validation import check_choice

__all__ = ["ADAPTIVE_METHODS", "FIXED_METHODS", "ODE_METHODS", "probability_flow"]


def _is_adaptive(options: dict[str, Any]) -> bool:
    return options.get("method", "dopri5") in ADAPTIVE_METHODS


@register_sampler("ode", adaptive=_is_adaptive, choices={"method": ODE_METHODS})
def probability_flow(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    times: Tensor,
    *,
    noise: GaussianNoise,
    on_step: StepHook,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
) -> Tensor:
    """Integrate the probability-flow ODE along ``times`` (no randomness after the prior draw).

    Options:
        method: a torchdiffeq method in :data:`ODE_METHODS`.
        rtol, atol: relative and absolute tolerances of an adaptive method, at least the
            resolution of the samples' dtype (``torch.finfo(dtype).eps``).
    """
    check_choice("method", method, ODE_METHODS)
    check_tolerances(rtol, atol, x.dtype)
    flow = sde.reverse(score_fn, probability_flow=True)
    batch = x.shape[0]

    def velocity(t: Tensor, y: Tensor) -> Tensor:
        return flow.sde(y, t.expand(batch))[0]

    t = times.to(x.dtype)
    for i in range(len(t) - 1):
        ends = t[i : i + 2]
        grid = ends if method in FIXED_METHODS else None
        x = odeint_within(velocity, x, ends, method=method, rtol=rtol, atol=atol, grid=grid)[-1]
        x = on_step(i + 1, x)
    return x
