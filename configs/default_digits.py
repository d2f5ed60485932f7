"""Defaults for every digits run: the toy defaults with a U-Net and image-sized settings.

A per-SDE file (``configs/digits/vp.py``, ``subvp.py``, ``ve.py``) starts from these;
``python -m scoresde.run --dataset digits --sde vp --sampler pc`` uses ``configs/digits/vp.py``.
Every field not set here keeps its meaning from ``configs/default_toy.py`` (epsilon
parameterisation with input scaling, EMA 0.999 with warm-up). The job is sized for 50
bare loops (2000 Adam steps of a 3 x 256 MLP at batch 512) on 2 CPU cores;
``benchmarks/images.py`` measures it (``docs/benchmarks.md``, "Digits: the default job"), and the
step times below are ``benchmarks/unet.py``'s ("Digits: U-Net candidates"):

* ``model``: the "small" candidate, ``ch = 32``, ``ch_mult = (1, 2)`` (8x8 and 4x4), one residual
  block per level, attention at 4x4, no dropout: 0.76 M parameters, 38 bare-loop steps per
  update (with dropout 0.1) at batch 128 with one thread on the idle machine (13 in the
  candidates table, measured while other jobs slowed the bare loop threefold). Attention at 4x4
  costs about 4 % over the same net without it; the next size up ("medium", 2.4 M parameters)
  costs 2.5 times as much per update, which the budget cannot pay for enough updates.
  ``torch.compile`` did not help on the CPU (slower per update after compiling).
  ``dropout = 0``: drawing dropout's masks took 13 % of an update (101 against 88 ms at two
  threads), and 2,000 updates without it sampled as well as with it (below); its 171 epochs
  left no near-copies of training images.
* ``training.weighting = "score_sde"`` (``lambda = sigma^2``: the plain epsilon-prediction loss,
  ``t`` uniform), not the toy default's likelihood weighting with importance-sampled ``t``: on the
  same 4,500 updates the likelihood-weighted model's samples scored FD 26.5 and 30.2 (two sampling
  seeds; 1.98-2.25 x the floor) and this one's 20.6 and 22.8 (1.54-1.70 x), with precision 0.91-0.92
  instead of 0.80-0.82, while its bits/dim did not suffer (1.94 +- 0.02 on 100 test images against
  2.00 on 64 for the likelihood-weighted model). Likelihood weighting spends the updates near
  ``t = 0``, which bits/dim rewards and 8x8 samples do not need.
* ``training.batch_size = 128``, ``n_iters = 2000``, ``lr = 2e-3`` after 200 warm-up updates,
  ``lr_schedule = "cosine"`` (decaying towards 0 at the last update): 171 epochs of the 1,497
  training images. The FD of the EMA model's 1,497 samples (three sampling seeds each,
  docs/benchmarks.md) was 21.3, 23.8, 19.9 after these 2,000 updates, against 31.1 and 29.4
  after 2,000 at the former constant ``lr = 1e-3`` with dropout 0.1, which needed 3,000 (22.1,
  24.8, 17.8); cosine at ``lr = 1e-3`` gave 22.8, 26.2, 17.0, with dropout 0.1 at ``2e-3``
  23.3 (one seed), and 1,500 cosine updates 23.4-28.7 (above the target of 26.8 once).
  Bits/dim moved from 1.958 to 2.003-2.018 (two training seeds). The job took 239-247 s on 2
  cores, 1.6-1.7 times less than with 3,000 constant-rate updates.
* ``threads = 0``: torch's default, a thread per core. The toy job keeps one thread (its matrices
  are too small for a second to pay), but a U-Net update at batch 128 took 118 ms with two threads
  against 169 ms with one on the 2-core machine (0.70 times; 0.62 in an earlier measurement;
  ``benchmarks/unet.py --configs small --threads 2``). On a machine shared with another
  job, set ``--config.threads=1``: two threads then wait on each other.
* ``sampling.n_samples = 1497``: the sample-quality measures compare with the floor at equal n, and
  the FD floor is lowest (13.4) with all 1,497 training images against the test set (``24-52`` at
  300); ``num_steps = 100`` Euler-Maruyama steps at batch 1,497 took 35 s with two threads.
* ``eval.eps = 1e-2``: bits/dim is of the model's density at ``eps`` (a density of the
  dequantised data like any other, so still an upper bound on the discrete ``-log2 P(k) / D``),
  here the data blurred by ``sigma = 0.045``, about a third of the step between grey levels
  (0.125). Measured on the former default VP model (likelihood weighting, 4,500 updates) over
  100 test images: 2.375 +- 0.023 bits/dim at ``eps = 1e-3`` (``sigma = 0.010``), 2.038 +- 0.021
  at ``1e-2``, 2.546 +- 0.017 at
  ``3e-2`` (``sigma = 0.109``), and 2.635 +- 0.015 over all 300 at the toy default ``1e-5``: the
  uniform noise inside each bin has sharp edges that the model does not resolve at small ``sigma``,
  and too much blur spreads mass over neighbouring bins.
* ``eval.n_eval = 300``: the whole test split. ``eval.trace = "hutchinson"`` with
  ``n_probes = 2``: the exact trace costs 64 vector-Jacobian products per ODE step, 32 times two
  probes; ``eval.n_check = 4`` test images also get the exact trace, to check the two agree
  (their 64 Jacobian rows in one batched vector-Jacobian product: 4.3-4.8 bare loops of the
  job's 46.5-48.3; two images would save about a sixth of that).
* ``eval.rtol = eval.atol = 1e-4`` (the toy default is ``1e-5``): on the likelihood-weighted VP
  model, 64 test images with the same noise took 134 score evaluations instead of 272 and their
  bits/dim moved by 0.0005 on average (at most 0.017 for one image), a twentieth of the 300-image
  mean's standard error; at ``1e-3``, 68 evaluations and 0.007 (0.11). The bits/dim and its
  exact check cost half as much (the check was 3.9 bare loops at ``1e-5``).
* The training curve of held-out bits/dim (``eval.n_curve``) is off: a point of 16 images cost
  1.1 bare loops at ``1e-5`` (half that at ``1e-4``), so ``--config.training.eval_every=1000
  --config.eval.n_curve=16`` adds about 2.5 bare loops to the job.
"""

from ml_collections import ConfigDict

from configs.default_toy import get_default_configs as toy_defaults


def get_default_configs() -> ConfigDict:
    config = toy_defaults()
    config.data.name = "digits"
    config.device = "auto"  # a GPU where CUDA is available (the toy job stays on the CPU)
    config.threads = 0  # torch's default: a thread per core

    model = config.model
    model.name = "unet"
    model.ch = 32
    model.ch_mult = (1, 2)
    model.num_res_blocks = 1
    model.attn_resolutions = (4,)
    model.dropout = 0.0

    training = config.training
    training.weighting = "score_sde"
    training.importance_sampling = False
    training.batch_size = 128
    training.n_iters = 2000
    training.lr = 2e-3
    training.warmup = 200
    training.lr_schedule = "cosine"
    training.checkpoint_every = 1000

    sampling = config.sampling
    sampling.n_samples = 1497
    sampling.num_steps = 100

    evaluation = config.eval
    evaluation.n_eval = 300
    evaluation.eps = 1e-2  # VP: sigma = 0.045; subvp.py and ve.py set the same sigma
    evaluation.trace = "hutchinson"
    evaluation.n_probes = 2
    evaluation.n_check = 4
    evaluation.rtol = 1e-4
    evaluation.atol = 1e-4
    evaluation.n_process_times = 6
    return config
