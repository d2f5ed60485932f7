"""Variance-exploding SDE on toy 2D data (SMLD / NCSN in the continuous limit).

``python -m scoresde.run --sde ve`` uses this file. ``sigma_max = 10`` is of the order of the
largest distance between data points of the toy densities (Song & Ermon, 2020), so the prior
``N(0, sigma_max^2 I)`` covers them. Sampling stops at ``eps = 0.36``, where
``sigma(eps) = sigma_min (sigma_max / sigma_min)^eps = 0.12``, and denoises there.
"""

from configs.default_toy import get_default_configs


def get_config():
    config = get_default_configs()
    config.sde.name = "ve"
    config.sde.sigma_min = 0.01
    config.sde.sigma_max = 10.0
    config.sampling.eps = 0.36
    return config
