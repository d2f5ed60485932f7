"""Variance-preserving SDE on toy 2D data (DDPM in the continuous limit).

``python -m scoresde.run --sde vp`` uses this file. The PC sampler's default predictor is the
reverse-diffusion step of DDPM's discretisation, followed by one Langevin corrector step.
"""

from configs.default_toy import get_default_configs


def get_config():
    config = get_default_configs()
    config.sde.name = "vp"
    config.sampling.predictor = "reverse_diffusion"
    config.sampling.corrector = "langevin"
    return config
