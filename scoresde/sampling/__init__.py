"""Samplers behind :func:`sample`: predictors, correctors, the PC loop, the probability-flow ODE.

:func:`sample` is the entry point. Predictors and correctors are registered by name in
:data:`PREDICTORS` and :data:`CORRECTORS`; to add one, subclass :class:`Predictor` or
:class:`Corrector` (one constructor for both: ``(sde, score_fn, grid, *, ndim, generator)``, plus
``snr`` for correctors), implement ``update`` (a predictor's step from ``t_i`` to ``t_{i+1}``, or
one MCMC step of a corrector) and, to tabulate coefficients on the grid once, ``prepare``; then
decorate it with :func:`register_predictor` / :func:`register_corrector`.
"""

from scoresde.sampling.correctors import (
    CORRECTORS,
    AnnealedLangevinDynamics,
    Corrector,
    LangevinCorrector,
    NoneCorrector,
    register_corrector,
)
from scoresde.sampling.denoise import tweedie_denoise
from scoresde.sampling.ode import ODE_METHODS, probability_flow_solve
from scoresde.sampling.predictors import (
    PREDICTORS,
    AncestralSamplingPredictor,
    EulerMaruyamaPredictor,
    NonePredictor,
    Predictor,
    ReverseDiffusionPredictor,
    register_predictor,
)
from scoresde.sampling.sampler import SAMPLERS, SampleResult, sample

__all__ = [
    "sample",
    "SampleResult",
    "SAMPLERS",
    "PREDICTORS",
    "CORRECTORS",
    "ODE_METHODS",
    "Predictor",
    "Corrector",
    "register_predictor",
    "register_corrector",
    "EulerMaruyamaPredictor",
    "ReverseDiffusionPredictor",
    "AncestralSamplingPredictor",
    "NonePredictor",
    "LangevinCorrector",
    "AnnealedLangevinDynamics",
    "NoneCorrector",
    "tweedie_denoise",
    "probability_flow_solve",
]
