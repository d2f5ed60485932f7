"""``scoresde.sample``: one entry point for every sampler, usable with any score function.

A sampler turns a prior sample ``x ~ p_T`` into a sample of the data distribution, given the forward
SDE and its score ``s(x, t) = grad_x log p_t(x)``, by stepping along a decreasing time grid
``T = t_0 > t_1 > ... > t_n = eps``. Samplers are registered by name in :data:`SAMPLERS`
(:mod:`scoresde.sampling.base` says what one is); each takes its own options.

**The time grid** is data: pass ``times`` (any strictly decreasing 1-D tensor inside ``(0, T]``),
or let ``num_steps`` steps of :func:`~scoresde.sampling.grids.time_grid` of kind ``grid`` from
``T`` to ``eps`` make it (``num_steps`` counts steps everywhere in scoresde: ``n`` steps, ``n + 1``
times). Each sampler has a default number of steps and kind of grid; ``eps`` defaults to
``sde.sampling_eps``. An adaptive sampler (the ODE with ``dopri5``) chooses its own steps: its grid
only says where it reports the state (by default just ``[T, eps]``).

**Denoising.** With ``denoise=True`` the sample of ``p_eps`` is replaced by its posterior mean
``E[x_0 | x_eps] = (x + sigma(eps)^2 s(x, eps)) / alpha(eps)`` (one more score evaluation).

**Cost.** ``nfe`` in the returned :class:`SampleResult` counts the calls of ``score_fn`` exactly
(one call on a batch is one evaluation), the denoising step included.

**Randomness** comes only from ``generator``: one ``torch.Generator`` for the batch, or one per
sample, so that sample ``i`` is the same whatever batch it is drawn in (see
:mod:`~scoresde.sampling.noise`).

**Checks.** The score's first answer is checked (shape, device, finite values); a NaN or infinity
that appears later is caught at the end and reported with the grid time where it first appeared.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from scoresde.sampling.base import SAMPLERS, SamplerSpec
from scoresde.sampling.denoise import tweedie_denoise
from scoresde.sampling.grids import GRIDS, check_times, time_grid
from scoresde.sampling.noise import GaussianNoise, Generators, check_generators
from scoresde.score_calls import CountedScore
from scoresde.sde import SDE, ScoreFn, unchecked_times
from scoresde.validation import check_bool, check_choice, refusal

__all__ = ["SampleResult", "sample"]

StepHookFn = Callable[[Tensor, Tensor], Tensor]
"""``step_hook(t, x) -> x``: the caller's projection of the state at grid time ``t`` (0-d)."""


class SampleResult(NamedTuple):
    """What :func:`sample` returns with ``return_info=True``.

    Attributes:
        samples: the samples, shape ``(B, *D)``.
        nfe: the number of score evaluations the call made (one call on a batch counts once).
        grid: the time grid the sampler stepped along (float64); ``grid[-1]`` is ``eps``.
        times: the grid times at which the trajectory was kept, decreasing, shape ``(K,)``; ``None``
            without ``trajectory_times``.
        trajectory: the samples at ``times`` (before denoising), shape ``(K, B, *D)``; ``None``
            without ``trajectory_times``.
    """

    samples: Tensor
    nfe: int
    grid: Tensor
    times: Tensor | None
    trajectory: Tensor | None


def _batch_shape(shape: Sequence[int]) -> tuple[int, ...]:
    valid = (
        isinstance(shape, Sequence)
        and len(shape) > 0
        and all(
            isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0 for n in shape
        )
    )
    if not valid:
        raise ValueError(refusal("shape", "a non-empty sequence of positive ints (B, *D)", shape))
    return tuple(int(n) for n in shape)


def _grid(
    sde: SDE,
    spec: SamplerSpec,
    adaptive: bool,
    times: Tensor | None,
    num_steps: int | None,
    grid: str | None,
    eps: float | None,
    rho: float,
    ends: dict[str, float | None],
) -> Tensor:
    """The float64 grid of a call, from ``times`` or from ``time_grid``'s arguments."""
    if times is not None:
        pairs = (("num_steps", num_steps), ("grid", grid), ("eps", eps), *ends.items())
        given = [name for name, value in pairs if value is not None]
        if given:
            raise ValueError(f"times is the whole grid; do not also give {', '.join(given)}")
        return check_times(sde, times)
    if adaptive:
        if num_steps is not None:
            raise ValueError(
                "num_steps is for fixed-step samplers; this adaptive sampler chooses its own steps "
                "(give times= for the times at which to report the state)"
            )
        num_steps = 1
    elif num_steps is None:
        num_steps = sde.N - 1 if spec.default_steps is None else spec.default_steps
    kind = spec.default_grid if grid is None else check_choice("grid", grid, GRIDS)
    return time_grid(sde, num_steps, kind=kind, eps=eps, rho=rho, **ends)


def sample(
    sde: SDE,
    score_fn: ScoreFn,
    shape: Sequence[int],
    *,
    sampler: str = "pc",
    num_steps: int | None = None,
    times: Tensor | None = None,
    grid: str | None = None,
    eps: float | None = None,
    rho: float = 7.0,
    sigma_max: float | None = None,
    sigma_min: float | None = None,
    denoise: bool = True,
    generator: Generators = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    trajectory_times: Iterable[float] | Tensor | None = None,
    step_hook: StepHookFn | None = None,
    return_info: bool = False,
    **options: Any,
) -> Tensor | SampleResult:
    """Draw samples by reversing ``sde`` with the score ``score_fn``.

    Arguments:
        sde: the forward SDE (any :class:`~scoresde.SDE`).
        score_fn: ``s(x, t) -> grad_x log p_t(x)``, ``x`` of shape ``(B, *D)``, ``t`` ``(B,)``. It
            runs under ``torch.no_grad()``; a score that needs gradients (an energy's, a
            classifier's) takes them inside ``torch.enable_grad()`` on ``x.detach()``.
        shape: ``(B, *D)``, the shape of the batch of samples.
        sampler: a name in :data:`SAMPLERS` (see ``scoresde.sampling`` for the list).
        num_steps: the number of steps of the grid ``time_grid(sde, num_steps, kind=grid,
            eps=eps, rho=rho)``; default the sampler's own (``sde.N - 1`` for ``em``, ``pc`` and
            fixed-step ``ode``: the reference implementation's grid ``linspace(T, eps, N)``).
        times: the grid itself, instead of ``num_steps``, ``grid`` and ``eps``.
        grid: the kind of grid (:data:`~scoresde.sampling.grids.GRIDS`); default the sampler's.
        eps: the grid's last time, in ``(0, T)``; default ``sde.sampling_eps``.
        rho: the exponent of the ``karras`` grid.
        sigma_max, sigma_min: the grid's ends as noise levels ``sigma / alpha`` (EDM's names):
            the first step goes from ``T`` straight to ``sigma_max``; ``sigma_min`` replaces
            ``eps`` (see :func:`~scoresde.sampling.grids.time_grid`).
        denoise: replace the final sample by Tweedie's ``E[x_0 | x_eps]`` (one score evaluation).
        generator: the only source of randomness: a ``torch.Generator`` for the batch, or a
            sequence of ``B`` generators (one per sample; sample ``i`` then does not depend on the
            batch it is drawn in, for samplers whose steps treat samples independently).
        dtype: the samples' floating dtype (default torch's default dtype).
        device: the samples' device (default the generator's, or torch's default without one).
            The prior sample is drawn by ``sde.prior_sampling(shape, generator)`` and then cast to
            ``dtype`` and moved to ``device``, so an SDE needs nothing beyond that signature.
        trajectory_times: times in ``[eps, T]`` at which to keep the state; a fixed-step sampler
            keeps it at the nearest grid times, an adaptive one at the exact times.
        step_hook: ``step_hook(t, x) -> x``, applied to the state every time it reaches a grid time
            ``t`` (after each predictor and corrector move): a projection such as inpainting's
            replacement of the known values.
        return_info: return a :class:`SampleResult` instead of the samples alone.
        **options: the sampler's own options (e.g. ``predictor``, ``corrector``, ``snr``,
            ``n_steps`` for ``pc``; ``method``, ``rtol``, ``atol`` for ``ode``; ``eta`` for
            ``ddim``); an option the sampler does not take raises ``ValueError`` naming it.

    Returns:
        the samples, shape ``shape``; with ``return_info``, a :class:`SampleResult`.

    Raises:
        ValueError: for a bad argument (naming it and what is allowed), a grid the sampler cannot
            follow, a ``score_fn`` whose first answer has the wrong shape, device or a non-finite
            value, or samples that turned non-finite (naming the grid time where they did).
    """
    shape = _batch_shape(shape)
    spec = SAMPLERS.lookup(sampler)
    spec.check_options(sampler, options)
    check_bool("denoise", denoise)
    check_bool("return_info", return_info)
    check_generators(generator, shape[0])
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(refusal("dtype", "a floating-point torch.dtype", dtype))
    noise = GaussianNoise(generator)
    device = torch.device(device if device is not None else noise.device or "cpu")

    adaptive = spec.adaptive(options)
    ends = {"sigma_max": sigma_max, "sigma_min": sigma_min}
    grid64 = _grid(sde, spec, adaptive, times, num_steps, grid, eps, rho, ends)
    wanted = _trajectory_times(trajectory_times, grid64)
    if adaptive and wanted is not None:
        grid64 = torch.cat([grid64, wanted]).unique().flip(0)
    grid64 = grid64.to(device)
    keep = None if wanted is None else set(_nearest(grid64, wanted.to(device)))

    counted = CountedScore(score_fn, defer_finite_check=True)
    grid_x = grid64.to(dtype)
    kept: dict[int, Tensor] = {}
    first_bad = torch.full((), -1, device=device)

    def on_step(i: int, x: Tensor) -> Tensor:
        nonlocal first_bad
        if step_hook is not None:
            x = step_hook(grid_x[i], x)
        first_bad = torch.where((first_bad < 0) & ~x.isfinite().all(), i, first_bad)
        if keep is not None and i in keep:
            kept[i] = x.clone()
        return x

    with torch.no_grad(), unchecked_times():
        x = on_step(0, noise.prior(sde, shape, dtype, device))
        x = spec.fn(sde, counted, x, grid64, noise=noise, on_step=on_step, **options)
        counted.check_first_answer_finite()
        if int(first_bad) >= 0:
            raise ValueError(
                f"the samples became NaN or infinite at t = {grid64[int(first_bad)].item():.6g} "
                f"(grid step {int(first_bad)} of {len(grid64) - 1}) with sampler={sampler!r}: "
                "the score returned a non-finite value there, or the steps are too large for it"
            )
        if denoise:
            x = tweedie_denoise(sde, counted, x, grid_x[-1])
    if not return_info:
        return x
    if keep is None:
        return SampleResult(x, counted.calls, grid64.cpu(), None, None)
    indices = sorted(keep)
    trajectory = torch.stack([kept[i] for i in indices])
    return SampleResult(x, counted.calls, grid64.cpu(), grid64[indices].cpu(), trajectory)


def _trajectory_times(values: Iterable[float] | Tensor | None, grid: Tensor) -> Tensor | None:
    """The requested trajectory times as float64, each inside the grid's span, or ``None``."""
    if values is None:
        return None
    given = values if isinstance(values, Tensor) else list(values)
    t = torch.as_tensor(given, dtype=torch.float64).reshape(-1)
    lo, hi = grid[-1].item(), grid[0].item()
    bad = ~((t >= lo) & (t <= hi))
    if t.numel() == 0 or bool(bad.any()):
        got = t[bad][0].item() if bool(bad.any()) else "none"
        raise ValueError(refusal("trajectory_times", f"times in [eps, T] = [{lo}, {hi}]", got))
    return t


def _nearest(grid: Tensor, wanted: Tensor) -> list[int]:
    """The index of the grid time nearest to each wanted time."""
    return (grid[None, :] - wanted[:, None]).abs().argmin(1).tolist()
