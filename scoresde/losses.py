"""Denoising score matching: continuous time (Song et al., 2021) and the discrete SMLD and DDPM.

Every loss here perturbs data with the SDE's Gaussian kernel, ``x_t = mean(x_0, t) + sigma z``,
``z ~ N(0, I)``, and compares the score with the kernel's score,
``grad log p_0t(x_t | x_0) = -z / sigma``::

    loss = E_t E_{x_0} E_z [ lambda(t) || s(x_t, t) + z / sigma ||^2 ]
         = E_t E_{x_0} E_z [ (lambda(t) / sigma^2) || sigma s(x_t, t) + z ||^2 ],

whose minimiser is the score of the perturbed data, ``s = grad log p_t`` (Vincent, 2011). The
second form is what is computed (no ``z / sigma`` blow-up at small ``sigma``). ``|| . ||^2`` is the
mean (``reduce="mean"``) or the sum (``reduce="sum"``) over the data dimensions; the batch is
averaged.

* :func:`dsm_loss`: ``t ~ U(eps, T)``, ``lambda = sigma^2`` (``weighting="score_sde"``) or
  ``lambda = g(t)^2`` (``"likelihood"``). With the likelihood weighting and ``reduce="sum"``,
  ``(T - eps) / 2`` times the loss is the score-matching term of Song et al. (2021b)'s bound on the
  negative log-likelihood (their Theorem 2, truncated to ``[eps, T]``)::

      -E log p_model(x_eps) <= E[-log pi(x_T)] + (T - eps)/2 * loss
                               - 1/2 int_eps^T E[d g^2 / sigma^2 + 2 div f(x_t, t)] dt,

  an equality for the true score and prior ``pi = p_T``. Its integrand varies like ``1 / t`` near 0,
  so ``importance_sampling=True`` draws ``t`` with density ``q(t) ~ g(t)^2 / sigma(t)^2`` on
  ``[eps, T]`` and reweights each sample by ``1 / ((T - eps) q(t))``: the same expectation, a much
  lower variance (Song et al., 2021b, Sec. 5.1). ``q`` is tabulated numerically for any SDE
  (:class:`ImportanceTimeSampler`).
* :func:`smld_loss`: NCSN (Song & Ermon, 2019): ``x_i = x_0 + sigma_i z`` at a uniform step ``i`` of
  ``sde.discrete_sigmas``, ``lambda = sigma_i^2``.
* :func:`ddpm_loss`: DDPM (Ho et al., 2020): ``x_i = sqrt(abar_i) x_0 + sqrt(1 - abar_i) z`` with
  ``abar_i`` = ``sde.alphas_cumprod[i]``, ``lambda = 1 - abar_i``; for an epsilon network
  ``F = -sqrt(1 - abar_i) s`` this is DDPM's ``|| F - z ||^2``.

In the discrete losses the network sees step ``i`` as the continuous time ``t_i = i T / (N - 1)``;
steps where the kernel has no noise (``sigma(t_i) = 0``: VP's step 0, at ``t = 0``) are not drawn.
All noise (times, steps, ``z``) is drawn from the ``generator`` argument.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from scoresde.sde import SDE, ScoreFn, _positive_int, batch_broadcast, unchecked_times

__all__ = [
    "WEIGHTINGS",
    "REDUCTIONS",
    "LOSSES",
    "ImportanceTimeSampler",
    "dsm_loss",
    "smld_loss",
    "ddpm_loss",
    "get_loss_fn",
]

WEIGHTINGS = ("score_sde", "likelihood")
REDUCTIONS = ("mean", "sum")
LOSSES = ("dsm", "smld", "ddpm")

LossFn = Callable[[ScoreFn, Tensor, torch.Generator], Tensor]


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def _check_eps(sde: SDE, eps: float) -> float:
    if not (isinstance(eps, (int, float)) and 0 < eps < sde.T):
        raise ValueError(f"eps must lie in (0, T) = (0, {sde.T}), got {eps!r}")
    return float(eps)


def _rand(
    shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor, normal: bool
) -> Tensor:
    """Uniform or normal draws on the generator's device, moved to ``like``'s device and dtype."""
    device = like.device if generator is None else generator.device
    draw = torch.randn if normal else torch.rand
    return draw(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


def _denoising_loss(
    score_fn: ScoreFn,
    mean: Tensor,
    std: Tensor,
    t: Tensor,
    weight: Tensor | float,
    reduce: str,
    generator: torch.Generator | None,
) -> Tensor:
    """``mean_b weight_b * reduce_d (std s(x_t, t) + z)^2`` with ``x_t = mean + std z``.

    ``std`` is ``(B,)``; ``weight`` is ``lambda / sigma^2`` over the sampling density ratio.
    """
    z = _rand(tuple(mean.shape), generator, mean, normal=True)
    std = batch_broadcast(std, mean)
    residual = (std * score_fn(mean + std * z, t) + z) ** 2
    per_sample = residual.flatten(1).mean(1) if reduce == "mean" else residual.flatten(1).sum(1)
    return (weight * per_sample).mean()


class ImportanceTimeSampler:
    """Times on ``[eps, T]`` with density ``q(t) ~ g(t)^2 / sigma(t)^2`` (likelihood weighting).

    ``w(t) = g(t)^2 / sigma(t)^2`` is tabulated once on a geometric grid of ``grid_size`` points
    (dense near ``eps``, where ``w ~ 1 / t`` for SDEs with ``sigma(0) = 0``); ``q`` is its
    piecewise-constant approximation, ``q_j = m_j / (Z dt_j)`` on interval ``j`` with
    trapezoidal mass ``m_j`` and ``Z = sum m_j``, sampled exactly by inverting its CDF. Losses
    divide by the exact density of what was sampled, so the reweighted loss is unbiased whatever
    the grid; the grid only sets how much variance is removed.

    Arguments:
        sde: the forward SDE (``sde.sde`` for ``g``, ``sde.marginal_prob`` for ``sigma``).
        eps: the smallest time.
        grid_size: number of grid points.
    """

    def __init__(self, sde: SDE, eps: float = 1e-5, grid_size: int = 4096):
        eps = _check_eps(sde, eps)
        if _positive_int("grid_size", grid_size) < 2:
            raise ValueError(f"grid_size must be an integer >= 2, got {grid_size!r}")
        self.T, self.eps = float(sde.T), eps
        grid = torch.logspace(math.log10(eps), math.log10(self.T), grid_size, dtype=torch.float64)
        grid[0], grid[-1] = eps, self.T
        probe = torch.zeros((grid_size, 1), dtype=torch.float64)
        _, g = sde.sde(probe, grid)
        _, sigma = sde.marginal_prob(probe, grid)
        w = g.reshape(grid_size) ** 2 / sigma**2
        if not bool(torch.isfinite(w).all() & (w >= 0).all()) or float(w.max()) <= 0:
            raise ValueError(
                "importance sampling needs g(t)^2 / sigma(t)^2 finite, >= 0 and not all 0 on "
                f"[eps, T] = [{eps}, {self.T}]; {type(sde).__name__} gives values in "
                f"[{float(w.min())}, {float(w.max())}]"
            )
        self.grid, self.widths = grid, grid.diff()
        self.mass = 0.5 * (w[1:] + w[:-1]) * self.widths
        self.cdf = self.mass.cumsum(0)
        self.total = float(self.cdf[-1])

    def __call__(
        self, n: int, generator: torch.Generator | None, like: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``n`` times and their density ratio ``(T - eps) q(t)`` to the uniform, dtype of ``like``.

        Computed in float64 on the generator's device, then moved to ``like``'s.
        """
        device = like.device if generator is None else generator.device
        grid, widths, mass, cdf = (
            a.to(device) for a in (self.grid, self.widths, self.mass, self.cdf)
        )
        u = torch.rand(n, generator=generator, device=device, dtype=torch.float64) * self.total
        j = torch.searchsorted(cdf, u, right=True).clamp(max=len(mass) - 1)
        frac = ((u - (cdf[j] - mass[j])) / mass[j]).clamp(0, 1)
        t = grid[j] + frac * widths[j]
        ratio = (self.T - self.eps) * mass[j] / (self.total * widths[j])
        return t.to(like.device, like.dtype), ratio.to(like.device, like.dtype)


def _uniform_times(
    sde: SDE, eps: float
) -> Callable[[int, torch.Generator | None, Tensor], tuple[Tensor, Tensor]]:
    """``t ~ U(eps, T)``, density ratio 1."""

    def sample(n: int, generator: torch.Generator | None, like: Tensor) -> tuple[Tensor, Tensor]:
        t = eps + (sde.T - eps) * _rand((n,), generator, like, normal=False)
        return t, torch.ones_like(t)

    return sample


def _dsm_loss_fn(
    sde: SDE, weighting: str, importance_sampling: bool, reduce: str, eps: float
) -> LossFn:
    _check_choice("weighting", weighting, WEIGHTINGS)
    _check_choice("reduce", reduce, REDUCTIONS)
    eps = _check_eps(sde, eps)
    if not isinstance(importance_sampling, bool):
        raise ValueError(f"importance_sampling must be True or False, got {importance_sampling!r}")
    if importance_sampling and weighting != "likelihood":
        raise ValueError(
            "importance_sampling=True samples t with density proportional to g^2 / sigma^2, "
            "which only reduces the variance of weighting='likelihood', "
            f"got weighting={weighting!r}"
        )
    times = ImportanceTimeSampler(sde, eps) if importance_sampling else _uniform_times(sde, eps)

    def loss_fn(score_fn: ScoreFn, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        t, ratio = times(x0.shape[0], generator, x0)
        with unchecked_times():
            mean, std = sde.marginal_prob(x0, t)
            weight = 1 / ratio
            if weighting == "likelihood":
                weight = weight * sde.sde(x0, t)[1] ** 2 / std**2
            return _denoising_loss(score_fn, mean, std, t, weight, reduce, generator)

    return loss_fn


def _discrete_table(sde: SDE, attribute: str, loss: str, what: str) -> Tensor:
    table = getattr(sde, attribute, None)
    if not isinstance(table, Tensor) or table.ndim != 1 or table.shape[0] < 2:
        raise ValueError(
            f"the {loss} loss needs sde.{attribute} ({what}, a 1-D tensor of at least 2 "
            f"steps), which {type(sde).__name__} does not define; use kind='dsm', or an SDE "
            "with that discrete model"
        )
    return table


def _discrete_loss_fn(sde: SDE, kind: str, reduce: str) -> LossFn:
    _check_choice("reduce", reduce, REDUCTIONS)
    if kind == "smld":
        table = _discrete_table(sde, "discrete_sigmas", "smld", "the NCSN noise levels sigma_i")
    else:
        table = _discrete_table(sde, "alphas_cumprod", "ddpm", "the DDPM products abar_i")
    N = table.shape[0]
    # A step whose time t_i has sigma(t_i) = 0 (VP's t_0 = 0) has no score: every parameterisation
    # but "score" divides by sigma there. The draws start at the first step with sigma > 0.
    _, sigma = sde.kernel_coefficients(torch.arange(N, dtype=torch.float64) * (sde.T / (N - 1)))
    first = int(torch.cumprod(sigma <= 0, 0).sum())

    def loss_fn(score_fn: ScoreFn, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        device = x0.device if generator is None else generator.device
        i = torch.randint(first, N, (x0.shape[0],), generator=generator, device=device)
        i = i.to(x0.device)
        t = i.to(x0.dtype) * (sde.T / (N - 1))
        value = table.to(x0.device, x0.dtype)[i]
        if kind == "smld":
            mean, std = x0, value
        else:
            mean, std = batch_broadcast(value.sqrt(), x0) * x0, (1 - value).sqrt()
        return _denoising_loss(score_fn, mean, std, t, 1.0, reduce, generator)

    return loss_fn


def dsm_loss(
    sde: SDE,
    score_fn: ScoreFn,
    x0: Tensor,
    *,
    weighting: str = "score_sde",
    importance_sampling: bool = False,
    reduce: str = "mean",
    eps: float = 1e-5,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Continuous-time denoising score matching, ``E[lambda(t) ||s(x_t, t) + z / sigma(t)||^2]``.

    Arguments:
        sde: the forward SDE (``marginal_prob``; ``sde`` for ``g`` with the likelihood weighting).
        score_fn: the model's score ``(x, t) -> s``.
        x0: a batch of data ``(B, *D)``.
        weighting: ``"score_sde"`` (``lambda = sigma^2``) or ``"likelihood"`` (``lambda = g^2``).
        importance_sampling: draw ``t`` with density ``~ g^2 / sigma^2`` and reweight (likelihood
            weighting only).
        reduce: ``"mean"`` or ``"sum"`` of the squared error over the data dimensions.
        eps: the smallest time, ``0 < eps < T``.
        generator: the source of ``t`` and ``z``.

    Returns:
        The scalar loss, averaged over the batch.
    """
    return _dsm_loss_fn(sde, weighting, importance_sampling, reduce, eps)(score_fn, x0, generator)


def smld_loss(
    sde: SDE,
    score_fn: ScoreFn,
    x0: Tensor,
    *,
    reduce: str = "mean",
    generator: torch.Generator | None = None,
) -> Tensor:
    """NCSN's loss ``E_i E[sigma_i^2 ||s(x_0 + sigma_i z, t_i) + z / sigma_i||^2]``, uniform ``i``.

    Needs ``sde.discrete_sigmas`` (e.g. :class:`~scoresde.sde.VESDE`); ``t_i = i T / (N - 1)``.
    Arguments and return as in :func:`dsm_loss`.
    """
    return _discrete_loss_fn(sde, "smld", reduce)(score_fn, x0, generator)


def ddpm_loss(
    sde: SDE,
    score_fn: ScoreFn,
    x0: Tensor,
    *,
    reduce: str = "mean",
    generator: torch.Generator | None = None,
) -> Tensor:
    """DDPM's loss ``E_i E[(1 - abar_i) ||s(x_i, t_i) + z / sqrt(1 - abar_i)||^2]``, uniform ``i``.

    ``x_i = sqrt(abar_i) x_0 + sqrt(1 - abar_i) z``; needs ``sde.alphas_cumprod`` (e.g.
    :class:`~scoresde.sde.VPSDE`); ``t_i = i T / (N - 1)``. Arguments and return as in
    :func:`dsm_loss`.
    """
    return _discrete_loss_fn(sde, "ddpm", reduce)(score_fn, x0, generator)


def get_loss_fn(sde: SDE, kind: str = "dsm", **options: object) -> LossFn:
    """The loss ``loss_fn(score_fn, x0, generator) -> scalar`` for a training loop, checked now.

    Arguments:
        sde: the forward SDE.
        kind: ``"dsm"`` (options ``weighting``, ``importance_sampling``, ``reduce``, ``eps``, as in
            :func:`dsm_loss`), ``"smld"`` or ``"ddpm"`` (option ``reduce``).

    Every option is validated here, and the importance sampler's table built once, so a bad
    configuration fails before training starts.
    """
    _check_choice("kind", kind, LOSSES)
    defaults: dict[str, object]
    if kind == "dsm":
        defaults = {
            "weighting": "score_sde",
            "importance_sampling": False,
            "reduce": "mean",
            "eps": 1e-5,
        }
    else:
        defaults = {"reduce": "mean"}
    unknown = [key for key in options if key not in defaults]
    if unknown:
        raise ValueError(
            f"the {kind} loss takes options {', '.join(defaults)}; got unknown {', '.join(unknown)}"
        )
    settings = {**defaults, **options}
    if kind == "dsm":
        return _dsm_loss_fn(sde, **settings)
    return _discrete_loss_fn(sde, kind, **settings)
