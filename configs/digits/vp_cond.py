"""A class-conditional VP run on the 8x8 digits with classifier-free guidance.

``python -m scoresde.run --config configs/digits/vp_cond.py`` trains the default digits U-Net
(``configs/digits/vp.py``) with a label embedding and label dropout 0.2 (one network gives both
the conditional and the unconditional score), then samples digit 3 with classifier-free guidance
at ``gamma = 2`` (``w = 1``); the samples are measured against the test images of class 3.
``--config.sampling.label`` picks another digit, ``--config.sampling.guidance_scale=1`` samples
the conditional law itself, ``--config.sampling.guidance=classifier`` guides the unconditional
score with a noise-conditional classifier trained in the run (``classifier`` group). The sweep of
the guidance scale on all ten digits is ``benchmarks/guidance_digits.py`` (docs/benchmarks.md,
"Digits: guidance and inpainting").
"""

from configs.digits.vp import get_config as vp_config


def get_config():
    config = vp_config()
    config.training.p_uncond = 0.2  # 0.1 left the null label's samples at FD 160 (docs)
    config.sampling.label = 3
    config.sampling.guidance = "cfg"
    config.sampling.guidance_scale = 2.0
    config.eval.n_eval = 29  # a labelled run's bits/dim is of its class's test images (29-31)
    return config
