"""What every sampler is: a registered function that steps a batch along a time grid.

A sampler is a function::

    fn(sde, score_fn, x, times, *, noise, on_step, **options) -> x

that moves ``x``, a sample of ``p_{times[0]}``, along the decreasing grid ``times`` (float64, on
``x``'s device) to a sample of ``p_{times[-1]}``. It draws randomness only from ``noise``
(:class:`~scoresde.sampling.noise.GaussianNoise`) and calls ``x = on_step(i, x)`` whenever the state
reaches ``times[i]`` (``i >= 1``; some samplers more than once per time, e.g. after each corrector
step), using what it returns: that is how :func:`scoresde.sample` keeps a trajectory, checks for
non-finite values and lets a caller project the state (inpainting). Its options are keyword-only
arguments with defaults; :func:`scoresde.sample` refuses any other option by name.

:func:`register_sampler` adds one to :data:`SAMPLERS`; adding a sampler is one file and this line.
:class:`GridCoefficients` tabulates what most solvers need on the grid.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from scoresde.registry import Registry
from scoresde.sampling.noise import GaussianNoise
from scoresde.sde import SDE, ScoreFn
from scoresde.validation import refusal

__all__ = [
    "SAMPLERS",
    "SamplerFn",
    "SamplerSpec",
    "StepHook",
    "GridCoefficients",
    "register_sampler",
    "data_prediction",
    "expand_time",
    "GridStep",
]

StepHook = Callable[[int, Tensor], Tensor]
"""``on_step(i, x) -> x``: called when the state reaches ``times[i]``; its answer is the state."""

SamplerFn = Callable[..., Tensor]
"""``fn(sde, score_fn, x, times, *, noise, on_step, **options) -> x`` (see the module docstring)."""

_PROTOCOL = ("sde", "score_fn", "x", "times", "noise", "on_step")


@dataclass(frozen=True)
class SamplerSpec:
    """A registered sampler.

    Attributes:
        fn: the sampler function.
        default_steps: the number of steps of its default grid; ``None`` means ``sde.N - 1``
            (the reference implementation's grid ``linspace(T, eps, N)`` of ``N`` times).
        default_grid: the kind of its default grid (:data:`~scoresde.sampling.grids.GRIDS`).
        adaptive: whether, with the given options, it chooses its own steps (``times`` then only
            says where it reports the state, and :func:`scoresde.sample` adds the trajectory
            times to its grid and refuses ``num_steps``).
        choices: for an option that takes one of a set of names, those names (a tuple or a
            registry), so that the config and the command line can list them.
    """

    fn: SamplerFn
    default_steps: int | None
    default_grid: str
    adaptive: Callable[[dict[str, Any]], bool]
    choices: Mapping[str, Iterable[str]]

    @property
    def __name__(self) -> str:  # noqa: A003 (registries name their entries by __name__)
        return self.fn.__name__

    @property
    def options(self) -> dict[str, Any]:
        """The sampler's options and their defaults."""
        params = inspect.signature(self.fn).parameters.values()
        return {p.name: p.default for p in params if p.name not in _PROTOCOL}

    def check_options(self, name: str, options: dict[str, Any]) -> None:
        """Raise ``ValueError`` naming any option this sampler does not take."""
        unknown = [key for key in options if key not in self.options]
        if unknown:
            takes = ", ".join(map(repr, self.options)) or "no options"
            raise ValueError(
                f"sampler {name!r} does not use {', '.join(map(repr, unknown))}; it takes {takes}"
            )


SAMPLERS: Registry[SamplerSpec] = Registry("sampler")
"""Samplers by name, as :func:`scoresde.sample` finds them."""


def register_sampler(
    name: str,
    *,
    default_steps: int | None = None,
    default_grid: str = "uniform",
    adaptive: Callable[[dict[str, Any]], bool] | None = None,
    choices: Mapping[str, Iterable[str]] | None = None,
) -> Callable[[SamplerFn], SamplerFn]:
    """Decorator: register the decorated sampler function as ``name`` in :data:`SAMPLERS`, with
    the fields of :class:`SamplerSpec` (``adaptive=None``: never adaptive)."""

    def add(fn: SamplerFn) -> SamplerFn:
        spec = SamplerSpec(fn, default_steps, default_grid, adaptive or _fixed, choices or {})
        SAMPLERS.add(name, spec)
        return fn

    return add


def _fixed(options: dict[str, Any]) -> bool:
    return False


@dataclass(frozen=True)
class GridCoefficients:
    """The kernel on a grid: what exponential-integrator and EDM-style solvers step with.

    Attributes (each ``(n + 1,)``, index ``i`` at ``times[i]``):
        t: the times in the samples' dtype (what the score is evaluated at).
        alpha, sigma: the kernel ``N(alpha x_0, sigma^2 I)``, float64.
        log_snr: ``lambda = log(alpha^2 / sigma^2)``, float64.
        scaled_sigma: ``sigma / alpha``, EDM's noise level of ``x / alpha``, float64.
    """

    t: Tensor
    alpha: Tensor
    sigma: Tensor
    log_snr: Tensor
    scaled_sigma: Tensor

    @classmethod
    def on(cls, sde: SDE, times: Tensor, dtype: torch.dtype) -> GridCoefficients:
        """Tabulate the kernel of ``sde`` on the float64 grid ``times``."""
        alpha, sigma = (c.to(torch.float64) for c in sde.kernel_coefficients(times))
        if not bool((sigma > 0).all() & (alpha > 0).all() & sigma.isfinite().all()):
            raise ValueError(
                refusal("times", "times where alpha(t) > 0 and 0 < sigma(t) < inf", times.tolist())
            )
        log_snr = 2 * (alpha.log() - sigma.log())
        return cls(times.to(dtype), alpha, sigma, log_snr, sigma / alpha)


def data_prediction(
    score_fn: ScoreFn, x: Tensor, t: Tensor, alpha: Tensor, sigma: Tensor
) -> Tensor:
    """Tweedie's ``E[x_0 | x_t = x] = (x + sigma^2 s(x, t)) / alpha`` (one score evaluation).

    ``t`` is the batch's time ``(B,)``; ``alpha`` and ``sigma`` are 0-d, in ``x``'s dtype.
    """
    return (x + sigma**2 * score_fn(x, t)) / alpha


def expand_time(t: Tensor, x: Tensor) -> Tensor:
    """The 0-d time ``t`` as a batch time ``(B,)`` for ``x`` (a broadcast view, no copy)."""
    return t.expand(x.shape[0])


class GridStep:
    """A step rule along a grid (a predictor or a corrector): built once per sampling run, it
    tabulates its coefficients in :meth:`prepare` and steps in ``update(x, i)``.

    Arguments:
        sde: the forward SDE.
        score_fn: the score ``s(x, t)``.
        times: the float64 grid ``t_0 = T > ... > t_n = eps`` on the samples' device.
        noise: the source of all randomness.
        dtype: the samples' dtype, for tabulated coefficients.
    """

    def __init__(
        self, sde: SDE, score_fn: ScoreFn, times: Tensor, noise: GaussianNoise, dtype: torch.dtype
    ):
        self.sde = sde
        self.score_fn = score_fn
        self.noise = noise
        self.t = times.to(dtype)
        self.prepare(times, dtype)

    def prepare(self, times: Tensor, dtype: torch.dtype) -> None:
        """Tabulate coefficients on the float64 grid (cast to ``dtype``) and refuse what the rule
        cannot do, before any sampling work. Default: nothing."""

    def time(self, x: Tensor, i: int) -> Tensor:
        """``t_i`` for the batch ``x``, shape ``(B,)``."""
        return self.t[i].expand(x.shape[0])
