"""Sampling by the probability-flow ODE, solved with torchdiffeq.

The ODE shares the marginals ``p_t`` of the forward SDE (Song et al., 2021, eq. 13)::

    dx/dt = f(x, t) - 1/2 g(t)^2 s(x, t),

so integrating it from ``x ~ p_T`` at ``T`` down to ``eps`` gives a sample of ``p_eps``,
deterministically. Solvers come from :func:`torchdiffeq.odeint`:

* adaptive (:data:`ADAPTIVE_METHODS`, e.g. ``"dopri5"``) with tolerances ``rtol``/``atol``;
* fixed step (:data:`FIXED_METHODS`, e.g. ``"rk4"``) on a given time grid.

**Staying inside [eps, T].** torchdiffeq's adaptive solvers (version 0.2.5) step past the last
output time and interpolate back to it, and their initial-step heuristic probes the vector field at
``t_0 + h_0`` for a trial ``h_0`` that can be far larger than ``T - eps`` (the probability-flow
velocity is near zero at ``T`` for a matched prior, which makes ``h_0`` huge). Past ``eps`` the
score is not trained and a VP std at ``t < 0`` is NaN. Two measures keep every evaluation inside:
the solver is told to land exactly on ``eps`` (its ``step_t`` option), so no accepted or rejected
step crosses it; and the velocity reads ``t`` clamped into ``[eps, T]``, which changes nothing
inside and covers the initial-step probe and torchdiffeq's one-ulp time perturbations.
"""

from __future__ import annotations

from torch import Tensor
from torchdiffeq import odeint

from scoresde.sde import SDE, ScoreFn

__all__ = ["ADAPTIVE_METHODS", "FIXED_METHODS", "ODE_METHODS", "probability_flow_solve"]

ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
"""Adaptive Runge–Kutta solvers of torchdiffeq, controlled by ``rtol`` and ``atol``."""

FIXED_METHODS = ("euler", "midpoint", "heun2", "heun3", "rk4")
"""Fixed-step Runge–Kutta solvers of torchdiffeq, stepping along the given time grid."""

ODE_METHODS = ADAPTIVE_METHODS + FIXED_METHODS


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
    batch, eps, T = x.shape[0], grid[-1], grid[0]

    def velocity(t: Tensor, y: Tensor) -> Tensor:
        drift, _ = flow.sde(y, t.clamp(eps, T).expand(batch))
        return drift

    if method in FIXED_METHODS:
        options = {"grid_constructor": lambda func, y0, t: grid}
    else:
        options = {"step_t": grid[-1:]}
    return odeint(velocity, x, times, rtol=rtol, atol=atol, method=method, options=options)
