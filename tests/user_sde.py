"""A user-defined SDE written the way a user would: only the abstract members of ``scoresde.SDE``.

An Ornstein–Uhlenbeck process with a time-varying rate,
``dx = -theta(t) x dt + s sqrt(2 theta(t)) dw`` with ``theta(t) = a + b t``, whose kernel is
``N(alpha(t) x0, s^2 (1 - alpha(t)^2) I)`` with ``alpha(t) = exp(-(a t + b t^2 / 2))``. It does not
derive from ``LinearSDE``, so tests that pass with it show the library needs nothing more.
"""

import math

import torch

from scoresde import SDE


class TimeVaryingOU(SDE):
    def __init__(self, a: float = 2.0, b: float = 6.0, s: float = 2.0, N: int = 1000):
        super().__init__(N)
        self.a, self.b, self.s = a, b, s

    @property
    def T(self) -> float:
        return 1.0

    def _theta(self, t):
        return self.a + self.b * t

    def _alpha(self, t):
        return torch.exp(-(self.a * t + 0.5 * self.b * t**2))

    def sde(self, x, t):
        theta = self._theta(t)
        drift = -theta.reshape(-1, *([1] * (x.ndim - 1))) * x
        return drift, self.s * torch.sqrt(2 * theta)

    def marginal_prob(self, x, t):
        alpha = self._alpha(t)
        mean = alpha.reshape(-1, *([1] * (x.ndim - 1))) * x
        return mean, self.s * torch.sqrt(1 - alpha**2)

    def prior_sampling(self, shape, generator=None):
        # Exactly the signature: samplers cast and move the draw themselves.
        return self.s * torch.randn(tuple(shape), generator=generator)

    def prior_logp(self, z):
        d = z[0].numel()
        return -0.5 * d * math.log(2 * math.pi * self.s**2) - z.flatten(1).pow(2).sum(1) / (
            2 * self.s**2
        )
