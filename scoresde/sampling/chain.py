"""The SDE's own Gaussian chain between any two grid times, as the chain predictors and the
Langevin correctors read it.

For a kernel ``x_t | x_0 ~ N(A(t) x_0, S(t)^2 I)`` the forward transition from a time ``t`` to a
later time ``s`` is Gaussian::

    x_s = a x_t + sqrt(v) z,    a = A(s) / A(t),    v = S(s)^2 - a^2 S(t)^2,

so a step of a DDPM- or SMLD-like chain exists between any two times of any grid.
``(A, S) = sde.chain_coefficients(t)``: the DDPM or SMLD tables for the VP and VE SDEs (so that
their own grid ``linspace(T, eps, N)`` gives exactly the reference implementation's chain), the
continuous kernel for any other SDE.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoresde.sde import SDE

__all__ = ["chain_transitions", "chain_scale"]


def chain_transitions(sde: SDE, times: Tensor, who: str) -> tuple[Tensor, Tensor, Tensor]:
    """The chain's transition over each step of the grid, float64.

    Arguments:
        sde: the forward SDE.
        times: the float64 grid ``t_0 > t_1 > ... > t_n``.
        who: the predictor's name, for the error message.

    Returns:
        ``(a, v, post)``, each ``(n,)``: for step ``i`` from ``s = t_i`` down to ``t = t_{i+1}``,
        ``x_s = a_i x_t + sqrt(v_i) z``, and ``post_i = S(t)^2 / S(s)^2``, the factor from ``v`` to
        the variance of ``x_t`` given ``x_s`` and ``x_0``.

    Raises:
        ValueError: a step over which the chain does not move (``v <= 0``): two grid times inside
            one step of a discrete chain.
    """
    A, S = (c.to(torch.float64) for c in sde.chain_coefficients(times))
    a = A[:-1] / A[1:]
    v = S[:-1] ** 2 - a**2 * S[1:] ** 2
    if not bool((v > 0).all()):
        i = int(torch.nonzero(~(v > 0))[0])
        raise ValueError(
            f"predictor={who!r} steps along the discrete chain of {sde!r}, which does not move "
            f"between t={times[i].item():.6g} and t={times[i + 1].item():.6g} (both in one of its "
            f"{sde.N} steps of {sde.T / (sde.N - 1):.4g} in time); every step of the grid must "
            "cross one of the chain's: use fewer or longer steps, or the 'euler_maruyama' predictor"
        )
    return a, v, S[1:] ** 2 / S[:-1] ** 2


def chain_scale(sde: SDE, times: Tensor) -> Tensor:
    """``a_i^2 = A(t_i)^2 / A(t_{i+1})^2`` (with ``A(t_{n+1}) = 1``), float64, ``(n + 1,)``.

    The factor of the Langevin correctors' step size at ``t_i`` (Song et al., 2021, Algorithms 4
    and 5, where it is ``alpha_i = 1 - beta_i`` for DDPM and 1 for SMLD): the chain's squared scale
    over the step below ``t_i``. On the reference grid it is exactly the reference's ``alpha_i``.
    """
    A = sde.chain_coefficients(times)[0].to(torch.float64)
    below = torch.cat([A[1:], A.new_ones(1)])
    return (A / below) ** 2
