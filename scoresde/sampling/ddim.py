"""DDIM (Song, Meng & Ermon, 2021): the denoising step written for any kernel ``N(alpha x_0, sigma^2
I)``.

From ``x`` at ``s = t_i`` to ``t = t_{i+1} < s``, with the denoised ``x_0 = (x + sigma_s^2 s(x,
s)) / alpha_s`` and the noise it implies, ``e = (x - alpha_s x_0) / sigma_s`` (their eq. 12)::

    c^2 = eta^2 sigma_t^2 (1 - exp(lambda_s - lambda_t)),          lambda = log(alpha^2 / sigma^2)
    x  <- alpha_t x_0 + sqrt(sigma_t^2 - c^2) e + c z,              z ~ N(0, I).

``c^2`` at ``eta = 1`` is the variance of ``x_t`` given ``x_s`` and ``x_0``, which makes the step
ancestral sampling on the grid (the DDPM posterior); ``eta = 0`` is deterministic, the first-order
exponential integrator of the probability-flow ODE in the data prediction (DPM-Solver++ of order
1), exact whenever ``x_0`` does not depend on ``x`` along the path. One score evaluation per step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoresde.sampling.base import GridCoefficients, StepHook, data_prediction, register_sampler
from scoresde.sampling.noise import GaussianNoise
from scoresde.sde import SDE, ScoreFn
from scoresde.validation import check_number

__all__ = ["ddim"]


@register_sampler("ddim", default_steps=50, default_grid="quadratic")
def ddim(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    times: Tensor,
    *,
    noise: GaussianNoise,
    on_step: StepHook,
    eta: float = 0.0,
) -> Tensor:
    """DDIM along ``times``.

    Options:
        eta: the noise scale, >= 0: 0 deterministic, 1 ancestral sampling; above 1 the step's noise
            is capped at ``sigma_t`` (no ``e`` term).
    """
    eta = check_number("eta", eta, 0)
    k = GridCoefficients.on(sde, times, x.dtype)
    c = eta * k.sigma[1:] * (-torch.expm1(k.log_snr[:-1] - k.log_snr[1:])).sqrt()
    c = torch.minimum(c, k.sigma[1:])
    # x_t = alpha_t x0 + r (x - alpha_s x0) / sigma_s + c z = keep x + to_x x0 + c z
    keep = (k.sigma[1:] ** 2 - c**2).sqrt() / k.sigma[:-1]
    to_x = (k.alpha[1:] - keep * k.alpha[:-1]).to(x.dtype)
    keep, c = keep.to(x.dtype), c.to(x.dtype)
    alpha, sigma = k.alpha.to(x.dtype), k.sigma.to(x.dtype)
    for i in range(len(times) - 1):
        x0 = data_prediction(score_fn, x, k.t[i].expand(x.shape[0]), alpha[i], sigma[i])
        x = keep[i] * x + to_x[i] * x0
        if eta > 0:
            x = x.addcmul_(noise.like(x), c[i])
        x = on_step(i + 1, x)
    return x
