"""Defaults for every toy 2D run: one field per hyper-parameter, in the groups the CLI reads.

A per-SDE file (``configs/toy/vp.py``, ``subvp.py``, ``ve.py``) starts from these and sets what is
particular to its SDE. Any field can be overridden on the command line in the ml-collections
convention, e.g. ``--config.training.n_iters=2000``; ``scoresde.config.validate_config`` lists
every field with the values it accepts and rejects anything else before work starts.
"""

from ml_collections import ConfigDict, config_dict


def get_default_configs() -> ConfigDict:
    config = ConfigDict()
    config.seed = 0

    config.data = data = ConfigDict()
    data.name = "8gaussians"

    config.model = model = ConfigDict()
    model.name = "mlp"
    model.hidden = 256
    model.depth = 3
    model.embedding = "fourier"
    model.embed_dim = 64
    model.fourier_scale = 16.0
    model.parameterization = "score"
    model.input_scaling = True
    model.data_std = config_dict.placeholder(float)

    config.sde = sde = ConfigDict()
    sde.name = "vp"
    sde.beta_min = 0.1
    sde.beta_max = 20.0
    sde.sigma_min = 0.01
    sde.sigma_max = 10.0
    sde.N = 1000
    sde.schedule = "linear"

    config.training = training = ConfigDict()
    training.batch_size = 512
    training.n_iters = 12000
    training.lr = 2e-3
    training.warmup = 500
    training.grad_clip = 1.0
    training.ema_decay = 0.999
    training.loss = "dsm"
    training.weighting = "score_sde"
    training.importance_sampling = False
    training.reduce = "mean"
    training.eps = 1e-5
    training.checkpoint_every = 2000
    training.eval_every = 0

    config.sampling = sampling = ConfigDict()
    sampling.sampler = "pc"
    sampling.predictor = "reverse_diffusion"
    sampling.corrector = "langevin"
    sampling.snr = 0.16
    sampling.n_steps = 1
    sampling.num_steps = config_dict.placeholder(int)
    sampling.eps = config_dict.placeholder(float)
    sampling.denoise = True
    sampling.method = "dopri5"
    sampling.rtol = 1e-5
    sampling.atol = 1e-5
    sampling.n_samples = 10000

    config.eval = evaluation = ConfigDict()
    evaluation.n_eval = 5000
    evaluation.eps = 1e-5
    evaluation.method = "dopri5"
    evaluation.rtol = 1e-5
    evaluation.atol = 1e-5
    evaluation.trace = "exact"
    evaluation.n_probes = 1
    evaluation.density_grid = 64
    evaluation.n_process_times = 5
    return config
