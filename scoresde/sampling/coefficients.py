"""Per-time scalar coefficients of an SDE, read off its protocol methods with a constant-one probe.

Samplers need a few numbers that depend on time only: the kernel's scale ``alpha(t)`` and std
``sigma(t)`` (Tweedie denoising, annealed Langevin) and the per-step scale of the forward chain
(the Langevin corrector). Rather than branching on SDE types, they are read off the SDE's own
methods applied to ``x = 1``, once per time grid::

    (alpha(t) * 1, sigma(t)) = sde.marginal_prob(1, t)          exact for any linear-Gaussian kernel
    (f_i(1), G_i)            = sde.discretize(1, t_i)           x_{i+1} = x_i + f_i(x_i) + G_i z

The probe has shape ``(n, 1, ..., 1)`` with the data's number of dimensions, so it broadcasts like
a batch of data in every SDE whose coefficients act elementwise (every linear SDE does).
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoresde.sde import SDE

__all__ = ["kernel_coefficients", "chain_scale"]


def _ones_probe(t: Tensor, ndim: int) -> Tensor:
    """Ones of shape ``(len(t), 1, ..., 1)`` (``ndim`` dimensions) in ``t``'s dtype and device."""
    return torch.ones((t.shape[0],) + (1,) * (ndim - 1), dtype=t.dtype, device=t.device)


def kernel_coefficients(sde: SDE, t: Tensor, ndim: int) -> tuple[Tensor, Tensor]:
    """``alpha(t)``, ``sigma(t)`` of the kernel ``p_0t(x_t | x_0) = N(alpha(t) x_0, sigma(t)^2 I)``.

    Arguments:
        sde: any SDE with a linear-Gaussian kernel.
        t: times, shape ``(n,)``, inside ``[0, T]``.
        ndim: number of dimensions of a batch of data ``(B, *D)``.

    Returns:
        ``(alpha, sigma)``, each of shape ``(n,)``.
    """
    mean, std = sde.marginal_prob(_ones_probe(t, ndim), t)
    return mean.reshape(t.shape[0]), std.reshape(t.shape[0])


def chain_scale(sde: SDE, t: Tensor, ndim: int) -> Tensor:
    """``a_i = (1 + f_i(1))^2``, the squared factor by which one forward step scales the data.

    The Langevin corrector's step size is multiplied by it (Song et al., 2021, Algorithm 4, where
    it is ``alpha_i = 1 - beta_i`` for DDPM and ``1`` otherwise). Read off :meth:`SDE.discretize`,
    it is exactly ``1 - beta_i`` for the DDPM chain of :class:`~scoresde.VPSDE`, ``1`` for the SMLD
    chain of :class:`~scoresde.VESDE`, and ``(1 + f(t) dt)^2 ~ 1 - beta(t) dt`` for the
    Euler–Maruyama chain of :class:`~scoresde.SubVPSDE` or a user's linear SDE (where the
    reference implementation crashes).

    Arguments:
        sde: the forward SDE.
        t: times, shape ``(n,)``, inside ``[0, T]``.
        ndim: number of dimensions of a batch of data ``(B, *D)``.

    Returns:
        ``a``, shape ``(n,)``.
    """
    f, _ = sde.discretize(_ones_probe(t, ndim), t)
    return (1 + f).reshape(t.shape[0], -1).mean(1).pow(2)
