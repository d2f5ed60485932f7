"""The SDE protocol, the reverse-time process, and the conventions every SDE shares.

A forward SDE on ``t in [0, T]`` turns data into noise::

    dx = f(x, t) dt + g(t) dw.

Given the score ``s(x, t) = grad_x log p_t(x)`` of its marginals, the same marginals are traced
backwards in time by the reverse-time SDE (Anderson, 1982) and by the probability-flow ODE::

    dx = [f(x, t) - g(t)^2 s(x, t)] dt + g(t) dw_bar          (reverse SDE, t from T to 0)
    dx = [f(x, t) - 1/2 g(t)^2 s(x, t)] dt                     (probability-flow ODE)

:class:`SDE` is the small protocol that every sampler, loss and likelihood uses. Shapes: ``x`` is
``(B, *D)`` and ``t`` is ``(B,)``; per-sample coefficients have shape ``(B,)`` and broadcast against
``x`` with :func:`batch_broadcast`.
"""

from __future__ import annotations

import abc
import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from scoresde.validation import check_int

__all__ = [
    "SDE",
    "ReverseSDE",
    "ScoreFn",
    "batch_broadcast",
    "gaussian_logp",
    "unchecked_times",
]

ScoreFn = Callable[[Tensor, Tensor], Tensor]
"""``score_fn(x, t) -> grad_x log p_t(x)``, ``x`` of shape ``(B, *D)``, ``t`` of shape ``(B,)``."""

_CHECK_TIMES: contextvars.ContextVar[bool] = contextvars.ContextVar("check_times", default=True)


@contextlib.contextmanager
def unchecked_times() -> Iterator[None]:
    """Skip the per-call range check on ``t`` inside this block.

    Checking that every ``t`` lies in ``[0, T]`` reads the tensor on the host, which forces a
    host-device synchronisation on an accelerator. Samplers, likelihoods and losses validate their
    time grid once and then run their loops inside this context.
    """
    token = _CHECK_TIMES.set(False)
    try:
        yield
    finally:
        _CHECK_TIMES.reset(token)


def batch_broadcast(c: Tensor, x: Tensor) -> Tensor:
    """View a per-sample coefficient ``c`` of shape ``(B,)`` as ``(B, 1, ..., 1)`` to match ``x``.

    A coefficient that already has ``x``'s number of dimensions is returned unchanged, so an SDE may
    also return a per-element diffusion.
    """
    if c.ndim >= x.ndim:
        return c
    return c.reshape(c.shape + (1,) * (x.ndim - c.ndim))


def gaussian_logp(z: Tensor, std: float | Tensor) -> Tensor:
    """``log N(z; 0, std^2 I)`` summed over all non-batch dimensions, shape ``(B,)``.

    With ``D = prod(z.shape[1:])``: ``-D/2 log(2 pi) - D log(std) - ||z||^2 / (2 std^2)``. The
    prior log-density of every built-in SDE; a user's SDE with a Gaussian prior can return it from
    :meth:`SDE.prior_logp`.
    """
    d = z[0].numel()
    sq = z.flatten(1).pow(2).sum(1)
    log_std = torch.log(torch.as_tensor(std, dtype=z.dtype, device=z.device))
    return -0.5 * d * math.log(2 * math.pi) - d * log_std - sq / (2 * std**2)


class SDE(abc.ABC):
    """The protocol of a forward SDE ``dx = f(x, t) dt + g(t) dw`` on ``t in [0, T]``.

    A subclass implements :attr:`T`, :meth:`sde`, :meth:`marginal_prob`, :meth:`prior_sampling` and
    :meth:`prior_logp`; everything else is derived and may be overridden. Every sampler, loss and
    likelihood in scoresde uses only these members, so a subclass works with all of them without
    changes to the library.

    Arguments:
        N: the number of steps of the SDE's discrete model (the discrete losses and the chain
            predictors use it; every sampler takes its own time grid).
    """

    #: The smallest time samplers integrate to by default (the reference's ``sampling_eps``).
    sampling_eps: float = 1e-3
    #: The time the likelihood starts from by default (the reference's ``1e-5``).
    likelihood_eps: float = 1e-5
    #: The variance of the ancestral step's noise (see :meth:`chain_coefficients`):
    #: ``"posterior"``, that of ``x_t`` given ``x_s`` and ``x_0`` (SMLD; DDIM with eta = 1), or
    #: ``"transition"``, ``v`` itself (DDPM's ``sigma_i^2 = beta_i``, Ho et al. 2020, as the
    #: reference implementation samples VP).
    ancestral_variance: str = "posterior"

    def __init__(self, N: int = 1000):
        self.N = check_int("N", N, minimum=1)

    @property
    @abc.abstractmethod
    def T(self) -> float:
        """The end time of the forward process."""

    @abc.abstractmethod
    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Drift ``f(x, t)`` (shape of ``x``) and diffusion ``g(t)`` (shape ``(B,)``)."""

    @abc.abstractmethod
    def marginal_prob(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean (shape of ``x``) and std ``(B,)`` of the Gaussian kernel ``p_0t(x_t | x_0 = x)``."""

    @abc.abstractmethod
    def prior_sampling(
        self, shape: Sequence[int], generator: torch.Generator | None = None
    ) -> Tensor:
        """Draw ``shape[0]`` samples of shape ``shape[1:]`` from the prior ``p_T``.

        Samplers call it with these two arguments only and cast the result to the dtype and device
        they were asked for; an implementation may accept more (keyword-only) arguments.
        """

    @abc.abstractmethod
    def prior_logp(self, z: Tensor) -> Tensor:
        """``log p_T(z)`` per sample, summed over all non-batch dimensions, shape ``(B,)``.

        :func:`gaussian_logp` is the usual answer for a Gaussian prior.
        """

    # -- derived ---------------------------------------------------------------------------------
    def kernel_coefficients(self, t: Tensor, ndim: int = 2) -> tuple[Tensor, Tensor]:
        """``alpha(t)``, ``sigma(t)`` of the kernel ``p_0t(x_t | x_0) = N(alpha x_0, sigma^2 I)``.

        Read off :meth:`marginal_prob` with ``x_0 = 1``, which is exact for every SDE whose kernel
        mean is ``alpha(t) x_0`` (every SDE with a linear drift). The probe has shape
        ``(B, 1, ..., 1)`` with ``ndim`` dimensions, so it broadcasts like a batch of data.

        Returns:
            ``(alpha, sigma)``, each of shape ``(B,)``.
        """
        probe = torch.ones((t.shape[0],) + (1,) * (ndim - 1), dtype=t.dtype, device=t.device)
        mean, std = self.marginal_prob(probe, t)
        return mean.reshape(t.shape[0]), std.reshape(t.shape[0])

    def log_snr(self, t: Tensor) -> Tensor:
        """``lambda(t) = log(alpha(t)^2 / sigma(t)^2)``, the kernel's log signal-to-noise ratio."""
        alpha, sigma = self.kernel_coefficients(t)
        return 2 * (torch.log(alpha) - torch.log(sigma))

    def time_at_log_snr(self, lam: Tensor, *, iterations: int = 64) -> Tensor:
        """The time ``t`` in ``[0, T]`` with ``lambda(t) = lam``: the inverse of :meth:`log_snr`.

        Found by bisection in float64 (``iterations`` halvings of ``[0, T]``: 64 reach float64's
        resolution), which needs ``lambda`` to decrease in ``t``, as it does for any SDE that adds
        noise; values of ``lam`` outside ``[lambda(T), lambda(0)]`` give the nearer end. Override it
        where a closed form exists.
        """
        lam64 = lam.to(torch.float64)
        lo = torch.zeros_like(lam64)
        hi = torch.full_like(lam64, float(self.T))
        with unchecked_times():
            for _ in range(iterations):
                mid = 0.5 * (lo + hi)
                later = self.log_snr(mid) > lam64  # lambda decreases: the answer lies later
                lo = torch.where(later, mid, lo)
                hi = torch.where(later, hi, mid)
        return (0.5 * (lo + hi)).to(lam.dtype)

    def chain_coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``alpha`` and ``sigma`` of the SDE's discrete chain at ``t``, each ``(B,)``.

        The chain predictors (``reverse_diffusion``, ``ancestral_sampling``) and the Langevin
        correctors step between grid times ``s > t`` with the transition ``x_s = a x_t + sqrt(v)
        z`` of this kernel, ``a = alpha(s) / alpha(t)``, ``v = sigma(s)^2 - a^2 sigma(t)^2``. The
        default is the continuous kernel (:meth:`kernel_coefficients`); an SDE with a discrete
        model (DDPM, SMLD) returns that model's kernel, so that its own grid gives its own chain.
        """
        return self.kernel_coefficients(t)

    def discretize(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """One step of the forward chain ``x_{i+1} = x_i + f_i + G_i z_i``, ``z_i ~ N(0, I)``.

        The default is Euler–Maruyama with ``dt = T / N``: ``f_i = f(x, t) dt`` and
        ``G_i = g(t) sqrt(dt)``.

        Returns:
            ``(f_i, G_i)``: the increment of the mean (shape of ``x``) and the noise scale ``(B,)``.
        """
        dt = self.T / self.N
        drift, diffusion = self.sde(x, t)
        return drift * dt, diffusion * math.sqrt(dt)

    def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> ReverseSDE:
        """The reverse-time SDE (or, with ``probability_flow=True``, the probability-flow ODE)."""
        return ReverseSDE(self, score_fn, probability_flow)

    def check_time(self, t: Tensor, name: str = "t") -> None:
        """Raise ``ValueError`` if any entry of ``t`` lies outside ``[0, T]`` (or is not finite)."""
        if not _CHECK_TIMES.get():
            return
        bad = ~((t >= 0) & (t <= self.T))
        if bool(bad.any()):
            value = t[bad][0].item()
            raise ValueError(f"{name} must lie in [0, T] = [0, {self.T}]; got {value!r}")


class ReverseSDE:
    """The reverse-time SDE, or probability-flow ODE, of ``forward`` with score ``score_fn``.

    Time still runs from ``0`` to ``T`` in its arguments; a solver steps it with ``dt < 0``::

        drift     = f(x, t) - c g(t)^2 s(x, t),   c = 1 (SDE) or 1/2 (ODE)
        diffusion = g(t) (SDE) or 0 (ODE)
    """

    def __init__(self, forward: SDE, score_fn: ScoreFn, probability_flow: bool = False):
        self.forward = forward
        self.score_fn = score_fn
        self.probability_flow = probability_flow
        self._c = 0.5 if probability_flow else 1.0

    @property
    def T(self) -> float:
        return self.forward.T

    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Drift and diffusion of the reverse process in the forward time variable."""
        drift, diffusion = self.forward.sde(x, t)
        score = self.score_fn(x, t)
        drift = drift - self._c * batch_broadcast(diffusion, x) ** 2 * score
        return drift, (torch.zeros_like(diffusion) if self.probability_flow else diffusion)
