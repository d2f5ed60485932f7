"""A class-conditional VP run on ``8gaussians`` with classifier-free guidance.

``python -m scoresde.run --config configs/toy/vp_cond.py`` trains one network with label dropout
0.2 (it gives both the conditional and the unconditional score) and samples component 3 at
``gamma = 2`` (``w = 1``); the run is measured against the exact conditional ``p(x | y = 3)``.
``--config.sampling.label`` picks another class, ``--config.sampling.guidance_scale=1`` samples the
conditional law itself, ``0`` the unconditional one (docs/cli.md, "Conditional generation").
"""

from configs.toy.vp import get_config as vp_config


def get_config():
    config = vp_config()
    config.training.p_uncond = 0.2
    config.sampling.label = 3
    config.sampling.guidance = "cfg"
    config.sampling.guidance_scale = 2.0
    return config
