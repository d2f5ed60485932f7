"""The kernels of the built-in SDEs written out here, independently of ``scoresde.sde``.

A test that builds its oracle from ``sde.kernel_coefficients`` cannot see a formula that is wrong
in the library but wrong consistently (a VE ``sigma(t)`` off in both ``marginal_std`` and ``g``):
the oracle's score would follow the wrong kernel. The samplers' and likelihoods' oracles are built
from :class:`WrittenKernel` instead, whose ``alpha(t)``, ``sigma(t)``, ``f(t)`` and ``g(t)`` come
from the papers' formulas, with the reference implementation's default parameters:

* VP (Song et al. 2021, eq. 11; ``beta(t) = 0.1 + 19.9 t``): ``B(t) = 0.1 t + 9.95 t^2``,
  ``alpha = exp(-B / 2)``, ``sigma^2 = 1 - exp(-B)``, ``f = -beta / 2``, ``g = sqrt(beta)``;
* sub-VP (eq. 12): the same ``alpha``, ``sigma = 1 - exp(-B)``, ``g^2 = beta (1 - exp(-2 B))``;
* VE (eq. 9; ``sigma_min = 0.01``, ``sigma_max = 50``): ``alpha = 1``,
  ``sigma = 0.01 * 5000^t``, ``f = 0``, ``g = sigma sqrt(2 log 5000)``.
"""

import math

import torch
from torch import Tensor


def _vp(t: Tensor) -> dict[str, Tensor]:
    beta = 0.1 + 19.9 * t
    B = 0.1 * t + 9.95 * t**2
    return {
        "alpha": torch.exp(-B / 2),
        "sigma": torch.sqrt(-torch.expm1(-B)),
        "f": -beta / 2,
        "g": torch.sqrt(beta),
    }


def _subvp(t: Tensor) -> dict[str, Tensor]:
    beta = 0.1 + 19.9 * t
    B = 0.1 * t + 9.95 * t**2
    return {
        "alpha": torch.exp(-B / 2),
        "sigma": -torch.expm1(-B),
        "f": -beta / 2,
        "g": torch.sqrt(beta * -torch.expm1(-2 * B)),
    }


def _ve(t: Tensor) -> dict[str, Tensor]:
    sigma = 0.01 * 5000.0**t
    return {
        "alpha": torch.ones_like(t),
        "sigma": sigma,
        "f": torch.zeros_like(t),
        "g": sigma * math.sqrt(2 * math.log(5000.0)),
    }


FORMULAS = {"vp": _vp, "subvp": _subvp, "ve": _ve}


class WrittenKernel:
    """``kernel_coefficients`` of a built-in SDE (default parameters) from the formulas above:
    what ``GaussianMixture.score_fn`` and ``log_prob`` need of an SDE."""

    T = 1.0

    def __init__(self, kind: str):
        self.formula = FORMULAS[kind]

    def coefficients(self, t: Tensor) -> dict[str, Tensor]:
        """``alpha, sigma, f, g`` at ``t``, computed in float64, in ``t``'s dtype."""
        values = self.formula(t.to(torch.float64))
        return {name: value.to(t.dtype) for name, value in values.items()}

    def kernel_coefficients(self, t: Tensor, ndim: int = 2) -> tuple[Tensor, Tensor]:
        c = self.coefficients(t)
        return c["alpha"], c["sigma"]
