"""Inpainting: samples of the unknown entries of ``x`` given the known ones, from any score.

Given ``observed`` values ``y`` at the entries where ``mask`` is True (``x_o = y``), the target is
the conditional law ``p_0(x_u | x_o = y)`` of the unknown entries ``x_u`` under the data law whose
noisy scores ``score_fn`` knows. Two methods, both only through ``sde.kernel_coefficients``
(the kernel ``x_t | x_0 ~ N(alpha(t) x_0, sigma(t)^2 I)`` of any SDE with a linear drift):

**Replacement** (Song et al. 2021, App. I; ``method="replacement"``). Run any sampler of
:func:`scoresde.sample` and, every time the state reaches a grid time ``t`` (after each predictor
and each corrector move), replace its known entries by a fresh draw of the forward process started
at ``y``::

    x_o <- alpha(t) y + sigma(t) z,      z ~ N(0, I).

The unknown entries follow the unconditional reverse dynamics next to a noised copy of ``y``. That
is not the conditional dynamics: ``x_u`` is moved by ``grad log p_t(x_u, x_o)`` at a draw of ``x_o``
that is independent of ``x_u``'s own past, whereas the conditional reverse process needs
``grad log p_t(x_u | x_0,o = y)``. The bias is largest where the conditional is multimodal (the
modes' weights come out wrong) and does not vanish with more steps.

**Sequential Monte Carlo** (``method="smc"``; :func:`inpaint_particles`). ``K`` particles per
observation are moved along the Gaussian backward chain of the sampler and reweighted so that, as
``K`` grows, the particle approximation converges to the chain's exact conditional law. The
construction is that of MCGdiff's noiseless case (Cardoso et al. 2024, "Monte Carlo guided
diffusion for Bayesian linear inverse problems"), for which inpainting is the simplest instance (the
observation operator selects coordinates, so its SVD is the identity), written here for any
linear-drift SDE and any grid ``T = t_0 > t_1 > ... > t_n = eps``:

* *The chain* (whose conditional law the particles target). ``x_{t_0}`` is drawn from
  ``sde.prior_sampling``; from ``s = t_i`` to ``t = t_{i+1}`` it takes the second-order multistep
  step of SDE-DPM-Solver++(2M) (Lu et al. 2022), with ``lambda = log(alpha / sigma)``,
  ``h_i = lambda_t - lambda_s > 0`` and Tweedie's ``x0_i = (x + sigma_s^2 s(x, s)) / alpha_s``::

      q_i(x' | x) = N(x'; m_i, tau_i^2 I),        tau_i^2 = sigma_t^2 (1 - exp(-2 h_i)),
      m_i = (sigma_t / sigma_s) exp(-h_i) x + alpha_t (1 - exp(-2 h_i)) (x0_i + (x0_i - x0_{i-1})
            h_i / (2 h_{i-1})),

  first order at ``i = 0`` (DDIM with ``eta = 1``). Each particle carries its previous ``x0``.
  The first-order step alone is under-dispersed (it drops the variance of ``x_0`` given ``x``):
  on the 8-Gaussian ring with 100 log-SNR steps its samples' cross-entropy gap is -0.04 nats,
  the multistep one's 0.000 (Monte-Carlo error 0.007). Its law of ``x_{t_n}`` is that of an
  unconditional sampler; the target is that law conditioned on ``x_{t_n, o} = alpha(eps) y``,
  which tends to ``p_0(x_u | x_o = y)`` as the grid is refined and ``eps -> 0``.
* *Potentials.* ``g_i(x) = N(x_o; alpha(t_i) y, sigma(t_i)^2 I)`` on the known entries (how likely
  ``x_o`` is as a forward-noised ``y``) for ``0 < i < n``; ``g_0 = 1`` and ``g_n`` the point mass at
  ``x_o = alpha(t_n) y``. The intermediate targets ``pi_i(x_{0:i}) ∝ chain(x_{0:i}) g_i(x_{t_i})``
  telescope: with ``g_n`` a point mass, ``pi_n``'s marginal of ``x_{t_n}`` is the target above for
  *any* positive ``g_i``, so their choice affects only the variance.
* *Proposal and weights.* ``g_{i+1}`` is Gaussian in ``x'_o`` and ``q_i`` is Gaussian, so the
  locally optimal proposal ``q_i(x' | x) g_{i+1}(x') / Z_i(x)`` is Gaussian: unknown entries
  ``x'_u ~ N(m_u, tau^2)``, known entries the product of ``N(m_o, tau^2)`` and
  ``N(alpha_{t} y, s^2)`` with ``s^2 = sigma_t^2`` (``0`` at the last step)::

      x'_o ~ N((s^2 m_o + tau^2 alpha_t y) / (tau^2 + s^2), tau^2 s^2 / (tau^2 + s^2)),

  and the incremental weight depends on ``x`` alone (a fully adapted particle filter)::

      log w_i(x) = log N(alpha_t y; m_o(x), (tau^2 + s^2) I) - log g_i(x).

  The particles start as prior draws with equal weights (``g_0 = 1``); the last step sets
  ``x_o = alpha(eps) y`` (``s = 0``).
* *Twisting* (``twist=True``). The potentials above see only the known entries of the state,
  so a particle whose unknown entries cannot produce ``y`` keeps its weight until late in the
  chain, when the known entries are nearly fixed. With ``twist`` every intermediate target is
  multiplied by ``h_i(x) = N(y_o; x0_o(x, t_i), r_i^2 I)``, how well Tweedie's estimate of the
  clean known entries matches ``y`` (the twisting functions of the twisted diffusion sampler, Wu
  et al. 2023), with ``r_i^2 = sigma_i^2 / (alpha_i^2 + sigma_i^2)``, the variance of ``x_0``
  given ``x_t`` for data of unit variance. ``x0`` is computed at every step anyway, so this costs
  no score evaluation; the weights gain ``log h_{i+1}(x') - log h_i(x)`` (``h`` travels with its
  particle through resampling), the first target is ``prior x h_0`` and the last loses
  ``h_{n-1}``, so the final target, and the consistency as ``K`` grows, are unchanged: only the
  variance changes.
* *Resampling.* The weights are accumulated in log space and normalised per observation; when the
  effective sample size ``1 / sum_k w_k^2`` falls below ``resample_threshold * K``, that
  observation's particles are resampled systematically (one uniform ``u``, ancestors at the
  quantiles ``(u + j) / K``) before they move, and their weights reset to ``1 / K``.

With ``K = 1`` this is the guided chain without any correction (biased, like replacement); the bias
vanishes as ``K`` grows, by the usual consistency of SMC estimates (Del Moral 2004, "Feynman-Kac
formulae"). :func:`inpaint` returns one particle per observation, drawn with probability its
weight; :func:`inpaint_particles` returns all of them with their weights, whose weighted averages
estimate conditional expectations with much less variance than one draw per observation.

**Shapes.** ``observed`` is ``(B, *D)`` (points ``D = (d,)`` or images ``D = (C, H, W)``); ``mask``
is ``(B, *D)`` (one per observation) or ``D`` (shared), True where the entry is known. Unknown
entries of ``observed`` are never read (they may be NaN). The output equals ``observed`` exactly on
the known entries.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, NamedTuple

import torch
from torch import Tensor

from scoresde.sampling.base import SAMPLERS, GridCoefficients, data_prediction
from scoresde.sampling.grids import check_times, time_grid
from scoresde.sampling.noise import GaussianNoise, Generators, check_generators
from scoresde.sampling.sampler import sample
from scoresde.score_calls import CountedScore
from scoresde.sde import SDE, ScoreFn, unchecked_times
from scoresde.validation import check_bool, check_choice, check_int, check_number, refusal

__all__ = ["METHODS", "Particles", "inpaint", "inpaint_particles"]

METHODS = ("replacement", "smc")
"""The methods of :func:`inpaint`."""

SMC_DEFAULT_STEPS = 100
"""The default number of steps of :func:`inpaint_particles`' grid."""

SMC_DEFAULT_GRID = "log_snr"
"""The default kind of :func:`inpaint_particles`' grid."""

#: Arguments of :func:`scoresde.sample` that :func:`inpaint` sets itself under replacement.
_SET_BY_INPAINT = ("shape", "step_hook", "dtype", "device", "return_info", "trajectory_times")


class Particles(NamedTuple):
    """The weighted particles of :func:`inpaint_particles`.

    Attributes:
        x: the particles, ``(B, K, *D)``; ``x[b, k]`` equals ``observed[b]`` on the known entries.
        log_weights: normalised log-weights, ``(B, K)`` float64 (``logsumexp`` over ``K`` is 0).
        resampled: how many times each observation's particles were resampled, ``(B,)`` int64.
    """

    x: Tensor
    log_weights: Tensor
    resampled: Tensor


def inpaint(
    sde: SDE,
    score_fn: ScoreFn,
    observed: Tensor,
    mask: Tensor,
    *,
    method: str = "replacement",
    particles: int = 64,
    generator: Generators = None,
    **sampler_options: Any,
) -> Tensor:
    """Sample the unknown entries of ``observed`` given its known ones (module docstring).

    Arguments:
        sde: the forward SDE (any SDE with a linear drift; only ``kernel_coefficients`` and
            ``prior_sampling`` are used).
        score_fn: the unconditional score ``s(x, t)``.
        observed: ``(B, *D)`` floating-point: the known values where ``mask`` is True (anything,
            NaN included, elsewhere). The samples take its dtype and device.
        mask: a boolean tensor of shape ``(B, *D)`` or ``D``, True where the entry is known.
        method: ``"replacement"`` or ``"smc"``.
        particles: ``K``, the particles per observation of ``"smc"`` (>= 1; unused by replacement).
        generator: the only source of randomness: ``None``, a ``torch.Generator``, or ``B`` of them
            (one per observation, so that observation ``b``'s sample does not depend on the batch).
        **sampler_options: for ``"replacement"``, the arguments of :func:`scoresde.sample`
            (``sampler``, ``num_steps``, ``times``, ``grid``, ``eps``, ``rho``, ``denoise`` and the
            sampler's own options, e.g. ``corrector``, ``snr``, ``n_steps`` for ``pc``) except
            those ``inpaint`` sets (``shape``, ``step_hook``, ``dtype``, ``device``,
            ``return_info``, ``trajectory_times``). The ``ode`` sampler's own ``method`` cannot be
            passed (the name is ``inpaint``'s): it runs its adaptive default between the grid
            times, which must then be given as ``times`` (replacement happens only there).
            For ``"smc"``, the options of
            :func:`inpaint_particles` (``num_steps``, ``times``, ``grid``, ``eps``, ``rho``,
            ``denoise``, ``resample_threshold``, ``twist``). Any other is refused by name.

    Returns:
        ``(B, *D)`` samples, equal to ``observed`` where ``mask`` is True.

    Raises:
        ValueError: for a bad argument, in the one wording of :mod:`scoresde.validation`.
    """
    method = check_choice("method", method, METHODS)
    check_int("particles", particles, minimum=1)
    if method == "smc":
        unknown = [key for key in sampler_options if key not in SMC_OPTIONS]
        if unknown:
            raise ValueError(
                f"method='smc' does not use {', '.join(map(repr, unknown))}; it takes "
                f"{', '.join(map(repr, SMC_OPTIONS))}"
            )
        cloud = inpaint_particles(
            sde,
            score_fn,
            observed,
            mask,
            particles=particles,
            generator=generator,
            **sampler_options,
        )
        u = _uniforms(generator, cloud.x.shape[0], cloud.x.device)
        pick = _inverse_cdf(cloud.log_weights, u[:, None])[:, 0]
        return cloud.x[torch.arange(cloud.x.shape[0], device=pick.device), pick]

    y, known = _check_observation(observed, mask)
    set_here = [key for key in sampler_options if key in _SET_BY_INPAINT]
    if set_here:
        raise ValueError(
            f"inpaint sets {', '.join(map(repr, set_here))} itself (from observed); method="
            "'replacement' passes the other options to scoresde.sample"
        )
    name = sampler_options.get("sampler", sample.__kwdefaults__["sampler"])
    if SAMPLERS.lookup(name).adaptive(sampler_options) and "times" not in sampler_options:
        raise ValueError(
            f"method='replacement' replaces the known entries at the grid times, and sampler "
            f"{name!r} is adaptive, with the grid [T, eps] by default: it needs a grid of "
            "replacement times (give times=)"
        )
    check_generators(generator, y.shape[0])
    noise = GaussianNoise(generator)

    def replace_known(t: Tensor, x: Tensor) -> Tensor:
        alpha, sigma = (c.to(x.dtype) for c in sde.kernel_coefficients(t.reshape(1), x.ndim))
        return torch.where(known, alpha * y + sigma * noise.like(x), x)

    x = sample(
        sde,
        score_fn,
        y.shape,
        generator=generator,
        dtype=y.dtype,
        device=y.device,
        step_hook=replace_known,
        **sampler_options,
    )
    return torch.where(known, y, x)


def inpaint_particles(
    sde: SDE,
    score_fn: ScoreFn,
    observed: Tensor,
    mask: Tensor,
    *,
    particles: int = 64,
    generator: Generators = None,
    num_steps: int | None = None,
    times: Tensor | None = None,
    grid: str | None = None,
    eps: float | None = None,
    rho: float = 7.0,
    denoise: bool = True,
    resample_threshold: float = 0.5,
    twist: bool = False,
) -> Particles:
    """The SMC inpainter's weighted particles (module docstring, "Sequential Monte Carlo").

    Arguments:
        sde, score_fn, observed, mask, generator: as for :func:`inpaint`.
        particles: ``K`` >= 1, the particles per observation.
        num_steps: the steps of the grid ``time_grid(sde, num_steps, kind=grid, eps=eps,
            rho=rho)``; default :data:`SMC_DEFAULT_STEPS` on a :data:`SMC_DEFAULT_GRID` grid.
        times: the grid itself (float, strictly decreasing, inside ``(0, T]``), instead of
            ``num_steps``, ``grid`` and ``eps``.
        grid, eps, rho: the kind of grid, its last time and the ``karras`` exponent, as for
            :func:`scoresde.sample`.
        denoise: replace the unknown entries of the final particles by Tweedie's
            ``E[x_0 | x_eps]`` (one more score evaluation), as :func:`scoresde.sample` does.
        resample_threshold: resample an observation's particles when their effective sample size
            falls below ``resample_threshold * K``; in ``[0, 1]`` (0: never, 1: whenever the
            weights are not all equal).
        twist: weight the intermediate targets by how well Tweedie's estimate of the known
            entries matches them (module docstring, "Twisting"); same final target, no extra
            score evaluations.

    Returns:
        :class:`Particles`: ``(B, K, *D)`` particles, their normalised log-weights and resampling
        counts. Score evaluations: ``num_steps`` (+1 with ``denoise``) calls on ``B K`` points.

    Raises:
        ValueError: for a bad argument, or particles or weights that turned non-finite (a score
            that returned NaN or infinity).
    """
    y, known = _check_observation(observed, mask)
    K = check_int("particles", particles, minimum=1)
    check_bool("denoise", denoise)
    check_bool("twist", twist)
    threshold = check_number("resample_threshold", resample_threshold, 0, 1)
    B, D = y.shape[0], y.shape[1:]
    check_generators(generator, B)
    grid64 = _smc_grid(sde, times, num_steps, grid, eps, rho).to(y.device)
    dtype, device = y.dtype, y.device

    k = GridCoefficients.on(sde, grid64, dtype)
    n = len(grid64) - 1
    h = (k.log_snr[1:] - k.log_snr[:-1]) / 2  # steps in lambda = log(alpha / sigma), (n,)
    fade = -torch.expm1(-2 * h)  # 1 - exp(-2 h)
    keep = k.sigma[1:] / k.sigma[:-1] * torch.exp(-h)
    to_x = k.alpha[1:] * fade
    slope = torch.cat([h.new_zeros(1), to_x[1:] * h[1:] / (2 * h[:-1])])  # 0: first order
    tau2 = k.sigma[1:] ** 2 * fade
    s2 = torch.cat([k.sigma[1:-1] ** 2, h.new_zeros(1)])  # g_{i+1}'s variance; 0 at the end
    r2 = k.sigma**2 / (k.alpha**2 + k.sigma**2)  # the twisting functions' variances

    y, known = y[:, None], known[:, None]  # broadcast over particles: (B, 1, *D)
    noise = GaussianNoise(generator)
    counted = CountedScore(score_fn)
    log_w = torch.full((B, K), -math.log(K), dtype=torch.float64, device=device)
    resampled = torch.zeros(B, dtype=torch.int64, device=device)

    def denoised(x: Tensor, i: int) -> Tensor:
        """Tweedie's ``x0`` at ``t_i`` for all ``B K`` particles (one score evaluation)."""
        flat = x.reshape(B * K, *D)
        alpha, sigma = k.alpha[i].to(dtype), k.sigma[i].to(dtype)
        return data_prediction(counted, flat, k.t[i].expand(B * K), alpha, sigma).reshape(x.shape)

    with torch.no_grad(), unchecked_times():
        x = _prior(sde, generator, B, K, D, dtype, device)
        x0_prev = torch.zeros_like(x)
        log_h_prev = torch.zeros_like(log_w)  # log h_{i-1} of each particle's ancestor
        for i in range(n):
            x0 = denoised(x, i)
            log_h = _log_normal(y, x0, r2[i], known) if twist else log_h_prev
            log_w = log_w + (log_h - log_h_prev)
            mean = keep[i].to(dtype) * x + to_x[i].to(dtype) * x0
            mean = mean + slope[i].to(dtype) * (x0 - x0_prev)
            target = k.alpha[i + 1].to(dtype) * y
            log_w = log_w + _log_normal(target, mean, tau2[i] + s2[i], known)
            if i > 0:
                log_w = log_w - _log_normal(x, k.alpha[i].to(dtype) * y, k.sigma[i] ** 2, known)
            log_w = log_w - log_w.logsumexp(1, keepdim=True)
            (mean, x0_prev, log_h_prev), log_w, now = _resample(
                (mean, x0, log_h), log_w, threshold, generator
            )
            resampled += now
            var_o = tau2[i] * s2[i] / (tau2[i] + s2[i])
            mean_o = (s2[i] * mean + tau2[i] * target) / (tau2[i] + s2[i])
            z = noise.like(mean)
            x = torch.where(
                known,
                mean_o + var_o.sqrt().to(dtype) * z,
                mean + tau2[i].sqrt().to(dtype) * z,
            )
        log_w = log_w - log_h_prev  # the final target has no twist
        log_w = log_w - log_w.logsumexp(1, keepdim=True)
        if denoise:
            x = denoised(x, n)
    if not bool(x.isfinite().all() & log_w.isfinite().any(1).all()):
        raise ValueError(
            "the SMC particles or their weights became NaN or infinite: the score returned a "
            "non-finite value, or the steps are too large for it"
        )
    return Particles(torch.where(known, y, x), log_w, resampled)


SMC_OPTIONS = tuple(
    name
    for name in inspect.signature(inpaint_particles).parameters
    if name not in ("sde", "score_fn", "observed", "mask", "particles", "generator")
)
"""The ``sampler_options`` that ``inpaint(method="smc")`` accepts."""


# -- helpers ---------------------------------------------------------------------------------------


def _check_observation(observed: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """``observed`` with its unknown entries zeroed and ``mask`` as a ``(B, *D)`` boolean."""
    if not (isinstance(observed, Tensor) and observed.is_floating_point() and observed.ndim >= 2):
        got = (
            f"{observed.dtype} of shape {tuple(observed.shape)}"
            if isinstance(observed, Tensor)
            else type(observed).__name__
        )
        raise ValueError(refusal("observed", "a floating-point tensor of shape (B, *D)", got))
    shapes = (tuple(observed.shape), tuple(observed.shape[1:]))
    if not (isinstance(mask, Tensor) and mask.dtype == torch.bool):
        got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(refusal("mask", "a boolean tensor (True where known)", got))
    if tuple(mask.shape) not in shapes:
        raise ValueError(
            refusal("mask's shape", f"observed's {shapes[0]} or {shapes[1]}", tuple(mask.shape))
        )
    known = mask.to(observed.device).expand(observed.shape)
    bad = known & ~observed.isfinite()
    if bool(bad.any()):
        where = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(
            refusal("observed", "finite where mask is True", observed[where].item())
            + f" at index {where}"
        )
    return torch.where(known, observed, torch.zeros_like(observed)), known


def _smc_grid(
    sde: SDE,
    times: Tensor | None,
    num_steps: int | None,
    grid: str | None,
    eps: float | None,
    rho: float,
) -> Tensor:
    """The float64 grid of :func:`inpaint_particles`, from ``times`` or ``time_grid``'s args."""
    if times is not None:
        given = [name for name, v in (("num_steps", num_steps), ("grid", grid), ("eps", eps)) if v]
        if given:
            raise ValueError(f"times is the whole grid; do not also give {', '.join(given)}")
        return check_times(sde, times)
    steps = SMC_DEFAULT_STEPS if num_steps is None else num_steps
    return time_grid(sde, steps, kind=SMC_DEFAULT_GRID if grid is None else grid, eps=eps, rho=rho)


def _prior(
    sde: SDE,
    generator: Generators,
    B: int,
    K: int,
    D: torch.Size,
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor:
    """``K`` prior draws per observation, ``(B, K, *D)``: one call of ``sde.prior_sampling`` for
    the whole cloud, or one per observation with its own generator."""
    if generator is None or isinstance(generator, torch.Generator):
        draws = sde.prior_sampling((B * K, *D), generator)
    else:
        draws = torch.cat([sde.prior_sampling((K, *D), g).to(device) for g in generator])
    return draws.to(device=device, dtype=dtype).reshape(B, K, *D)


def _log_normal(x: Tensor, mean: Tensor, var: Tensor, known: Tensor) -> Tensor:
    """``log N(x_o; mean_o, var I)`` over the known entries, ``(B, K)`` float64 (``var`` 0-d)."""
    d = known.flatten(2).sum(2).to(torch.float64)  # (B, 1): known entries per observation
    r = torch.where(known, x - mean, torch.zeros((), dtype=x.dtype, device=x.device))
    sq = r.to(torch.float64).flatten(2).pow(2).sum(2)
    return -0.5 * (d * torch.log(2 * math.pi * var) + sq / var)


def _uniforms(generator: Generators, B: int, device: torch.device) -> Tensor:
    """``B`` uniforms on ``[0, 1)``, float64: one per observation, from its own generator if each
    has one."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.rand(B, generator=generator, dtype=torch.float64, device=device)
    draws = [torch.rand(1, generator=g, dtype=torch.float64, device=g.device) for g in generator]
    return torch.cat(draws).to(device)


def _inverse_cdf(log_weights: Tensor, u: Tensor) -> Tensor:
    """For each row ``b``, the index ``j`` whose weight interval ``[c_{j-1}, c_j)`` holds
    ``u[b, m]``, with ``c`` the cumulative normalised weights: ``(B, M)`` int64."""
    cdf = log_weights.exp().cumsum(1)
    cdf = cdf / cdf[:, -1:]
    return torch.searchsorted(cdf, u.contiguous(), right=True).clamp_(max=cdf.shape[1] - 1)


def _resample(
    states: tuple[Tensor, ...], log_w: Tensor, threshold: float, generator: Generators
) -> tuple[tuple[Tensor, ...], Tensor, Tensor]:
    """Systematic resampling of the observations whose effective sample size ``1 / sum w^2`` is
    below ``threshold * K``: the particles' ``(B, K, ...)`` states (resampled together), their
    log-weights, and which observations were resampled ``(B,)`` int64."""
    B, K = log_w.shape
    now = 1 / (2 * log_w).exp().sum(1) < threshold * K
    u = _uniforms(generator, B, log_w.device)  # drawn always: each observation's draws are its own
    positions = (u[:, None] + torch.arange(K, dtype=torch.float64, device=log_w.device)) / K
    ancestors = torch.where(
        now[:, None], _inverse_cdf(log_w, positions), torch.arange(K, device=log_w.device)
    )
    log_w = torch.where(now[:, None], torch.full_like(log_w, -math.log(K)), log_w)
    picked = tuple(
        s.gather(1, ancestors.reshape(B, K, *(1,) * (s.ndim - 2)).expand(s.shape)) for s in states
    )
    return picked, log_w, now.to(torch.int64)
