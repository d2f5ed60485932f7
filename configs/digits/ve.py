"""Variance-exploding SDE on the 8x8 digits (SMLD / NCSN in the continuous limit).

``python -m scoresde.run --dataset digits --sde ve`` uses this file. ``sigma_max = 10`` exceeds the
largest distance between two training images in model units (9.6; Song & Ermon, 2020, technique
1), so the prior ``N(0, sigma_max^2 I)`` covers the data; ``sigma_min = 0.01`` is a tenth of the
step between grey levels (0.125). ``eval.eps = 0.217`` is where ``sigma = sigma_min (sigma_max /
sigma_min)^t = 0.045``, as for VP at its ``eval.eps = 1e-2`` (not measured for VE itself).
"""

from configs.default_digits import get_default_configs


def get_config():
    config = get_default_configs()
    config.sde.name = "ve"
    config.sde.sigma_min = 0.01
    config.sde.sigma_max = 10.0
    config.eval.eps = 0.217
    return config
