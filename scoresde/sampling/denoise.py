"""The final denoising step: Tweedie's formula for the posterior mean of the clean data."""

from __future__ import annotations

from torch import Tensor

from scoresde.sde import SDE, ScoreFn

__all__ = ["tweedie_denoise"]


def tweedie_denoise(sde: SDE, score_fn: ScoreFn, x: Tensor, t: Tensor) -> Tensor:
    """``E[x_0 | x_t = x]`` by Tweedie's formula, for a kernel ``N(alpha(t) x_0, sigma(t)^2 I)``::

        E[x_0 | x_t] = (x_t + sigma(t)^2 s(x_t, t)) / alpha(t).

    It is exact for the true score of ``p_t``, whatever the size of ``sigma(t)``, so it stays right
    for an SDE whose noise is not small at the sampler's final time. Costs one score evaluation.

    Arguments:
        sde: an SDE with a linear-Gaussian kernel; ``alpha`` and ``sigma`` come from
            :meth:`~scoresde.SDE.kernel_coefficients`.
        score_fn: the score ``s(x, t)``.
        x: samples at time ``t``, shape ``(B, *D)``.
        t: the time, a 0-dimensional tensor inside ``[0, T]``.

    Returns:
        the denoised samples, shape ``(B, *D)``.
    """
    alpha, sigma = sde.kernel_coefficients(t.reshape(1), x.ndim)
    score = score_fn(x, t.expand(x.shape[0]))
    return (x + sigma**2 * score) / alpha
