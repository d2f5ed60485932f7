"""Denoising score matching: continuous time (Song et al., 2021) and the discrete SMLD and DDPM.

Every loss here perturbs data with the SDE's Gaussian kernel, ``x_t = mean(x_0, t) + sigma z``,
``z ~ N(0, I)``, and compares the score with the kernel's score,
``grad log p_0t(x_t | x_0) = -z / sigma``::

    loss = E_t E_{x_0} E_z [ lambda(t) || s(x_t, t) + z / sigma ||^2 ]
         = E_t E_{x_0} E_z [ (lambda(t) / sigma^2) || sigma s(x_t, t) + z ||^2 ],

whose minimiser is the score of the perturbed data, ``s = grad log p_t`` (Vincent, 2011). The
second form is what is computed (no ``z / sigma`` blow-up at small ``sigma``). ``|| . ||^2`` is the
mean (``reduce="mean"``) or the sum (``reduce="sum"``) over the data dimensions; the batch is
averaged.

* :func:`dsm_loss`: ``t ~ U(eps, T)``, ``lambda = sigma^2`` (``weighting="score_sde"``) or
  ``lambda = g(t)^2`` (``"likelihood"``). With the likelihood weighting and ``reduce="sum"``,
  ``(T - eps) / 2`` times the loss is the score-matching term of Song et al. (2021b)'s bound on the
  negative log-likelihood (their Theorem 2, truncated to ``[eps, T]``)::

      -E log p_model(x_eps) <= E[-log pi(x_T)] + (T - eps)/2 * loss
                               - 1/2 int_eps^T E[d g^2 / sigma^2 + 2 div f(x_t, t)] dt,

  an equality for the true score and prior ``pi = p_T``. Its integrand varies like ``1 / t`` near 0,
  so ``importance_sampling=True`` draws ``t`` with density ``q(t) ~ g(t)^2 / sigma(t)^2`` on
  ``[eps, T]`` and reweights each sample by ``1 / ((T - eps) q(t))``: the same expectation, a much
  lower variance (Song et al., 2021b, Sec. 5.1). ``q`` is tabulated numerically for any SDE
  (:class:`ImportanceTimeSampler`).
* :func:`smld_loss`: NCSN (Song & Ermon, 2019): ``x_i = x_0 + sigma_i z`` at a uniform step ``i`` of
  ``sde.discrete_sigmas``, ``lambda = sigma_i^2``.
* :func:`ddpm_loss`: DDPM (Ho et al., 2020): ``x_i = sqrt(abar_i) x_0 + sqrt(1 - abar_i) z`` with
  ``abar_i`` = ``sde.alphas_cumprod[i]``, ``lambda = 1 - abar_i``; for an epsilon network
  ``F = -sqrt(1 - abar_i) s`` this is DDPM's ``|| F - z ||^2``.

In the discrete losses the network sees step ``i`` (``0 <= i < N``) at the continuous time whose
kernel the step matches, which the chain's ``floor(t (N - 1) / T)`` maps back to step ``i``:

* SMLD: ``t_i = i T / (N - 1)``, where the VE kernel's ``sigma(t_i)`` is exactly ``sigma_i``;
* DDPM: ``t_i = (i + 1) T / N``, the end of the ``i + 1`` steps of ``T / N`` that ``abar_i``
  accumulates (``-log abar_i ~ B(t_i)``), and never 0, where ``sigma = 0`` and every
  parameterisation but ``score`` would divide by it.
All noise (times, steps, ``z``) is drawn from the ``generator`` argument.

Two losses train the networks of guidance (:mod:`scoresde.guidance`) on labelled batches
``(x_0, y)`` (:class:`~scoresde.datasets.LabelledBatch`); both are ``loss_fn(model, batch,
generator)`` for :func:`scoresde.train`:

* :func:`conditional_loss_fn`: any loss above of the conditional score ``s(x, t, y')`` of a network
  ``model(x, t, y)``, with ``y'`` the labels after dropout (:func:`~scoresde.guidance.drop_labels`:
  each replaced by the null label with probability ``p_uncond``). The kept labels train
  ``grad log p_t(x | y)``, the dropped ones ``grad log p_t(x)``: one network, both terms of
  classifier-free guidance.
* :func:`classifier_loss_fn`: the cross-entropy of the class of clean data from its perturbation::

      loss = E_t E_{(x_0, y)} E_z [ -log softmax(c(x_t, t))_y ],   x_t = mean(x_0, t) + sigma(t) z,

  ``t ~ U(eps, T)`` as in :func:`dsm_loss` (or importance-sampled and reweighted: the same
  expectation). For each ``t`` it is ``E_{x_t}[H(p_t(. | x_t))] + E_{x_t}[KL(p_t(. | x_t) ||
  softmax(c(x_t, t)))]``, so its minimiser is the noisy class posterior: the trained classifier's
  log-softmax estimates ``log p_t(y | x)``, the classifier of classifier guidance.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scoresde.datasets.protocol import LabelledBatch
from scoresde.guidance import check_logits, drop_labels
from scoresde.score import get_cond_score_fn
from scoresde.sde import SDE, ScoreFn, batch_broadcast, unchecked_times
from scoresde.validation import check_bool, check_choice, check_int, check_number, refusal

__all__ = [
    "WEIGHTINGS",
    "REDUCTIONS",
    "LOSSES",
    "ImportanceTimeSampler",
    "dsm_loss",
    "smld_loss",
    "ddpm_loss",
    "get_loss_fn",
    "conditional_loss_fn",
    "classifier_loss_fn",
]

WEIGHTINGS = ("score_sde", "likelihood")
REDUCTIONS = ("mean", "sum")
LOSSES = ("dsm", "smld", "ddpm")

ScoreLossFn = Callable[[ScoreFn, Tensor, torch.Generator], Tensor]
"""``loss_fn(score_fn, x0, generator) -> scalar``: a loss of a score function on a batch."""

LabelledLossFn = Callable[[nn.Module, LabelledBatch, "torch.Generator | None"], Tensor]
"""``loss_fn(model, (x0, y), generator) -> scalar``: a training loss of a network on labelled data
(the ``loss_fn`` of :func:`scoresde.train`)."""


def _check_eps(sde: SDE, eps: float) -> float:
    return check_number("eps", eps, 0, float(sde.T), low_open=True, high_open=True)


def _rand(
    shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor, normal: bool
) -> Tensor:
    """Uniform or normal draws on the generator's device, moved to ``like``'s device and dtype."""
    device = like.device if generator is None else generator.device
    draw = torch.randn if normal else torch.rand
    return draw(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


def _denoising_loss(
    score_fn: ScoreFn,
    mean: Tensor,
    std: Tensor,
    t: Tensor,
    weight: Tensor | float,
    reduce: str,
    generator: torch.Generator | None,
) -> Tensor:
    """``mean_b weight_b * reduce_d (std s(x_t, t) + z)^2`` with ``x_t = mean + std z``.

    ``std`` is ``(B,)``; ``weight`` is ``lambda / sigma^2`` over the sampling density ratio.
    """
    z = _rand(tuple(mean.shape), generator, mean, normal=True)
    std = batch_broadcast(std, mean)
    residual = (std * score_fn(mean + std * z, t) + z) ** 2
    per_sample = residual.flatten(1).mean(1) if reduce == "mean" else residual.flatten(1).sum(1)
    return (weight * per_sample).mean()


class ImportanceTimeSampler:
    """Times on ``[eps, T]`` with density ``q(t) ~ g(t)^2 / sigma(t)^2`` (likelihood weighting).

    ``w(t) = g(t)^2 / sigma(t)^2`` is tabulated once on a geometric grid of ``grid_size`` points
    (dense near ``eps``, where ``w ~ 1 / t`` for SDEs with ``sigma(0) = 0``); ``q`` is its
    piecewise-constant approximation, ``q_j = m_j / (Z dt_j)`` on interval ``j`` with
    trapezoidal mass ``m_j`` and ``Z = sum m_j``, sampled exactly by inverting its CDF. Losses
    divide by the exact density of what was sampled, so the reweighted loss is unbiased whatever
    the grid; the grid only sets how much variance is removed.

    Arguments:
        sde: the forward SDE (``sde.sde`` for ``g``, ``sde.marginal_prob`` for ``sigma``).
        eps: the smallest time.
        grid_size: number of grid points.
    """

    def __init__(self, sde: SDE, eps: float = 1e-5, grid_size: int = 4096):
        eps = _check_eps(sde, eps)
        check_int("grid_size", grid_size, minimum=2)
        self.T, self.eps = float(sde.T), eps
        grid = torch.logspace(math.log10(eps), math.log10(self.T), grid_size, dtype=torch.float64)
        grid[0], grid[-1] = eps, self.T
        probe = torch.zeros((grid_size, 1), dtype=torch.float64)
        _, g = sde.sde(probe, grid)
        _, sigma = sde.marginal_prob(probe, grid)
        w = g.reshape(grid_size) ** 2 / sigma**2
        if not bool(torch.isfinite(w).all() & (w >= 0).all()) or float(w.max()) <= 0:
            raise ValueError(
                "importance sampling needs g(t)^2 / sigma(t)^2 finite, >= 0 and not all 0 on "
                f"[eps, T] = [{eps}, {self.T}]; {type(sde).__name__} gives values in "
                f"[{float(w.min())}, {float(w.max())}]"
            )
        self.grid, self.widths = grid, grid.diff()
        self.mass = 0.5 * (w[1:] + w[:-1]) * self.widths
        self.cdf = self.mass.cumsum(0)
        self.total = float(self.cdf[-1])

    def __call__(
        self, n: int, generator: torch.Generator | None, like: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``n`` times and their density ratio ``(T - eps) q(t)`` to the uniform, dtype of ``like``.

        Computed in float64 on the generator's device, then moved to ``like``'s.
        """
        device = like.device if generator is None else generator.device
        grid, widths, mass, cdf = (
            a.to(device) for a in (self.grid, self.widths, self.mass, self.cdf)
        )
        u = torch.rand(n, generator=generator, device=device, dtype=torch.float64) * self.total
        j = torch.searchsorted(cdf, u, right=True).clamp(max=len(mass) - 1)
        frac = ((u - (cdf[j] - mass[j])) / mass[j]).clamp(0, 1)
        t = grid[j] + frac * widths[j]
        ratio = (self.T - self.eps) * mass[j] / (self.total * widths[j])
        return t.to(like.device, like.dtype), ratio.to(like.device, like.dtype)


def _uniform_times(
    sde: SDE, eps: float
) -> Callable[[int, torch.Generator | None, Tensor], tuple[Tensor, Tensor]]:
    """``t ~ U(eps, T)``, density ratio 1."""

    def sample(n: int, generator: torch.Generator | None, like: Tensor) -> tuple[Tensor, Tensor]:
        t = eps + (sde.T - eps) * _rand((n,), generator, like, normal=False)
        return t, torch.ones_like(t)

    return sample


def _dsm_loss_fn(
    sde: SDE, weighting: str, importance_sampling: bool, reduce: str, eps: float
) -> ScoreLossFn:
    check_choice("weighting", weighting, WEIGHTINGS)
    check_choice("reduce", reduce, REDUCTIONS)
    eps = _check_eps(sde, eps)
    check_bool("importance_sampling", importance_sampling)
    if importance_sampling and weighting != "likelihood":
        raise ValueError(
            "importance_sampling=True samples t with density proportional to g^2 / sigma^2, "
            "which only reduces the variance of weighting='likelihood', "
            f"got weighting={weighting!r}"
        )
    times = ImportanceTimeSampler(sde, eps) if importance_sampling else _uniform_times(sde, eps)

    def loss_fn(score_fn: ScoreFn, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        t, ratio = times(x0.shape[0], generator, x0)
        with unchecked_times():
            mean, std = sde.marginal_prob(x0, t)
            weight = 1 / ratio
            if weighting == "likelihood":
                weight = weight * sde.sde(x0, t)[1] ** 2 / std**2
            return _denoising_loss(score_fn, mean, std, t, weight, reduce, generator)

    return loss_fn


def _discrete_table(sde: SDE, attribute: str, loss: str, what: str) -> Tensor:
    table = getattr(sde, attribute, None)
    if not isinstance(table, Tensor) or table.ndim != 1 or table.shape[0] < 2:
        raise ValueError(
            f"the {loss} loss needs sde.{attribute} ({what}, a 1-D tensor of at least 2 "
            f"steps), which {type(sde).__name__} does not define; use kind='dsm', or an SDE "
            "with that discrete model"
        )
    return table


def _discrete_loss_fn(sde: SDE, kind: str, reduce: str) -> ScoreLossFn:
    check_choice("reduce", reduce, REDUCTIONS)
    if kind == "smld":
        table = _discrete_table(sde, "discrete_sigmas", "smld", "the NCSN noise levels sigma_i")
    else:
        table = _discrete_table(sde, "alphas_cumprod", "ddpm", "the DDPM products abar_i")
    N = table.shape[0]

    def loss_fn(score_fn: ScoreFn, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        device = x0.device if generator is None else generator.device
        i = torch.randint(0, N, (x0.shape[0],), generator=generator, device=device).to(x0.device)
        t = (
            i.to(x0.dtype) * (sde.T / (N - 1))
            if kind == "smld"
            else (i + 1).to(x0.dtype) * (sde.T / N)
        )
        value = table.to(x0.device, x0.dtype)[i]
        if kind == "smld":
            mean, std = x0, value
        else:
            mean, std = batch_broadcast(value.sqrt(), x0) * x0, (1 - value).sqrt()
        return _denoising_loss(score_fn, mean, std, t, 1.0, reduce, generator)

    return loss_fn


def dsm_loss(
    sde: SDE,
    score_fn: ScoreFn,
    x0: Tensor,
    *,
    weighting: str = "score_sde",
    importance_sampling: bool = False,
    reduce: str = "mean",
    eps: float = 1e-5,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Continuous-time denoising score matching, ``E[lambda(t) ||s(x_t, t) + z / sigma(t)||^2]``.

    Arguments:
        sde: the forward SDE (``marginal_prob``; ``sde`` for ``g`` with the likelihood weighting).
        score_fn: the model's score ``(x, t) -> s``.
        x0: a batch of data ``(B, *D)``.
        weighting: ``"score_sde"`` (``lambda = sigma^2``) or ``"likelihood"`` (``lambda = g^2``).
        importance_sampling: draw ``t`` with density ``~ g^2 / sigma^2`` and reweight (likelihood
            weighting only).
        reduce: ``"mean"`` or ``"sum"`` of the squared error over the data dimensions.
        eps: the smallest time, ``0 < eps < T``.
        generator: the source of ``t`` and ``z``.

    Returns:
        The scalar loss, averaged over the batch.
    """
    return _dsm_loss_fn(sde, weighting, importance_sampling, reduce, eps)(score_fn, x0, generator)


def smld_loss(
    sde: SDE,
    score_fn: ScoreFn,
    x0: Tensor,
    *,
    reduce: str = "mean",
    generator: torch.Generator | None = None,
) -> Tensor:
    """NCSN's loss ``E_i E[sigma_i^2 ||s(x_0 + sigma_i z, t_i) + z / sigma_i||^2]``, uniform ``i``.

    Needs ``sde.discrete_sigmas`` (e.g. :class:`~scoresde.sde.VESDE`); ``t_i = i T / (N - 1)``.
    Arguments and return as in :func:`dsm_loss`.
    """
    return _discrete_loss_fn(sde, "smld", reduce)(score_fn, x0, generator)


def ddpm_loss(
    sde: SDE,
    score_fn: ScoreFn,
    x0: Tensor,
    *,
    reduce: str = "mean",
    generator: torch.Generator | None = None,
) -> Tensor:
    """DDPM's loss ``E_i E[(1 - abar_i) ||s(x_i, t_i) + z / sqrt(1 - abar_i)||^2]``, uniform ``i``.

    ``x_i = sqrt(abar_i) x_0 + sqrt(1 - abar_i) z``; needs ``sde.alphas_cumprod`` (e.g.
    :class:`~scoresde.sde.VPSDE`); ``t_i = (i + 1) T / N``. Arguments and return as in
    :func:`dsm_loss`.
    """
    return _discrete_loss_fn(sde, "ddpm", reduce)(score_fn, x0, generator)


def get_loss_fn(sde: SDE, kind: str = "dsm", **options: object) -> ScoreLossFn:
    """The loss ``loss_fn(score_fn, x0, generator) -> scalar`` for a training loop, checked now.

    Arguments:
        sde: the forward SDE.
        kind: ``"dsm"`` (options ``weighting``, ``importance_sampling``, ``reduce``, ``eps``, as in
            :func:`dsm_loss`), ``"smld"`` or ``"ddpm"`` (option ``reduce``).

    Every option is validated here, and the importance sampler's table built once, so a bad
    configuration fails before training starts.
    """
    check_choice("kind", kind, LOSSES)
    defaults: dict[str, object]
    if kind == "dsm":
        defaults = {
            "weighting": "score_sde",
            "importance_sampling": False,
            "reduce": "mean",
            "eps": 1e-5,
        }
    else:
        defaults = {"reduce": "mean"}
    unknown = [key for key in options if key not in defaults]
    if unknown:
        raise ValueError(
            f"the {kind} loss takes options {', '.join(defaults)}; got unknown {', '.join(unknown)}"
        )
    settings = {**defaults, **options}
    if kind == "dsm":
        return _dsm_loss_fn(sde, **settings)
    return _discrete_loss_fn(sde, kind, **settings)


def _labelled(batch: LabelledBatch) -> tuple[Tensor, Tensor]:
    """``(x0, y)`` of a labelled batch; a clear refusal for an unlabelled one."""
    if not isinstance(batch, tuple) or len(batch) != 2:
        allowed = "a LabelledBatch (x, y), as dataset.batches(..., labels=True) draws"
        raise ValueError(refusal("batch", allowed, type(batch).__name__))
    return batch[0], batch[1]


def conditional_loss_fn(
    sde: SDE,
    kind: str = "dsm",
    *,
    p_uncond: float = 0.1,
    parameterization: str = "epsilon",
    input_scaling: bool = True,
    data_std: float = 1.0,
    **options: object,
) -> LabelledLossFn:
    """The training loss of a conditional network ``model(x, t, y)`` with label dropout.

    On a batch ``(x_0, y)``: ``y' = drop_labels(y, p_uncond, generator)`` (each label replaced by
    the null label ``-1`` with probability ``p_uncond``), then the loss ``kind`` of
    :func:`get_loss_fn` of the score ``(x, t) -> s(x, t, y')`` of
    :func:`~scoresde.score.get_cond_score_fn`. At its minimum ``s(x, t, y) = grad log p_t(x | y)``
    and ``s(x, t, None) = grad log p_t(x)``, the two terms of
    :func:`~scoresde.guidance.classifier_free` (sample with
    ``get_cond_score_fn(sde, model, parameterization, ...)`` and the same settings).

    Arguments:
        sde: the forward SDE.
        kind: the loss, as for :func:`get_loss_fn`, with its ``options``.
        p_uncond: the label dropout rate, in ``[0, 1)``.
        parameterization, input_scaling, data_std: the network's parameterisation, as for
            :func:`~scoresde.score.get_cond_score_fn`.

    Returns:
        ``loss_fn(model, (x_0, y), generator)`` for :func:`scoresde.train`; labels are dropped
        with the first draws from ``generator``, then the loss draws its own.

    Raises:
        ValueError: now, for a bad ``p_uncond``, parameterisation or loss option; on a call, for a
            batch without labels or labels the network refuses.
    """
    score_loss = get_loss_fn(sde, kind, **options)
    p_uncond = check_number("p_uncond", p_uncond, 0, 1, high_open=True)
    settings = {"input_scaling": input_scaling, "data_std": data_std}
    get_cond_score_fn(sde, nn.Identity(), parameterization, **settings)  # checks the settings

    def loss_fn(model: nn.Module, batch: LabelledBatch, generator: torch.Generator | None = None):
        x0, y = _labelled(batch)
        y = drop_labels(y, p_uncond, generator)
        cond_score_fn = get_cond_score_fn(sde, model, parameterization, **settings)
        return score_loss(lambda x, t: cond_score_fn(x, t, y), x0, generator)

    return loss_fn


def classifier_loss_fn(
    sde: SDE, *, eps: float = 1e-5, importance_sampling: bool = False
) -> LabelledLossFn:
    """The loss of a noise-conditional classifier ``model(x, t) -> (B, C)`` logits.

    ``mean_b w_b CE(model(x_t, t)_b, y_b)`` with ``x_t = mean(x_0, t) + sigma(t) z`` (the SDE's
    kernel, ``sde.marginal_prob``) and ``t ~ U(eps, T)``, ``w = 1``; with
    ``importance_sampling``, ``t`` has density ``q ~ g^2 / sigma^2`` (more draws at small ``t``)
    and ``w = 1 / ((T - eps) q(t))``, the same expectation.
    Minimised by ``log_softmax(model(x, t)) = log p_t(y | x)`` (module doc).

    Arguments:
        sde: the forward SDE.
        eps: the smallest time, ``0 < eps < T``.
        importance_sampling: draw ``t`` from ``q`` and reweight.

    Returns:
        ``loss_fn(model, (x_0, y), generator)`` for :func:`scoresde.train`; ``t`` and ``z`` are
        drawn from ``generator``.

    Raises:
        ValueError: now, for a bad ``eps`` or ``importance_sampling``; on a call, for a batch
            without labels, logits that are not ``(B, C)``, or labels outside ``0 .. C - 1``.
    """
    eps = _check_eps(sde, eps)
    check_bool("importance_sampling", importance_sampling)
    times = ImportanceTimeSampler(sde, eps) if importance_sampling else _uniform_times(sde, eps)

    def loss_fn(model: nn.Module, batch: LabelledBatch, generator: torch.Generator | None = None):
        x0, y = _labelled(batch)
        t, ratio = times(x0.shape[0], generator, x0)
        with unchecked_times():
            mean, std = sde.marginal_prob(x0, t)
        z = _rand(tuple(x0.shape), generator, x0, normal=True)
        logits = model(mean + batch_broadcast(std, x0) * z, t)
        C = check_logits("model(x, t)", logits, x0.shape[0])
        outside = y[(y < 0) | (y >= C)]
        if outside.numel():
            allowed = f"classes of the classifier's {C}, in [0, {C - 1}]"
            raise ValueError(refusal("labels", allowed, int(outside[0])))
        return (F.cross_entropy(logits, y, reduction="none") / ratio).mean()

    return loss_fn
