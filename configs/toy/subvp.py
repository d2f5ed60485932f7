"""Sub-VP SDE on toy 2D data: the VP SDE's mean with a smaller variance.

``python -m scoresde.run --sde subvp`` uses this file. Sampling stops at ``eps = 0.12``, where
``sigma(eps) = 1 - exp(-B(eps)) = 0.14`` (the sub-VP std grows like ``B(t)``, not its square root,
hence a later time than VP's for the same noise), and denoises there. The sub-VP SDE has no
discrete Markov chain, so ancestral sampling does not apply.
"""

from configs.default_toy import get_default_configs


def get_config():
    config = get_default_configs()
    config.sde.name = "subvp"
    config.sampling.eps = 0.12
    return config
