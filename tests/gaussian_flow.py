"""The probability-flow ODE of Gaussian data in closed form: the truth for deterministic solvers.

For data ``N(mu, s^2 I)`` and a kernel ``N(alpha(t) x0, sigma(t)^2 I)`` the marginal is
``p_t = N(alpha mu, v I)`` with ``v(t) = alpha^2 s^2 + sigma^2``, and the probability-flow ODE
``dx/dt = f x - g^2 / 2 s(x, t)`` keeps ``(x - alpha mu) / sqrt(v)`` constant (differentiate: both
sides grow at the rate ``f + g^2 / (2 v)``), so its flow map from ``T`` to ``t`` is affine::

    x(t) = alpha(t) mu + sqrt(v(t) / v(T)) (x(T) - alpha(T) mu).

With ``s = 0`` (a point mass) the data prediction ``E[x_0 | x_t] = mu`` is constant, where the
exponential integrators (DDIM, DPM-Solver++) are exact.
"""

import torch
from torch import Tensor
from user_sde import TimeVaryingOU

from scoresde import SDE, VESDE, VPSDE, LinearSDE, SubVPSDE

#: One SDE of every kind with a linear drift, for the solvers' tests: the closed forms, a user's
#: ``LinearSDE(f, g)`` and a user's subclass of the bare protocol.
SDES = {
    "vp": lambda: VPSDE(),
    "vp-cosine": lambda: VPSDE(schedule="cosine"),
    "subvp": lambda: SubVPSDE(),
    "ve": lambda: VESDE(sigma_max=20.0),
    "linear": lambda: LinearSDE(
        lambda t: -2.0 * torch.ones_like(t), lambda t: 2.0 * torch.ones_like(t)
    ),
    "user": lambda: TimeVaryingOU(),
}
#: The mean of the Gaussian data.
MU = torch.tensor([1.5, -0.5], dtype=torch.float64)


def _kernel(sde: SDE, t: Tensor) -> tuple[Tensor, Tensor]:
    alpha, sigma = sde.kernel_coefficients(t.to(torch.float64))
    return alpha, sigma


def gaussian_score(sde: SDE, mu: Tensor, s: float):
    """The exact score ``-(x - alpha mu) / v`` of ``p_t`` for data ``N(mu, s^2 I)``."""

    def score_fn(x: Tensor, t: Tensor) -> Tensor:
        alpha, sigma = (c.to(x.dtype)[:, None] for c in _kernel(sde, t))
        v = alpha**2 * s**2 + sigma**2
        return -(x - alpha * mu.to(x.dtype)) / v

    return score_fn


def gaussian_flow(sde: SDE, mu: Tensor, s: float, x_T: Tensor, T: float, t: float) -> Tensor:
    """The exact probability-flow map of ``x_T`` at time ``T`` to time ``t``, float64."""
    alpha, sigma = _kernel(sde, torch.tensor([T, t], dtype=torch.float64))
    v = alpha**2 * s**2 + sigma**2
    mu = mu.to(torch.float64)
    return alpha[1] * mu + (v[1] / v[0]).sqrt() * (x_T.to(torch.float64) - alpha[0] * mu)
