"""Forward SDEs, their perturbation kernels, priors, discretisations and reverses.

A forward SDE on ``t in [0, T]`` turns data into noise::

    dx = f(x, t) dt + g(t) dw.

Given the score ``s(x, t) = grad_x log p_t(x)`` of its marginals, the same marginals are traced
backwards in time by the reverse-time SDE (Anderson, 1982) and by the probability-flow ODE::

    dx = [f(x, t) - g(t)^2 s(x, t)] dt + g(t) dw_bar          (reverse SDE, t from T to 0)
    dx = [f(x, t) - 1/2 g(t)^2 s(x, t)] dt                     (probability-flow ODE)

:class:`SDE` is the small protocol every sampler and likelihood uses; :class:`LinearSDE` covers the
SDEs whose drift is linear in ``x``, ``dx = f(t) x dt + g(t) dw``, whose perturbation kernel is the
Gaussian ``N(alpha(t) x0, sigma(t)^2 I)`` with::

    alpha(t)   = exp(int_0^t f(s) ds)
    sigma(t)^2 = alpha(t)^2 (sigma_0^2 + int_0^t g(s)^2 / alpha(s)^2 ds).

:class:`VPSDE`, :class:`SubVPSDE` and :class:`VESDE` are the three SDEs of Song et al. (2021)
with the reference implementation's defaults; they override the numerical integrals with closed
forms.

Shapes: ``x`` is ``(B, *D)`` and ``t`` is ``(B,)``; per-sample coefficients are returned with shape
``(B,)`` and broadcast against ``x`` with :func:`batch_broadcast`.
"""

from __future__ import annotations

import abc
import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

ScoreFn = Callable[[Tensor, Tensor], Tensor]
"""``score_fn(x, t) -> grad_x log p_t(x)``, ``x`` of shape ``(B, *D)``, ``t`` of shape ``(B,)``."""

TimeFn = Callable[[Tensor], Tensor]

__all__ = [
    "SDE",
    "LinearSDE",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "ReverseSDE",
    "ScoreFn",
    "batch_broadcast",
    "unchecked_times",
]

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


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _positive_number(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _increasing_range(lo_name: str, lo: float, hi_name: str, hi: float) -> None:
    _positive_number(lo_name, lo)
    _positive_number(hi_name, hi)
    if not lo < hi:
        raise ValueError(f"{lo_name} must be < {hi_name}, got {lo_name}={lo!r}, {hi_name}={hi!r}")


def _gaussian_logp(z: Tensor, std: float | Tensor) -> Tensor:
    """``log N(z; 0, std^2 I)`` summed over all non-batch dimensions, shape ``(B,)``."""
    d = z[0].numel()
    sq = z.flatten(1).pow(2).sum(1)
    log_std = torch.log(torch.as_tensor(std, dtype=z.dtype, device=z.device))
    return -0.5 * d * math.log(2 * math.pi) - d * log_std - sq / (2 * std**2)


class SDE(abc.ABC):
    """The protocol of a forward SDE ``dx = f(x, t) dt + g(t) dw`` on ``t in [0, T]``.

    A subclass implements :attr:`T`, :meth:`sde`, :meth:`marginal_prob`, :meth:`prior_sampling` and
    :meth:`prior_logp`; :meth:`discretize` and :meth:`reverse` are derived and may be overridden.
    Every sampler, loss and likelihood in scoresde uses only these members, so a subclass works with
    all of them without changes to the library.

    Arguments:
        N: number of discretisation steps, the default number of sampling steps.
    """

    #: The smallest time samplers integrate to by default (the reference's ``sampling_eps``).
    sampling_eps: float = 1e-3

    def __init__(self, N: int = 1000):
        self.N = _positive_int("N", N)

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
        """``log p_T(z)`` per sample, summed over all non-batch dimensions, shape ``(B,)``."""

    def kernel_coefficients(self, t: Tensor, ndim: int = 2) -> tuple[Tensor, Tensor]:
        """``alpha(t)``, ``sigma(t)`` of the kernel ``p_0t(x_t | x_0) = N(alpha x_0, sigma^2 I)``.

        Read off :meth:`marginal_prob` with ``x_0 = 1``, which is exact for every linear SDE (and
        every SDE whose kernel mean is ``alpha(t) x_0``). The probe has shape ``(B, 1, ..., 1)``
        with ``ndim`` dimensions, so it broadcasts like a batch of data ``(B, *D)``.

        Returns:
            ``(alpha, sigma)``, each of shape ``(B,)``.
        """
        probe = torch.ones((t.shape[0],) + (1,) * (ndim - 1), dtype=t.dtype, device=t.device)
        mean, std = self.marginal_prob(probe, t)
        return mean.reshape(t.shape[0]), std.reshape(t.shape[0])

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

    def ancestral_step(self, x: Tensor, t: Tensor, score: Tensor) -> tuple[Tensor, Tensor]:
        """One step of the reverse Markov chain of the SDE's discrete model (ancestral sampling).

        Only SDEs with a discrete model (DDPM for :class:`VPSDE`, SMLD for :class:`VESDE`) define
        it; the base class raises.

        Returns:
            ``(x_mean, std)``: the next sample is ``x_mean + std * z`` with ``z ~ N(0, I)``.
        """
        raise NotImplementedError(
            f"ancestral sampling needs a discrete Markov chain, which {type(self).__name__} "
            "does not define; use predictor='reverse_diffusion' or 'euler_maruyama', or implement "
            f"{type(self).__name__}.ancestral_step"
        )

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
            raise ValueError(f"{name} must lie in [0, T] = [0, {self.T}], got {value!r}")


class ReverseSDE:
    """The reverse-time SDE, or probability-flow ODE, of ``sde`` with score ``score_fn``.

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

    @property
    def N(self) -> int:
        return self.forward.N

    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Drift and diffusion of the reverse process in the forward time variable."""
        drift, diffusion = self.forward.sde(x, t)
        score = self.score_fn(x, t)
        drift = drift - self._c * batch_broadcast(diffusion, x) ** 2 * score
        return drift, (torch.zeros_like(diffusion) if self.probability_flow else diffusion)

    def discretize(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """The reverse of the forward chain: ``x_{i-1} = x_i - rev_f + rev_G z``.

        ``rev_f = f_i - c G_i^2 s(x_i, t_i)`` and ``rev_G = G_i`` (0 for the probability flow).
        """
        f, G = self.forward.discretize(x, t)
        score = self.score_fn(x, t)
        rev_f = f - self._c * batch_broadcast(G, x) ** 2 * score
        return rev_f, (torch.zeros_like(G) if self.probability_flow else G)


class LinearSDE(SDE):
    """A linear SDE ``dx = f(t) x dt + g(t) dw`` from user-given ``f`` and ``g``.

    Its perturbation kernel is ``N(alpha(t) x0, sigma(t)^2 I)`` with::

        alpha(t)   = exp(F(t)),   F(t) = int_0^t f(s) ds
        sigma(t)^2 = alpha(t)^2 (sigma_0^2 + C(t)),   C(t) = int_0^t g(s)^2 exp(-2 F(s)) ds

    which this class integrates numerically in float64. ``F`` and ``C`` are tabulated once by
    Gauss–Legendre quadrature on a grid of ``grid_size`` intervals. Between grid points ``F`` is
    cubic Hermite interpolated with its exact derivative ``F' = f`` (error ``O(h^4)``), and ``C(t)
    = C(t_i) + int_{t_i}^t g^2 exp(-2F)`` is integrated by Gauss–Legendre from the grid point
    ``t_i`` below ``t``, so ``sigma(t)`` keeps its relative accuracy where it is small (near
    ``t = 0``, where interpolating ``C`` would lose it and can even turn negative). For smooth
    coefficients both are accurate to about 1e-12 relative; a kink in ``f`` between grid points
    costs ``O(h^2)``. Subclasses with closed forms override :meth:`mean_coeff` and
    :meth:`marginal_std`.

    Arguments:
        f: drift coefficient, ``f(t)`` of shape ``(B,)`` for ``t`` of shape ``(B,)``.
        g: diffusion coefficient, same signature.
        T: end time.
        N: number of discretisation steps.
        initial_std: ``sigma_0``, the std of the kernel at ``t = 0`` (``sigma_min`` for a VE SDE).
        prior_std: std of the Gaussian prior ``N(0, prior_std^2 I)``; default ``sigma(T)``, the
            kernel's std at ``T``, which is exact as ``alpha(T) -> 0``.
        sampling_eps: the smallest time samplers integrate to by default.
        grid_size: number of quadrature intervals on ``[0, T]``.
    """

    def __init__(
        self,
        f: TimeFn | None = None,
        g: TimeFn | None = None,
        *,
        T: float = 1.0,
        N: int = 1000,
        initial_std: float = 0.0,
        prior_std: float | None = None,
        sampling_eps: float = 1e-3,
        grid_size: int = 2048,
    ):
        super().__init__(N)
        if not (isinstance(T, (int, float)) and math.isfinite(T) and T > 0):
            raise ValueError(f"T must be a finite number > 0, got {T!r}")
        if not (isinstance(initial_std, (int, float)) and 0 <= initial_std < math.inf):
            raise ValueError(f"initial_std must be a finite number >= 0, got {initial_std!r}")
        if prior_std is not None and not (
            isinstance(prior_std, (int, float)) and 0 < prior_std < math.inf
        ):
            raise ValueError(f"prior_std must be a finite number > 0 or None, got {prior_std!r}")
        if not (isinstance(sampling_eps, (int, float)) and 0 < sampling_eps < T):
            raise ValueError(f"sampling_eps must lie in (0, T) = (0, {T}), got {sampling_eps!r}")
        self._T = float(T)
        self.initial_std = float(initial_std)
        self.sampling_eps = float(sampling_eps)
        self._f, self._g = f, g
        if f is not None or g is not None:
            if f is None or g is None:
                raise ValueError("LinearSDE needs both f and g (or a subclass that defines them)")
            self._tabulate(_positive_int("grid_size", grid_size))
        elif type(self).f is LinearSDE.f or type(self).g is LinearSDE.g:
            raise ValueError(
                "LinearSDE needs the coefficients f and g: pass LinearSDE(f, g), or subclass it "
                "and define f(t) and g(t)"
            )
        self._prior_std = prior_std
        self._table_cache: dict[tuple[str, torch.device, torch.dtype], Tensor] = {}

    @property
    def T(self) -> float:
        return self._T

    def _discrete_table(self, name: str, like: Tensor) -> Tensor:
        """The discrete model's table ``self.<name>`` in ``like``'s device and dtype, cast once
        (not at every step of a sampler: a copy to an accelerator would also synchronise it)."""
        key = (name, like.device, like.dtype)
        if key not in self._table_cache:
            self._table_cache[key] = getattr(self, name).to(like.device, like.dtype)
        return self._table_cache[key]

    @property
    def prior_std(self) -> float:
        """Std of the Gaussian prior ``N(0, prior_std^2 I)``."""
        if self._prior_std is None:
            t = torch.tensor([self.T], dtype=torch.float64)
            self._prior_std = float(self.marginal_std(t))
        return self._prior_std

    # -- coefficients -------------------------------------------------------------------------
    def f(self, t: Tensor) -> Tensor:
        """The drift coefficient ``f(t)``, shape ``(B,)``."""
        return self._f(t)

    def g(self, t: Tensor) -> Tensor:
        """The diffusion coefficient ``g(t)``, shape ``(B,)``."""
        return self._g(t)

    def _tabulate(self, n: int) -> None:
        nodes, weights = np.polynomial.legendre.leggauss(8)
        nodes = torch.as_tensor(nodes, dtype=torch.float64)
        weights = torch.as_tensor(weights, dtype=torch.float64)
        grid = torch.linspace(0.0, self.T, n + 1, dtype=torch.float64)
        a, h = grid[:-1], grid[1:] - grid[:-1]
        # F on the grid: Gauss-Legendre on each interval, then a cumulative sum.
        s = a[:, None] + 0.5 * h[:, None] * (nodes + 1)  # (n, q) quadrature points
        f_int = 0.5 * h * (self.f(s.flatten()).reshape(s.shape) * weights).sum(1)
        F_grid = torch.cat([torch.zeros(1, dtype=torch.float64), f_int.cumsum(0)])
        # F at the quadrature points: F(a_i) + int_{a_i}^{s} f, again by Gauss-Legendre.
        hs = s - a[:, None]
        u = a[:, None, None] + 0.5 * hs[..., None] * (nodes + 1)  # (n, q, q)
        F_s = F_grid[:-1, None] + 0.5 * hs * (self.f(u.flatten()).reshape(u.shape) * weights).sum(
            -1
        )
        integrand = self.g(s.flatten()).reshape(s.shape) ** 2 * torch.exp(-2 * F_s)
        C_grid = torch.cat(
            [
                torch.zeros(1, dtype=torch.float64),
                (0.5 * h * (integrand * weights).sum(1)).cumsum(0),
            ]
        )
        cpu = {"grid": grid, "F": F_grid, "C": C_grid, "nodes": nodes, "weights": weights}
        self._tables: dict[torch.device, dict[str, Tensor]] = {grid.device: cpu}

    def _tables_on(self, device: torch.device) -> dict[str, Tensor]:
        """The quadrature tables (grid, F, C, Gauss-Legendre nodes and weights) on ``device``,
        copied there once."""
        if device not in self._tables:
            cpu = self._tables[torch.device("cpu")]
            self._tables[device] = {name: table.to(device) for name, table in cpu.items()}
        return self._tables[device]

    def _cell(self, t: Tensor) -> Tensor:
        """Index ``i`` of the grid interval ``[t_i, t_{i+1}]`` that holds ``t``."""
        grid = self._tables_on(t.device)["grid"]
        return torch.searchsorted(grid, t.clamp(0, self.T), right=True).clamp(1, len(grid) - 1) - 1

    def _hermite(self, name: str, slope: Callable[[Tensor], Tensor], t: Tensor) -> Tensor:
        """Cubic Hermite interpolation of the table ``name`` with exact derivative ``slope``."""
        tables = self._tables_on(t.device)
        grid, values = tables["grid"], tables[name]
        i = self._cell(t)
        t0, t1 = grid[i], grid[i + 1]
        h = t1 - t0
        u = (t - t0) / h
        h00, h10 = (1 + 2 * u) * (1 - u) ** 2, u * (1 - u) ** 2
        h01, h11 = u**2 * (3 - 2 * u), u**2 * (u - 1)
        return h00 * values[i] + h10 * h * slope(t0) + h01 * values[i + 1] + h11 * h * slope(t1)

    def log_mean_coeff(self, t: Tensor) -> Tensor:
        """``log alpha(t) = int_0^t f(s) ds``, shape ``(B,)``."""
        t64 = t.to(torch.float64)
        return self._hermite("F", self.f, t64).to(t.dtype)

    def mean_coeff(self, t: Tensor) -> Tensor:
        """``alpha(t)``, the scale of the data in the kernel ``N(alpha(t) x0, sigma(t)^2 I)``."""
        return torch.exp(self.log_mean_coeff(t))

    def marginal_std(self, t: Tensor) -> Tensor:
        """``sigma(t)``, the std of the kernel ``N(alpha(t) x0, sigma(t)^2 I)``, shape ``(B,)``."""
        t64 = t.to(torch.float64)
        tables = self._tables_on(t.device)
        F = self._hermite("F", self.f, t64)
        i = self._cell(t64)
        t0 = tables["grid"][i]
        # Gauss-Legendre nodes on [t_i, t], shape (*t.shape, q)
        s = t0[..., None] + 0.5 * (t64 - t0)[..., None] * (tables["nodes"] + 1)
        F_s = self._hermite("F", self.f, s.flatten()).reshape(s.shape)
        dC = self.g(s.flatten()).reshape(s.shape) ** 2 * torch.exp(-2 * F_s)
        C = tables["C"][i] + 0.5 * (t64 - t0) * (dC * tables["weights"]).sum(-1)
        return (torch.exp(F) * torch.sqrt(self.initial_std**2 + C)).to(t.dtype)

    def kernel_coefficients(self, t: Tensor, ndim: int = 2) -> tuple[Tensor, Tensor]:
        """``alpha(t)`` and ``sigma(t)``, each ``(B,)``, straight from the closed forms."""
        self.check_time(t)
        return self.mean_coeff(t), self.marginal_std(t)

    # -- the SDE protocol -------------------------------------------------------------------------
    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """``f(t) x`` and ``g(t)``."""
        self.check_time(t)
        return batch_broadcast(self.f(t), x) * x, self.g(t)

    def marginal_prob(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """``alpha(t) x`` and ``sigma(t)``."""
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
        return _gaussian_logp(z, self.prior_std)

    def snr(self, t: Tensor) -> Tensor:
        """Signal-to-noise ratio ``alpha(t)^2 / sigma(t)^2`` of the kernel."""
        return self.mean_coeff(t) ** 2 / self.marginal_std(t) ** 2

    def __repr__(self) -> str:
        return f"{type(self).__name__}(T={self.T}, N={self.N})"


def _discrete_index(sde: SDE, t: Tensor) -> Tensor:
    """The reference's map from continuous time to a discrete step: ``floor(t (N - 1) / T)``."""
    sde.check_time(t)  # t < 0 would index the tables from the end, t > T past it
    return (t * (sde.N - 1) / sde.T).long()


_COSINE_S = 0.008


def _linear_beta(beta_0: float, beta_1: float, t: Tensor) -> Tensor:
    """``beta(t) = beta_0 + t (beta_1 - beta_0)``."""
    return beta_0 + t * (beta_1 - beta_0)


def _linear_integrated_beta(beta_0: float, beta_1: float, t: Tensor) -> Tensor:
    """``B(t) = int_0^t beta = beta_0 t + (beta_1 - beta_0) t^2 / 2``."""
    return beta_0 * t + 0.5 * (beta_1 - beta_0) * t**2


class VPSDE(LinearSDE):
    """Variance-preserving SDE ``dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw`` (DDPM in the limit).

    Schedules, with ``B(t) = int_0^t beta``, ``alpha(t) = exp(-B(t)/2)`` and
    ``sigma(t)^2 = 1 - alpha(t)^2``:

    * ``"linear"``: ``beta(t) = beta_min + t (beta_max - beta_min)``, so
      ``B(t) = beta_min t + (beta_max - beta_min) t^2 / 2`` (Song et al., 2021; T = 1).
    * ``"cosine"``: Nichol & Dhariwal (2021), ``alpha(t)^2 = cos^2(u(t)) / cos^2(u(0))`` with
      ``u(t) = pi/2 (t + s) / (1 + s)``, ``s = 0.008``, i.e. ``beta(t) = pi/(1+s) tan(u(t))``. That
      ``beta`` diverges at ``t = 1``; as Nichol & Dhariwal clip it, it is clipped here at
      ``beta_max`` (past the time ``t_c`` where ``beta(t_c) = beta_max``), which keeps ``B(t)`` in
      closed form: ``B(t) = B(t_c) + beta_max (t - t_c)`` for ``t > t_c``. ``beta_min`` is unused.

    The prior is ``N(0, I)``. Its discrete model is DDPM with ``N`` steps: ``beta_i =
    linspace(beta_min/N, beta_max/N, N)`` for the linear schedule (as the reference), and
    ``beta_i = min(1 - alpha_bar(t_{i+1}) / alpha_bar(t_i), 0.999)`` on the grid ``t_i = i/N``
    for the cosine one.
    """

    def __init__(
        self,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        N: int = 1000,
        schedule: str = "linear",
    ):
        super().__init__(N=N, prior_std=1.0)
        if schedule not in ("linear", "cosine"):
            raise ValueError(f"schedule must be one of 'linear', 'cosine', got {schedule!r}")
        if schedule == "linear":
            _increasing_range("beta_min", beta_min, "beta_max", beta_max)
        else:  # the cosine schedule only uses beta_max, its clip
            _positive_number("beta_min", beta_min)
            _positive_number("beta_max", beta_max)
        self.beta_0, self.beta_1, self.schedule = float(beta_min), float(beta_max), schedule
        if schedule == "cosine":
            a = math.pi / (2 * (1 + _COSINE_S))
            self._u0 = a * _COSINE_S
            u_c = math.atan(self.beta_1 / (2 * a))  # beta(t_c) = 2 a tan(u(t_c)) = beta_max
            # beta(0) > beta_max (tiny beta_max) clips beta everywhere: t_c = 0.
            self._t_c = min(max((u_c - self._u0) / a, 0.0), 1.0)
            self._a = a
        self.discrete_betas = self._discrete_betas()
        self.alphas = 1.0 - self.discrete_betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.sqrt_alphas_cumprod = torch.sqrt(self.alphas_cumprod)
        self.sqrt_1m_alphas_cumprod = torch.sqrt(1.0 - self.alphas_cumprod)

    def _discrete_betas(self) -> Tensor:
        if self.schedule == "linear":
            return torch.linspace(self.beta_0 / self.N, self.beta_1 / self.N, self.N)
        t = torch.linspace(0.0, 1.0, self.N + 1, dtype=torch.float64)
        log_abar = 2 * self.log_mean_coeff(t)
        return (1 - torch.exp(log_abar[1:] - log_abar[:-1])).clamp(max=0.999).float()

    def beta(self, t: Tensor) -> Tensor:
        """``beta(t)``, shape ``(B,)``."""
        if self.schedule == "linear":
            return _linear_beta(self.beta_0, self.beta_1, t)
        u = self._u0 + self._a * t
        return torch.where(
            t < self._t_c, 2 * self._a * torch.tan(u.clamp(max=math.pi / 2 - 1e-6)), self.beta_1
        )

    def f(self, t: Tensor) -> Tensor:
        return -0.5 * self.beta(t)

    def g(self, t: Tensor) -> Tensor:
        return torch.sqrt(self.beta(t))

    def integrated_beta(self, t: Tensor) -> Tensor:
        """``B(t) = int_0^t beta(s) ds``, shape ``(B,)``."""
        if self.schedule == "linear":
            return _linear_integrated_beta(self.beta_0, self.beta_1, t)
        tc = torch.clamp(t, max=self._t_c)
        # B = -2 log(cos(u0 + a t) / cos(u0)), with the ratio's distance from 1 written as
        # -2 sin(u0 + a t / 2) sin(a t / 2) / cos(u0) so that B keeps its relative precision as
        # t -> 0 (1 - cos ratio cancels catastrophically, 4% error in float32 at t = 1e-5).
        half = 0.5 * self._a * tc
        ratio_m1 = -2 * torch.sin(self._u0 + half) * torch.sin(half) / math.cos(self._u0)
        b_before = -2 * torch.log1p(ratio_m1)
        return b_before + self.beta_1 * (t - tc)

    def log_mean_coeff(self, t: Tensor) -> Tensor:
        return -0.5 * self.integrated_beta(t)

    def marginal_std(self, t: Tensor) -> Tensor:
        """``sqrt(1 - exp(-B(t)))``."""
        return torch.sqrt(-torch.expm1(-self.integrated_beta(t)))

    def discretize(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """DDPM: ``x_{i+1} = sqrt(1 - beta_i) x_i + sqrt(beta_i) z``."""
        i = _discrete_index(self, t)
        beta = self._discrete_table("discrete_betas", x)[i]
        f = batch_broadcast(torch.sqrt(1 - beta), x) * x - x
        return f, torch.sqrt(beta)

    def ancestral_step(self, x: Tensor, t: Tensor, score: Tensor) -> tuple[Tensor, Tensor]:
        """DDPM ancestral step.

        ``x_mean = (x + beta_i s) / sqrt(1 - beta_i)`` and ``std = sqrt(beta_i)``.
        """
        i = _discrete_index(self, t)
        beta = self._discrete_table("discrete_betas", x)[i]
        b = batch_broadcast(beta, x)
        return (x + b * score) / torch.sqrt(1 - b), torch.sqrt(beta)

    def __repr__(self) -> str:
        return (
            f"VPSDE(beta_min={self.beta_0}, beta_max={self.beta_1}, N={self.N}, "
            f"schedule={self.schedule!r})"
        )


class SubVPSDE(LinearSDE):
    """Sub-VP SDE ``dx = -1/2 beta(t) x dt + sqrt(beta(t) (1 - exp(-2 B(t)))) dw``.

    Same mean as the VP SDE, ``alpha(t) = exp(-B(t)/2)``, with a variance bounded by the VP's:
    ``sigma(t)^2 = (1 - exp(-B(t)))^2``. Linear ``beta(t) = beta_min + t (beta_max - beta_min)``;
    prior ``N(0, I)``. It has no discrete model of its own, so it uses the Euler–Maruyama
    :meth:`discretize` and has no ancestral step.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000):
        super().__init__(N=N, prior_std=1.0)
        _increasing_range("beta_min", beta_min, "beta_max", beta_max)
        self.beta_0, self.beta_1 = float(beta_min), float(beta_max)

    def beta(self, t: Tensor) -> Tensor:
        """``beta(t)``, shape ``(B,)``."""
        return _linear_beta(self.beta_0, self.beta_1, t)

    def integrated_beta(self, t: Tensor) -> Tensor:
        """``B(t) = int_0^t beta(s) ds``, shape ``(B,)``."""
        return _linear_integrated_beta(self.beta_0, self.beta_1, t)

    def f(self, t: Tensor) -> Tensor:
        return -0.5 * self.beta(t)

    def g(self, t: Tensor) -> Tensor:
        return torch.sqrt(self.beta(t) * -torch.expm1(-2 * self.integrated_beta(t)))

    def log_mean_coeff(self, t: Tensor) -> Tensor:
        return -0.5 * self.integrated_beta(t)

    def marginal_std(self, t: Tensor) -> Tensor:
        """``1 - exp(-B(t))``."""
        return -torch.expm1(-self.integrated_beta(t))

    def __repr__(self) -> str:
        return f"SubVPSDE(beta_min={self.beta_0}, beta_max={self.beta_1}, N={self.N})"


class VESDE(LinearSDE):
    """Variance-exploding SDE ``dx = sqrt(d sigma(t)^2 / dt) dw`` (SMLD / NCSN in the limit).

    ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``, so ``g(t) = sigma(t) sqrt(2 log(sigma_max /
    sigma_min))``. As in the reference, the kernel includes the initial noise ``sigma_min``:
    ``p_0t(x_t | x_0) = N(x_0, sigma(t)^2 I)``. The prior is ``N(0, sigma_max^2 I)``; samplers stop
    at ``eps = 1e-5`` by default. The discrete model is SMLD with noise levels
    ``sigma_i = exp(linspace(log sigma_min, log sigma_max, N))``.
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, N: int = 1000):
        _increasing_range("sigma_min", sigma_min, "sigma_max", sigma_max)
        super().__init__(N=N, initial_std=sigma_min, prior_std=sigma_max, sampling_eps=1e-5)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.discrete_sigmas = torch.exp(
            torch.linspace(math.log(sigma_min), math.log(sigma_max), N)
        )

    def sigma(self, t: Tensor) -> Tensor:
        """``sigma(t) = sigma_min (sigma_max / sigma_min)^t``."""
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def f(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def g(self, t: Tensor) -> Tensor:
        return self.sigma(t) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))

    def log_mean_coeff(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def marginal_std(self, t: Tensor) -> Tensor:
        return self.sigma(t)

    def _sigma_pair(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        i = _discrete_index(self, t)
        sigmas = self._discrete_table("discrete_sigmas", x)
        sigma = sigmas[i]
        adjacent = torch.where(i == 0, torch.zeros_like(sigma), sigmas[(i - 1).clamp(min=0)])
        return sigma, adjacent

    def discretize(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """SMLD: ``x_{i+1} = x_i + sqrt(sigma_{i+1}^2 - sigma_i^2) z``."""
        sigma, adjacent = self._sigma_pair(x, t)
        return torch.zeros_like(x), torch.sqrt(sigma**2 - adjacent**2)

    def ancestral_step(self, x: Tensor, t: Tensor, score: Tensor) -> tuple[Tensor, Tensor]:
        """SMLD ancestral sampling: ``x_mean = x + (sigma_i^2 - sigma_{i-1}^2) s``,
        ``std = sqrt(sigma_{i-1}^2 (sigma_i^2 - sigma_{i-1}^2) / sigma_i^2)``."""
        sigma, adjacent = self._sigma_pair(x, t)
        var_step = sigma**2 - adjacent**2
        x_mean = x + batch_broadcast(var_step, x) * score
        return x_mean, torch.sqrt(adjacent**2 * var_step / sigma**2)

    def __repr__(self) -> str:
        return f"VESDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, N={self.N})"
