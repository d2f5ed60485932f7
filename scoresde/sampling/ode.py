"""Sampling by the probability-flow ODE, solved with torchdiffeq.

The ODE shares the marginals ``p_t`` of the forward SDE (Song et al., 2021, eq. 13)::

    dx/dt = f(x, t) - 1/2 g(t)^2 s(x, t),

so integrating it from ``x ~ p_T`` at ``T`` down to ``eps`` gives a sample of ``p_eps``,
deterministically. The solver is :func:`scoresde.odeint.odeint_within` (torchdiffeq under a guard
that never lets the score see a time outside ``[eps, T]``):

* adaptive (:data:`ADAPTIVE_METHODS`, e.g. ``"dopri5"``) with tolerances ``rtol``/``atol``;
* fixed step (:data:`FIXED_METHODS`, e.g. ``"rk4"``) on a given time grid.
"""

from __future__ import annotations

from torch import Tensor

from scoresde.odeint import ADAPTIVE_METHODS, FIXED_METHODS, ODE_METHODS, odeint_within
from scoresde.sde import SDE, ScoreFn

__all__ = ["ADAPTIVE_METHODS", "FIXED_METHODS", "ODE_METHODS", "probability_flow_solve"]


def probability_flow_solve(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    grid: Tensor,
    times: Tensor,
    *,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
) -> Tensor:
    """Integrate the probability-flow ODE from ``x`` at ``grid[0] = T`` down to ``grid[-1] = eps``.

    Arguments:
        sde: the forward SDE.
        score_fn: the score ``s(x, t)``.
        x: the starting point at ``T``, shape ``(B, *D)``.
        grid: decreasing times from ``T`` to ``eps``, shape ``(n,)``: the steps of a fixed-step
            method; an adaptive method uses only its ends.
        times: decreasing output times, ``times[0] = grid[0]`` and ``times[-1] = grid[-1]``.
        method: one of :data:`ODE_METHODS`.
        rtol: relative tolerance of an adaptive method.
        atol: absolute tolerance of an adaptive method.

    Returns:
        the solution at ``times``, shape ``(len(times), B, *D)``; a fixed-step method interpolates
        linearly between its steps.
    """
    flow = sde.reverse(score_fn, probability_flow=True)
    batch = x.shape[0]

    def velocity(t: Tensor, y: Tensor) -> Tensor:
        drift, _ = flow.sde(y, t.expand(batch))
        return drift

    steps = grid if method in FIXED_METHODS else None
    return odeint_within(velocity, x, times, method=method, rtol=rtol, atol=atol, grid=steps)
