"""scoresde: score-based generative modelling with stochastic differential equations.

Everything is a function of an :class:`SDE` object and a score function
``score_fn(x, t) -> grad_x log p_t(x)`` (a :data:`ScoreFn`).
"""

from scoresde import guidance
from scoresde.checkpoint import Checkpoint, CheckpointError, latest_checkpoint, load_checkpoint
from scoresde.datasets import DATASETS, Dataset, load_dataset
from scoresde.datasets.gmm import GaussianMixture
from scoresde.datasets.toy import TOY_DATASETS, batch_sampler, get_dataset
from scoresde.inpainting import inpaint, inpaint_particles
from scoresde.likelihood import LikelihoodResult, bits_per_dim, log_likelihood
from scoresde.losses import ddpm_loss, dsm_loss, get_loss_fn, smld_loss
from scoresde.nets import MLPScoreNet, UNet, get_model
from scoresde.sampling import (
    CORRECTORS,
    GRIDS,
    PREDICTORS,
    SAMPLERS,
    SampleResult,
    sample,
    time_grid,
)
from scoresde.score import get_cond_score_fn, get_score_fn
from scoresde.sde import (
    SDE,
    VESDE,
    VPSDE,
    LinearDriftSDE,
    LinearSDE,
    ReverseSDE,
    ScoreFn,
    SubVPSDE,
    batch_broadcast,
    gaussian_logp,
)
from scoresde.training import EMA, ConfigMismatchError, NonFiniteLossError, TrainResult, train

__version__ = "0.1.0"

__all__ = [
    "SDE",
    "LinearDriftSDE",
    "LinearSDE",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "ReverseSDE",
    "ScoreFn",
    "batch_broadcast",
    "gaussian_logp",
    "GaussianMixture",
    "guidance",
    "inpaint",
    "inpaint_particles",
    "log_likelihood",
    "bits_per_dim",
    "LikelihoodResult",
    "sample",
    "SampleResult",
    "SAMPLERS",
    "GRIDS",
    "time_grid",
    "PREDICTORS",
    "CORRECTORS",
    "train",
    "TrainResult",
    "EMA",
    "NonFiniteLossError",
    "ConfigMismatchError",
    "Checkpoint",
    "CheckpointError",
    "load_checkpoint",
    "latest_checkpoint",
    "TOY_DATASETS",
    "get_dataset",
    "DATASETS",
    "Dataset",
    "load_dataset",
    "batch_sampler",
    "get_model",
    "MLPScoreNet",
    "UNet",
    "get_score_fn",
    "get_cond_score_fn",
    "dsm_loss",
    "smld_loss",
    "ddpm_loss",
    "get_loss_fn",
]
