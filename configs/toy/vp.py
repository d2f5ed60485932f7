"""Variance-preserving SDE on toy 2D data (DDPM in the continuous limit).

``python -m scoresde.run --sde vp`` uses this file. Sampling stops at ``eps = 0.04``, where
``sigma(eps) = sqrt(1 - exp(-B(eps))) = 0.14``, and denoises there (see ``configs/default_toy.py``).
"""

from configs.default_toy import get_default_configs


def get_config():
    config = get_default_configs()
    config.sde.name = "vp"
    config.sampling.eps = 0.04
    return config
