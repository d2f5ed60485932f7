"""Defaults for every toy 2D run: one field per hyper-parameter, in the groups the CLI reads.

A per-SDE file (``configs/toy/vp.py``, ``subvp.py``, ``ve.py``) starts from these and sets what is
particular to its SDE. Any field can be overridden on the command line in the ml-collections
convention, e.g. ``--config.training.n_iters=2000``; ``scoresde.config.FIELDS`` lists every field
with the values it accepts, and anything else is rejected before work starts.

The defaults are sized for the main job (train, sample and evaluate in at most 8 times a
bare-PyTorch loop of 2000 Adam steps of a 3 x 256 MLP; ``benchmarks/main_job.py``,
``docs/benchmarks.md``) and were chosen by measurement on 8gaussians and checkerboard (numbers below
are held-out NLL - entropy in nats, VP SDE, seed 0, unless said otherwise):

* ``training.weighting = "likelihood"`` with importance sampling of ``t``: the loss is the NLL
  bound, and ``t`` is drawn densely near 0, where sharp densities are resolved (checkerboard with
  the score parameterisation: 0.11 instead of 0.15 with ``"score_sde"``; more samples inside the
  squares).
* ``model.parameterization = "epsilon"``: predicting the score itself gave a lower NLL on most
  points (8gaussians 0.024 against 0.053) but the network extrapolates it badly outside the data:
  the probability-flow ODE from a point 4.5 std beyond a mode diverges (log-density -1e10) for
  VP, sub-VP and VE alike, so one held-out point in a few thousand ruins the mean NLL. Through
  ``score = -F / sigma`` the velocity of that ODE stays bounded and the tails stay finite.
* ``model.hidden = 64``, ``training.n_iters = 10000`` (3 residual blocks, 46k parameters, batches
  of 512): on 8gaussians 0.027 +- 0.005 (sub-VP 0.026, VE 0.010), checkerboard 0.111 with 95.5%
  of samples inside the squares. An update costs 0.61-0.86 of a bare-loop step (1 or 2 threads)
  against 1.55-1.94 at width 128, where 6000 updates gave 0.066 and 12000 (the former default)
  0.038; width 96 with 8000 updates 0.034, width 48 with 12000 0.022, 2 blocks of 64 with 12000
  0.040 (one runaway held-out point).
* ``training.ema_warmup = True``: the average forgets its random start within a few hundred
  updates, so short runs sample the trained network, not the initial one (see
  ``scoresde.training.EMA``).
* ``sampling.eps`` (in ``configs/toy/*.py``): sampling stops where ``sigma(eps)`` is about 0.14 and
  returns Tweedie's denoised ``E[x_0 | x_eps]``. It pulls samples that a learned score leaves just
  outside checkerboard's squares back in (VP: about 92% inside at ``sigma = 0.01``, 97% at 0.14)
  at the price of slightly contracted modes (8gaussians: the samples' cross-entropy minus the
  entropy goes from +0.09 to -0.06 nats; for exact scores the contraction alone would be -0.15).
* The PC sampler uses the Euler-Maruyama predictor, as the reference does for its continuous VP
  models: the reverse-diffusion and ancestral predictors follow the SDE's discrete chain, which
  cannot stop at that ``eps`` (to use them, also set ``sampling.eps`` and ``sampling.num_steps`` to
  None). A Langevin corrector made 2D samples worse at every ``snr`` tried (checkerboard energy
  distance 0.0005 without it, 0.003 at ``snr = 0.05``, 0.007 at 0.16).
* ``threads = 1``: the 2D networks' matrices are too small for a second thread to pay much (the
  main job takes 7.4 bare loops with one, 5.8 with two on an idle machine), and when another
  process holds a core, two threads wait on each other: the main job took 25 bare loops with
  torch's default of 2 on a machine shared with two other jobs, 4.0 with one thread.
* ``training.precision = "fp32"``: "bf16" autocasts the forward pass and loss to bfloat16 (weights,
  gradients, Adam and EMA stay float32). On these 2D networks it saved about 15 % of an update on
  a CPU, and after 1000 updates the held-out NLL was 0.04 nats worse with one process and 0.01
  better with two, about the run-to-run spread (``benchmarks/distributed.py``,
  docs/benchmarks.md); its gains are for large networks on GPUs with bfloat16 units.
* ``sampling.num_steps = 200``: on one checkerboard model 95.3% of the samples land inside the
  squares at 100 steps, 95.5% at 200, 95.7% at 400 and 96.0% at 1000, which costs 7 times 200;
  8gaussians' samples are within 0.03 nats of the entropy at 200 steps.
"""

from ml_collections import ConfigDict, config_dict

from scoresde.config import sampler_option_types


def get_default_configs() -> ConfigDict:
    config = ConfigDict()
    config.seed = 0
    config.threads = 1  # torch's intra-op threads while the run works; 0: torch's default
    config.device = "cpu"  # or "cuda", "cuda:N", "auto" (a GPU where CUDA is available)

    config.data = data = ConfigDict()
    data.name = "8gaussians"
    data.path = config_dict.placeholder(str)  # image files (mnist, fashion_mnist, npz)

    config.model = model = ConfigDict()
    model.name = "mlp"
    model.hidden = 64  # "mlp" only
    model.depth = 3  # "mlp" only
    model.ch = 32  # "unet" only (configs/default_digits.py)
    model.ch_mult = (1, 2)
    model.num_res_blocks = 1
    model.attn_resolutions = ()
    model.dropout = 0.1
    model.embedding = "fourier"
    model.embed_dim = 64
    model.fourier_scale = 16.0  # "fourier" only
    model.time_scale = config_dict.placeholder(float)  # "sinusoidal" only; None: (N - 1) / T
    model.parameterization = "epsilon"
    model.input_scaling = True
    model.data_std = config_dict.placeholder(float)  # None: estimated from the data

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
    training.n_iters = 10000
    training.lr = 2e-3
    training.warmup = 200
    training.lr_schedule = "constant"  # or "cosine": decay towards 0 at n_iters after warm-up
    training.grad_clip = 1.0
    training.ema_decay = 0.999
    training.ema_warmup = True  # decay min(ema_decay, (1 + n) / (10 + n)): short runs are usable
    training.loss = "dsm"
    training.weighting = "likelihood"
    training.importance_sampling = True
    training.reduce = "mean"
    training.eps = 1e-5
    training.checkpoint_every = 2000
    training.eval_every = 0  # 0: no periodic evaluation of the EMA model's held-out loss
    training.precision = "fp32"  # or "bf16": autocast the loss, float32 weights and Adam
    training.p_uncond = 0.0  # > 0: a conditional network, labels dropped at this rate (CFG)

    config.sampling = sampling = ConfigDict()
    sampling.sampler = "pc"
    sampling.num_steps = 200  # None: the sampler's default (pc: sde.N - 1, the reference grid)
    sampling.grid = config_dict.placeholder(str)  # None: the sampler's default kind of grid
    sampling.eps = config_dict.placeholder(float)  # None: the SDE's sampling_eps
    sampling.rho = 7.0  # the karras grid's exponent
    sampling.sigma_max = config_dict.placeholder(float)  # the grid's ends as noise levels
    sampling.sigma_min = config_dict.placeholder(float)
    sampling.denoise = True
    sampling.n_samples = 5000
    # Every option of every sampler, None meaning the sampler's own default; those the chosen
    # sampler does not take are unused (set on the command line, they are refused).
    for name, kind in sampler_option_types().items():
        sampling[name] = config_dict.placeholder(kind)
    sampling.predictor = "euler_maruyama"
    sampling.corrector = "none"
    # Conditional generation (docs/guidance.md, "From the command line"): a class, a guidance,
    # its scale gamma (1: the conditional law; cfg's w = gamma - 1), and inpainting of test data.
    sampling.label = config_dict.placeholder(int)  # None: unconditional
    sampling.guidance = "none"  # "classifier" or "cfg"
    sampling.guidance_scale = 1.0
    sampling.inpaint = "none"  # "lower_half", "left_half", "random:P" or a mask file (.npy)
    sampling.inpaint_method = "replacement"  # or "smc"
    sampling.particles = 64  # smc's particles per observation
    sampling.twist = False  # smc's twisting functions (scoresde.inpaint_particles)

    # The noise-conditional classifier of sampling.guidance = "classifier": the network of the
    # model group with a C-way head, trained with the training group's other settings.
    config.classifier = classifier = ConfigDict()
    classifier.n_iters = 2000
    classifier.lr = 2e-3

    config.eval = evaluation = ConfigDict()
    evaluation.n_eval = 3000
    evaluation.n_check = 0  # discrete data: test points for the exact-vs-Hutchinson check
    evaluation.n_curve = 0  # > 0: held-out likelihood of this many points every eval_every
    evaluation.eps = 1e-5
    evaluation.method = "dopri5"
    evaluation.rtol = 1e-5
    evaluation.atol = 1e-5
    evaluation.trace = "exact"
    evaluation.n_probes = 1
    evaluation.density_grid = 48
    evaluation.n_process_times = 5
    return config
