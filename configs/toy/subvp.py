"""Sub-VP SDE on toy 2D data: the VP SDE's mean with a smaller variance.

``python -m scoresde.run --sde subvp`` uses this file. The sub-VP SDE has no discrete Markov chain,
so ancestral sampling does not apply; the PC sampler's default predictor is reverse diffusion on
its Euler-Maruyama discretisation, followed by one Langevin corrector step.
"""

from configs.default_toy import get_default_configs


def get_config():
    config = get_default_configs()
    config.sde.name = "subvp"
    config.sampling.predictor = "reverse_diffusion"
    config.sampling.corrector = "langevin"
    return config
