"""Sub-VP SDE on the 8x8 digits: the VP SDE's mean with a smaller variance.

``python -m scoresde.run --dataset digits --sde subvp`` uses this file. As in
``configs/toy/subvp.py``, times are set by the noise they mean: the sub-VP std grows like
``beta_min t`` near 0, so ``training.eps = 6e-3`` is where ``sigma = 1e-3``, as for VP at ``1e-5``,
and ``eval.eps = 0.063`` is where ``sigma = 0.045``, as for VP at its ``eval.eps = 1e-2`` (the
bits/dim are of data blurred by the same ``sigma``; not measured for sub-VP itself). The sub-VP
SDE has no discrete Markov chain, so ancestral sampling does not apply.
"""

from configs.default_digits import get_default_configs


def get_config():
    config = get_default_configs()
    config.sde.name = "subvp"
    config.training.eps = 6e-3
    config.eval.eps = 0.063
    return config
