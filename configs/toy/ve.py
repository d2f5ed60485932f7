"""Variance-exploding SDE on toy 2D data (SMLD / NCSN in the continuous limit).

``python -m scoresde.run --sde ve`` uses this file. ``sigma_max`` is of the order of the largest
distance between data points (Song & Ermon, 2020), so the prior covers the data. The PC sampler's
default is the paper's for VE: reverse diffusion with one Langevin corrector step.
"""

from configs.default_toy import get_default_configs


def get_config():
    config = get_default_configs()
    config.sde.name = "ve"
    config.sde.sigma_min = 0.01
    config.sde.sigma_max = 10.0
    config.sampling.predictor = "reverse_diffusion"
    config.sampling.corrector = "langevin"
    return config
