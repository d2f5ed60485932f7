"""ODE integration with torchdiffeq that never evaluates the vector field outside its interval.

:func:`odeint_within` solves ``dy/dt = func(t, y)``, ``y(t_0) = y_0``, from ``t_0`` to ``t_1``
(increasing or decreasing) and guarantees that ``func`` only ever sees times in
``[min(t_0, t_1), max(t_0, t_1)]``. scoresde integrates the probability-flow ODE of an SDE on
``[eps, T]`` with it: the sampler from ``T`` down to ``eps``, the likelihood from ``eps`` up to
``T``. Outside that interval the score model was never trained, and SDE coefficients may be
undefined (a VP marginal std at ``t < 0`` is NaN).

**What the guard is for.** :func:`torchdiffeq.odeint` (version 0.2.5) evaluates ``func`` outside
``[t_0, t_1]`` in three ways:

1. an adaptive solver takes its last step whole, past ``t_1``, and interpolates back to ``t_1``;
2. an adaptive solver picks its first step by the heuristic of Hairer, Nørsett and Wanner
   (*Solving ODEs I*, sec. II.4), which probes ``func`` at ``t_0 + h_0`` with
   ``h_0 = 0.01 ||y_0|| / ||func(t_0, y_0)||`` (norms weighted by the tolerances). Where the
   field is small at ``t_0``, ``h_0`` dwarfs the interval: the probability-flow velocity of a
   VE SDE near ``eps`` gives a probe at ``t = 10.8`` for ``T = 1``;
3. round-off: a stage time ``t_0 + c h`` computed in floating point (Heun's second stage is
   ``t_0 + h``, not ``t_1``) can land one unit in the last place outside.

**The guard.** Adaptive methods get ``t_1`` as a prescribed step point (torchdiffeq's ``step_t``):
a step that would cross it is shortened to end on it, so every accepted or rejected step lies
inside and the value at ``t_1`` comes from a step that ends there, not from interpolating back
over one that went past (1). Every method's ``func`` then reads ``t`` clamped into the interval
(torchdiffeq passes ``t`` in the state's dtype, so the ends are those of the interval rounded to
that dtype): the identity for every time inside, it moves only the start-up probe (2), whose
result merely seeds the first trial step that the error control accepts or shrinks, and
round-off (3). The guard adds no evaluation of ``func``, so counts of calls stay exact. (A fixed
first step, such as 1% of the interval, would avoid the probe too, but is a tuning constant: on
the Gaussian-mixture ODEs of the tests it saved as many evaluations as it cost with ``dopri5``,
and cost up to 40% more with ``dopri8``.)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torchdiffeq import odeint

from scoresde.validation import check_number

__all__ = [
    "ADAPTIVE_METHODS",
    "FIXED_METHODS",
    "ODE_METHODS",
    "State",
    "check_tolerances",
    "odeint_within",
]

ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
"""torchdiffeq's Runge–Kutta methods with error control: ``rtol`` and ``atol`` set their steps."""

FIXED_METHODS = ("euler", "midpoint", "heun2", "heun3", "rk4")
"""torchdiffeq's fixed-step Runge–Kutta methods: they step along a given time grid."""

ODE_METHODS = ADAPTIVE_METHODS + FIXED_METHODS
"""Every method :func:`odeint_within` accepts."""

State = Tensor | tuple[Tensor, ...]
"""An ODE state: a tensor or a tuple of tensors (integrated jointly, as one vector)."""


def check_tolerances(rtol: float, atol: float, dtype: torch.dtype) -> None:
    """Raise ``ValueError`` unless ``rtol`` and ``atol`` are finite numbers no smaller than the
    resolution of ``dtype`` (tighter ones ask for steps torchdiffeq cannot take: it stops with an
    underflow assertion)."""
    resolution = torch.finfo(dtype).eps
    for name, value in (("rtol", rtol), ("atol", atol)):
        check_number(name, value, resolution)


def _check_monotone(name: str, t: Tensor, decreasing: bool) -> None:
    """Raise unless ``t`` is 1-D with at least 2 entries, strictly monotone in the direction."""
    if t.ndim == 1 and len(t) >= 2:
        steps = -t.diff() if decreasing else t.diff()
        if bool((steps > 0).all()):
            return
    direction = "decreasing" if decreasing else "increasing"
    raise ValueError(f"{name} must be a 1-D tensor of >= 2 strictly {direction} times; got {t}")


def odeint_within(
    func: Callable[[Tensor, State], State],
    y0: State,
    times: Tensor,
    *,
    method: str,
    rtol: float,
    atol: float,
    grid: Tensor | None = None,
) -> State:
    """Solve ``dy/dt = func(t, y)``, ``y(times[0]) = y0``, at ``times``, with ``func`` evaluated
    only for ``t`` between ``times[0]`` and ``times[-1]``.

    Integrates with :func:`torchdiffeq.odeint` under the guard described in this module's
    docstring; in either direction of time.

    Arguments:
        func: the vector field ``(t, y) -> dy/dt``; ``t`` is a 0-d tensor in the state's dtype,
            within the interval as that dtype represents its ends.
        y0: the state at ``times[0]``: a tensor or a tuple of tensors.
        times: the output times, 1-D and strictly increasing or decreasing; ``times[0]`` and
            ``times[-1]`` are the ends of the interval.
        method: one of :data:`ODE_METHODS`.
        rtol: relative tolerance of an adaptive method; unused by fixed-step methods.
        atol: absolute tolerance of an adaptive method; unused by fixed-step methods.
        grid: the step times of a fixed-step method (required for those, refused by adaptive
            ones), strictly monotone in the direction of ``times`` from ``times[0]`` to
            ``times[-1]``; a step from ``grid[i]`` to ``grid[i + 1]`` evaluates ``func`` at its
            start, at its method's stages in between and, for some methods, at its end.

    Returns:
        the solution at ``times``: for a tensor ``y0``, shape ``(len(times), *y0.shape)``; for a
        tuple, a tuple of such. A fixed-step method interpolates linearly between grid times.

    Raises:
        ValueError: for an unknown ``method``, a ``grid`` missing for a fixed-step method or given
            to an adaptive one, non-monotone ``times`` or ``grid``, or a ``grid`` whose ends are
            not those of ``times``.
    """
    if method not in ODE_METHODS:
        allowed = ", ".join(map(repr, ODE_METHODS))
        raise ValueError(f"method must be one of {allowed}; got {method!r}")
    decreasing = times.ndim == 1 and len(times) >= 2 and bool(times[-1] < times[0])
    _check_monotone("times", times, decreasing)
    if method in FIXED_METHODS:
        if grid is None:
            raise ValueError(f"the fixed-step method {method!r} needs a grid of step times")
        _check_monotone("grid", grid, decreasing)
        if not (grid[0] == times[0] and grid[-1] == times[-1]):
            raise ValueError(
                f"grid must run from times[0] = {times[0].item()} to times[-1] = "
                f"{times[-1].item()}; got {grid[0].item()} to {grid[-1].item()}"
            )
        options = {"grid_constructor": lambda f, y, t: grid}
    else:
        if grid is not None:
            raise ValueError(
                f"the adaptive method {method!r} chooses its own steps from rtol and atol; "
                f"give a grid only to the fixed-step methods {FIXED_METHODS}"
            )
        options = {"step_t": times[-1:]}
    lo, hi = times[[0, -1]].sort().values

    def inside(t: Tensor, y: State) -> State:
        return func(t.clamp(lo.to(t.dtype), hi.to(t.dtype)), y)

    return odeint(inside, y0, times, rtol=rtol, atol=atol, method=method, options=options)
