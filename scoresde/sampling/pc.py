"""The predictor–corrector sampler (Song et al., 2021, Algorithm 1) and Euler–Maruyama.

On a decreasing grid ``t_0 = T > t_1 > ... > t_n = eps`` the sample is corrected at every grid
time and predicted from each grid time to the next::

    x ~ p_T
    for i = 0, ..., n:
        repeat n_steps times: x <- corrector(x, t_i)    (one MCMC step at t_i)
        if i < n: x <- predictor(x, t_i -> t_{i+1})

so the sample that leaves the loop is one of ``p_eps``. Score evaluations: ``n p + (n + 1) c
n_steps``, with ``p`` and ``c`` the predictor's and corrector's per step (1, or 0 for ``none``).
Euler–Maruyama sampling is this loop with the ``euler_maruyama`` predictor and no corrector.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from scoresde.sampling.base import StepHook, register_sampler
from scoresde.sampling.correctors import CORRECTORS
from scoresde.sampling.noise import GaussianNoise
from scoresde.sampling.predictors import PREDICTORS
from scoresde.sde import SDE, ScoreFn
from scoresde.validation import check_choice, check_int, check_positive

__all__ = ["pc", "euler_maruyama"]


@register_sampler("pc", choices={"predictor": PREDICTORS, "corrector": CORRECTORS})
def pc(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    times: Tensor,
    *,
    noise: GaussianNoise,
    on_step: StepHook,
    predictor: str = "reverse_diffusion",
    corrector: str = "langevin",
    snr: float = 0.16,
    n_steps: int = 1,
) -> Tensor:
    """Predictor–corrector sampling (the reference implementation's defaults).

    Options:
        predictor: a name in :data:`~scoresde.sampling.PREDICTORS`: ``"euler_maruyama"``,
            ``"reverse_diffusion"``, ``"ancestral_sampling"`` or ``"none"``.
        corrector: a name in :data:`~scoresde.sampling.CORRECTORS`: ``"langevin"``, ``"ald"`` or
            ``"none"``.
        snr: the corrector's target signal-to-noise ratio, > 0.
        n_steps: corrector steps per grid time, >= 0.
    """
    check_choice("predictor", predictor, PREDICTORS)
    check_choice("corrector", corrector, CORRECTORS)
    check_positive("snr", snr)
    n_steps = check_int("n_steps", n_steps, minimum=0)
    if predictor == "none" and (corrector == "none" or n_steps == 0):
        raise ValueError("predictor='none' with no corrector steps does nothing; choose one")
    args = (sde, score_fn, times, noise, x.dtype)
    step = PREDICTORS[predictor](*args)
    correct = CORRECTORS[corrector](*args, snr=snr)
    return _loop(x, len(times) - 1, step.update, correct.update, n_steps, on_step)


@register_sampler("em")
def euler_maruyama(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    times: Tensor,
    *,
    noise: GaussianNoise,
    on_step: StepHook,
) -> Tensor:
    """Euler–Maruyama on the reverse-time SDE: the ``euler_maruyama`` predictor, no corrector."""
    step = PREDICTORS["euler_maruyama"](sde, score_fn, times, noise, x.dtype)
    return _loop(x, len(times) - 1, step.update, None, 0, on_step)


def _loop(
    x: Tensor,
    n: int,
    predict: Callable[[Tensor, int], Tensor],
    correct: Callable[[Tensor, int], Tensor] | None,
    n_steps: int,
    on_step: StepHook,
) -> Tensor:
    """The loop of the module docstring; ``on_step`` after every move."""
    for i in range(n + 1):
        for _ in range(n_steps):
            x = on_step(i, correct(x, i))
        if i < n:
            x = on_step(i + 1, predict(x, i))
    return x
