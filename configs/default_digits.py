"""Defaults for every digits run: the toy defaults with a U-Net and image-sized settings.

A per-SDE file (``configs/digits/vp.py``, ``subvp.py``, ``ve.py``) starts from these;
``python -m scoresde.run --dataset digits --sde vp --sampler pc`` uses ``configs/digits/vp.py``.
Every field not set here keeps its meaning from ``configs/default_toy.py``.
"""

from ml_collections import ConfigDict

from configs.default_toy import get_default_configs as toy_defaults


def get_default_configs() -> ConfigDict:
    config = toy_defaults()
    config.data.name = "digits"

    model = config.model
    model.name = "unet"
    model.ch = 32
    model.ch_mult = (1, 2)
    model.num_res_blocks = 1
    model.attn_resolutions = (4,)
    model.dropout = 0.1

    training = config.training
    training.batch_size = 128
    training.n_iters = 4500
    training.lr = 1e-3
    training.warmup = 200
    training.checkpoint_every = 1000

    sampling = config.sampling
    sampling.n_samples = 1497
    sampling.num_steps = 100

    evaluation = config.eval
    evaluation.n_eval = 300
    evaluation.trace = "hutchinson"
    evaluation.n_probes = 2
    evaluation.n_check = 4
    evaluation.n_process_times = 6
    return config
