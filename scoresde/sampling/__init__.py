"""Samplers behind :func:`sample`, each a function registered by name in :data:`SAMPLERS`.

================  ==================================================================================
sampler           what it is (module)
================  ==================================================================================
``em``            Euler–Maruyama on the reverse-time SDE (``pc``)
``pc``            predictor–corrector, Song et al. 2021 Alg. 1, with the predictors of
                  :data:`PREDICTORS` and correctors of :data:`CORRECTORS` (``pc``)
``ode``           the probability-flow ODE through torchdiffeq (``ode``)
``ddim``          DDIM, deterministic or stochastic (``ddim``)
``heun``          EDM's second-order Heun sampler in ``x / alpha`` and ``sigma / alpha``, with
                  optional churn (Karras et al. 2022, Alg. 2) (``heun``)
``adaptive_sde``  the reverse-time SDE with adaptive steps and error control (Jolicoeur-Martineau
                  et al. 2021, Alg. 1); rejected steps keep their Brownian path (``adaptive_sde``)
================  ==================================================================================

A sampler is one small function (:mod:`scoresde.sampling.base` says what it takes); adding one is a
module with a function decorated by :func:`register_sampler`, imported here. Predictors and
correctors of the ``pc`` sampler are registered the same way (:func:`register_predictor`,
:func:`register_corrector`). :func:`time_grid` makes the time grids every sampler steps along.
"""

from scoresde.sampling import adaptive_sde, ddim, heun, ode, pc  # noqa: F401 (registers the samplers)
from scoresde.sampling.base import SAMPLERS, GridCoefficients, SamplerSpec, register_sampler
from scoresde.sampling.correctors import (
    CORRECTORS,
    AnnealedLangevinDynamics,
    Corrector,
    LangevinCorrector,
    NoneCorrector,
    register_corrector,
)
from scoresde.sampling.denoise import tweedie_denoise
from scoresde.sampling.grids import GRIDS, check_times, time_grid
from scoresde.sampling.predictors import (
    PREDICTORS,
    AncestralSamplingPredictor,
    EulerMaruyamaPredictor,
    NonePredictor,
    Predictor,
    ReverseDiffusionPredictor,
    register_predictor,
)
from scoresde.sampling.sampler import SampleResult, sample

__all__ = [
    "sample",
    "SampleResult",
    "SAMPLERS",
    "SamplerSpec",
    "register_sampler",
    "GridCoefficients",
    "GRIDS",
    "time_grid",
    "check_times",
    "PREDICTORS",
    "CORRECTORS",
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
]
