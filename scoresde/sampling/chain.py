"""The SDE's own discrete chain, as the samplers read it off :meth:`SDE.discretize`.

Every SDE has an ``N``-step forward chain ``x_{i+1} = x_i + f_i(x_i) + G_i z_i`` on ``[0, T]``: DDPM
for :class:`~scoresde.VPSDE`, SMLD for :class:`~scoresde.VESDE`, Euler–Maruyama with ``dt = T / N``
for any other. The samplers reach it only through ``sde.discretize(x, t)``, in which the SDE maps a
time to its step, so they never branch on SDE types. The helpers here evaluate it once on a whole
time grid, with a probe ``x = 1`` of shape ``(n, 1, ..., 1)`` that broadcasts like a batch of data,
and check before any sampling work that a predictor can follow it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoresde.sde import SDE

__all__ = ["chain_probe", "chain_scale", "check_chain_finite", "check_chain_grid"]


def chain_probe(t: Tensor, ndim: int) -> Tensor:
    """Ones of shape ``(len(t), 1, ..., 1)`` with ``ndim`` dimensions, in ``t``'s dtype and device.

    Passed to an SDE's methods as ``x``, one row per time of ``t``, it reads their coefficients.
    """
    return torch.ones((t.shape[0],) + (1,) * (ndim - 1), dtype=t.dtype, device=t.device)


def chain_scale(sde: SDE, t: Tensor, ndim: int) -> Tensor:
    """``a_i = (1 + f_i(1))^2``, the squared factor by which one forward step scales the data.

    The Langevin correctors' step sizes are multiplied by it (Song et al., 2021, Algorithms 4 and
    5, where it is ``alpha_i = 1 - beta_i`` for DDPM and ``1`` otherwise). Read off
    :meth:`SDE.discretize` at ``x = 1``, it is exactly ``1 - beta_i`` for the DDPM chain of
    :class:`~scoresde.VPSDE`, ``1`` for the SMLD chain of :class:`~scoresde.VESDE`, and
    ``(1 + f(t) dt)^2 ~ 1 - beta(t) dt`` for the Euler–Maruyama chain of
    :class:`~scoresde.SubVPSDE` or a user's linear SDE (where the reference implementation crashes).

    Arguments:
        sde: the forward SDE.
        t: times, shape ``(n,)``, inside ``[0, T]``.
        ndim: number of dimensions of a batch of data ``(B, *D)``.

    Returns:
        ``a``, shape ``(n,)``.
    """
    f, _ = sde.discretize(chain_probe(t, ndim), t)
    return (1 + f).reshape(t.shape[0], -1).mean(1).pow(2)


def check_chain_finite(predictor: str, sde: SDE, grid: Tensor, steps: tuple[Tensor, ...]) -> None:
    """Raise ``ValueError`` if the chain's coefficients at some grid time are not finite.

    Arguments:
        predictor: the predictor's name, for the message.
        sde: the forward SDE, for the message.
        grid: the times, shape ``(n,)``.
        steps: the outputs of one call of a chain step at the probe :func:`chain_probe` of
            ``grid``, one row per grid time.
    """
    finite = torch.stack([c.reshape(len(grid), -1).isfinite().all(1) for c in steps]).all(0)
    if not bool(finite.all()):
        bad = grid[~finite][0].item()
        raise ValueError(
            f"predictor={predictor!r}: the discrete chain of {sde!r} is not finite at t={bad:.4g} "
            "(a DDPM chain needs every beta_i = beta(t) T / N < 1); build the SDE with a larger N"
        )


def check_chain_grid(predictor: str, sde: SDE, num_steps: int, eps: float) -> None:
    """Raise ``ValueError`` unless the grid ``linspace(T, eps, num_steps)`` takes the SDE's chain
    one step per grid time, each step once: ``num_steps == N`` and ``eps < T / (N - 1)``.

    The chain's ``N`` steps tile ``[0, T]``, and the SDE recovers a step from a time; VP and VE use
    the reference implementation's ``i = floor(t (N - 1) / T)``. The ``k``-th time of the grid sits
    at ``t_k (N - 1) / T = (N - 1 - k) + k eps / T``: it lands in step ``N - 1 - k`` for every
    ``k`` exactly when ``eps (N - 1) < T``. Beyond that bound grid times fall behind the chain,
    so some steps are taken twice and the last ones never (``eps = 0.3``, ``N = 200``: 59 steps
    repeated, steps 0 to 58 never reached) and the samples are wrong. For an Euler–Maruyama chain
    (step ``T / N``) the same bound keeps the grid's spacing ``(T - eps) / (N - 1)`` within a
    factor ``1 +- 1 / (N - 1)`` of the chain's step.

    Arguments:
        predictor: the predictor's name, for the message.
        sde: the forward SDE.
        num_steps: the number of grid times.
        eps: the grid's last time.
    """
    N, T = sde.N, float(sde.T)
    if num_steps != N:
        raise ValueError(
            f"predictor={predictor!r} follows the SDE's {N}-step discrete chain, so num_steps "
            f"must equal sde.N = {N}, got num_steps={num_steps}; build the SDE with "
            f"N={num_steps} to sample with {num_steps} steps"
        )
    if not eps * (N - 1) < T:
        raise ValueError(
            f"predictor={predictor!r} follows the SDE's {N}-step discrete chain, which maps the "
            f"grid from T = {T} to eps one-to-one onto its steps only for eps < T / (N - 1) = "
            f"{T / (N - 1):.4g}, got eps={eps!r}; use a smaller eps, a smaller N, or the "
            "'euler_maruyama' predictor"
        )
