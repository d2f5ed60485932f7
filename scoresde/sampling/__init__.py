"""Samplers behind :func:`sample`, each a function registered by name in :data:`SAMPLERS`.

================  ==================================================================================
sampler           what it is (module)
================  ==================================================================================
``em``            Euler–Maruyama on the reverse-time SDE (``pc``)
``pc``            predictor–corrector, Song et al. 2021 Alg. 1, with the predictors of
                  :data:`PREDICTORS` and correctors of :data:`CORRECTORS` (``pc``)
``ode``           the probability-flow ODE through torchdiffeq (``ode``)
``ddim``          DDIM, deterministic or stochastic (``ddim``)
``dpm_solver``    DPM-Solver++, multistep of order 1–3 in the data prediction; ODE or SDE
                  variant (``dpm_solver``)
``unipc``         UniPC (bh2): a multistep predictor and a corrector at no extra evaluation
                  (``unipc``)
``ipndm``         iPNDM: Adams–Bashforth of order 1–4 on EDM's ODE in ``sigma / alpha``
                  (``ipndm``)
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

from scoresde.sampling import (  # noqa: F401 (each module registers its sampler)
    adaptive_sde,
    ddim,
    dpm_solver,
    heun,
    ipndm,
    ode,
    pc,
    unipc,
)
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
