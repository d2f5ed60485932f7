"""Variance-preserving SDE on the 8x8 digits (DDPM in the continuous limit).

``python -m scoresde.run --dataset digits --sde vp --sampler pc`` uses this file: the defaults of
``configs/default_digits.py`` (why each, measured, is said there). Sampling ends at the SDE's
``sampling_eps = 1e-3`` (``sigma = 0.014``, a tenth of a grey level's step in model units) and
denoises there.
"""

from configs.default_digits import get_default_configs


def get_config():
    config = get_default_configs()
    config.sde.name = "vp"
    return config
