"""Samplers behind :func:`sample`: predictors, correctors, the PC loop, the probability-flow ODE.

:func:`sample` is the entry point. Predictors and correctors are registered by name in
:data:`PREDICTORS` and :data:`CORRECTORS`; subclass :class:`Predictor` or :class:`Corrector` and
decorate with :func:`register_predictor` / :func:`register_corrector` to add one.
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
