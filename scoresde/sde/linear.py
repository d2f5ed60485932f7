"""SDEs with a linear drift, ``dx = f(t) x dt + g(t) dw``: their Gaussian kernel and prior.

The perturbation kernel of such an SDE is ``p_0t(x_t | x_0) = N(alpha(t) x_0, sigma(t)^2 I)`` with::

    alpha(t)   = exp(int_0^t f(s) ds)
    sigma(t)^2 = alpha(t)^2 (sigma_0^2 + int_0^t g(s)^2 / alpha(s)^2 ds),

so ``alpha`` and ``sigma`` determine :meth:`~scoresde.SDE.marginal_prob`, and ``f`` and ``g`` the
SDE itself. :class:`LinearDriftSDE` derives the whole protocol from these four functions; the
built-in SDEs give them in closed form (:mod:`scoresde.sde.closed_form`), and
:class:`~scoresde.LinearSDE` integrates them from a user's ``f`` and ``g``
(:mod:`scoresde.sde.numerical`).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import torch
from torch import Tensor

from scoresde.sde.base import SDE, batch_broadcast, gaussian_logp

__all__ = ["LinearDriftSDE"]


def _check_batch_time(t: Tensor, x: Tensor | None = None) -> None:
    """Raise ``ValueError`` unless ``t`` has shape ``(B,)`` (``B = x.shape[0]`` given ``x``): a
    ``(B, 1)`` time would broadcast against the data into wrong numbers. Reads shapes only."""
    if t.ndim != 1 or (x is not None and t.shape[0] != x.shape[0]):
        batch = "(B,)" if x is None else f"({x.shape[0]},), one time per sample of x"
        raise ValueError(f"t must have shape {batch}; got shape {tuple(t.shape)}")


class LinearDriftSDE(SDE):
    """An SDE ``dx = f(t) x dt + g(t) dw`` with kernel ``N(alpha(t) x_0, sigma(t)^2 I)`` and prior
    ``N(0, prior_std^2 I)``.

    A subclass implements :attr:`T`, :meth:`f`, :meth:`g`, :meth:`log_mean_coeff` (``log alpha``)
    and :meth:`marginal_std` (``sigma``), and sets :attr:`prior_std`.
    """

    #: Std of the Gaussian prior ``N(0, prior_std^2 I)``.
    prior_std: float = 1.0

    @abc.abstractmethod
    def f(self, t: Tensor) -> Tensor:
        """The drift coefficient ``f(t)``, shape ``(B,)``."""

    @abc.abstractmethod
    def g(self, t: Tensor) -> Tensor:
        """The diffusion coefficient ``g(t)``, shape ``(B,)``."""

    @abc.abstractmethod
    def log_mean_coeff(self, t: Tensor) -> Tensor:
        """``log alpha(t) = int_0^t f(s) ds``, shape ``(B,)``."""

    @abc.abstractmethod
    def marginal_std(self, t: Tensor) -> Tensor:
        """``sigma(t)``, the std of the kernel, shape ``(B,)``."""

    def mean_coeff(self, t: Tensor) -> Tensor:
        """``alpha(t)``, the scale of the data in the kernel."""
        return torch.exp(self.log_mean_coeff(t))

    def kernel_coefficients(self, t: Tensor, ndim: int = 2) -> tuple[Tensor, Tensor]:
        """``alpha(t)`` and ``sigma(t)``, each ``(B,)``, straight from the coefficient functions."""
        _check_batch_time(t)
        self.check_time(t)
        return self.mean_coeff(t), self.marginal_std(t)

    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """``f(t) x`` and ``g(t)``."""
        _check_batch_time(t, x)
        self.check_time(t)
        return batch_broadcast(self.f(t), x) * x, self.g(t)

    def marginal_prob(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """``alpha(t) x`` and ``sigma(t)``."""
        _check_batch_time(t, x)
        self.check_time(t)
        return batch_broadcast(self.mean_coeff(t), x) * x, self.marginal_std(t)

    def prior_sampling(
        self,
        shape: Sequence[int],
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """``z ~ N(0, prior_std^2 I)``, on the generator's device unless ``device`` is given."""
        if device is None and generator is not None:
            device = generator.device
        z = torch.randn(tuple(shape), generator=generator, dtype=dtype, device=device)
        return z * self.prior_std

    def prior_logp(self, z: Tensor) -> Tensor:
        """``log N(z; 0, prior_std^2 I)`` summed over non-batch dimensions."""
        return gaussian_logp(z, self.prior_std)
