"""Guidance as composition: score functions built from score functions.

Bayes' rule for the noisy marginals, ``p_t(x | y) = p_t(y | x) p_t(x) / p(y)``, splits the
conditional score into the unconditional one and a classifier's gradient::

    grad_x log p_t(x | y) = grad_x log p_t(x) + grad_x log p_t(y | x).

Guidance scales the second term. Every function here returns a plain
:data:`~scoresde.sde.ScoreFn` ``(x, t) -> score``, so a guided score works with every sampler, SDE
and data shape, and no sampler knows about guidance:

* :func:`classifier_guidance` (Song et al. 2021, Sec. 5; Dhariwal & Nichol 2021):
  ``s(x, t) + scale * grad_x log p_t(y | x)`` from an unconditional score and a noise-conditional
  classifier. At ``scale = 1`` with the exact classifier it is the exact conditional score; larger
  scales sample ``p_t(x) p_t(y | x)^scale`` (normalised), which concentrates on the class.
* :func:`classifier_free` (Ho & Salimans 2022): ``(1 + w) s(x, t, y) - w s(x, t, None)`` from one
  conditional score network that also serves as the unconditional one (``y = None``).

The two agree: with exact scores,
``(1 + w) s(x | y) - w s(x) = s(x) + (1 + w) grad log p_t(y | x)``, so classifier-free guidance
with weight ``w`` is classifier guidance with ``scale = 1 + w``.

**Conventions for the weight.** Here ``w`` is Ho & Salimans' guidance strength: ``w = 0`` is the
conditional score, ``w = -1`` the unconditional one, ``w > 0`` guides. Much of the literature and
software (Saharia et al. 2022, Stable Diffusion and ``diffusers``' ``guidance_scale``) writes the
same combination as ``s_u + gamma (s_c - s_u)`` with ``gamma = 1 + w``: there ``gamma = 1`` is the
conditional score and ``gamma = 7.5`` means ``w = 6.5`` here. Classifier guidance's ``scale`` is
on the ``gamma`` scale: ``classifier_free(..., w)`` matches
``classifier_guidance(..., scale=1 + w)``.

**Training the terms** (:mod:`scoresde.losses`): a conditional network learns both terms of
classifier-free guidance when its training labels are replaced by the null label at a rate
``p_uncond`` (:func:`drop_labels`, inside :func:`scoresde.losses.conditional_loss_fn`); a
noise-conditional classifier for classifier guidance is trained by
:func:`scoresde.losses.classifier_loss_fn` to estimate ``log p_t(y | x)``.

**Gradients inside samplers.** :func:`scoresde.sample` runs under ``torch.no_grad()``. The
combinator turns gradients back on for the classifier alone (on a detached copy of ``x``), so
the samples carry no graph; where the caller differentiates the score itself (``x`` requires a
gradient and gradients are enabled, as in :func:`scoresde.log_likelihood`), the classifier's
gradient is taken with ``create_graph=True`` and the guided score stays differentiable in ``x``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from scoresde.nets.embeddings import NULL_LABEL
from scoresde.sde import ScoreFn, batch_broadcast
from scoresde.validation import check_number, refusal

__all__ = [
    "Classifier",
    "CondScoreFn",
    "Label",
    "classifier_guidance",
    "classifier_free",
    "unconditional",
    "check_label",
    "batch_labels",
    "check_logits",
    "drop_labels",
]

Classifier = Callable[[Tensor, Tensor], Tensor]
"""``classifier(x, t) -> (B, C)`` logits of ``p_t(y | x)`` (normalised or not): ``x`` is
``(B, *D)``, ``t`` is ``(B,)``."""

CondScoreFn = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]
"""``cond_score_fn(x, t, y)``: ``grad_x log p_t(x | y)`` for ``(B,)`` int64 labels ``y``, and the
unconditional ``grad_x log p_t(x)`` for ``y = None``."""

Label = int | Tensor
"""One class for the whole batch (an ``int``), or one per sample (a ``(B,)`` integer tensor)."""

_LABEL_RULE = "an integer >= 0 or a 1-D integer tensor of labels >= 0"


def check_label(label: Label) -> Label:
    """``label`` if it is an integer ``>= 0`` or a 1-D integer tensor of labels ``>= 0``.

    Reads a tensor's values once (on the host); :func:`batch_labels` then checks only shapes.

    Raises:
        ValueError: ``label must be an integer >= 0 or a 1-D integer tensor ...; got VALUE``.
    """
    if isinstance(label, Tensor):
        if _is_label_tensor(label):
            return label
    elif isinstance(label, numbers.Integral) and not isinstance(label, bool) and label >= 0:
        return int(label)
    raise ValueError(refusal("label", _LABEL_RULE, label))


def _is_label_tensor(y: Tensor) -> bool:
    """Whether ``y`` is a non-empty 1-D integer tensor of labels ``>= 0`` (reads its values)."""
    integer = not (y.is_floating_point() or y.is_complex() or y.dtype == torch.bool)
    return integer and y.ndim == 1 and y.numel() > 0 and bool((y >= 0).all())


def batch_labels(label: Label, batch_size: int, device: torch.device | str | None = None) -> Tensor:
    """A label checked by :func:`check_label` as ``(batch_size,)`` int64 labels on ``device``.

    Raises:
        ValueError: if a tensor of labels does not hold one label per sample.
    """
    if isinstance(label, Tensor):
        if label.shape != (batch_size,):
            raise ValueError(
                refusal(
                    "label's shape", f"({batch_size},), one label per sample", tuple(label.shape)
                )
            )
        return label.to(device=device, dtype=torch.int64)
    return torch.full((batch_size,), label, dtype=torch.int64, device=device)


def check_logits(name: str, logits: Tensor, batch_size: int) -> int:
    """The number of classes ``C`` of ``(batch_size, C)`` logits ``logits`` (the output ``name``).

    Raises:
        ValueError: ``NAME must be logits of shape (B, C); got SHAPE``.
    """
    if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != batch_size:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(refusal(name, f"logits of shape ({batch_size}, C)", got))
    return logits.shape[1]


def drop_labels(y: Tensor, p_uncond: float, generator: torch.Generator | None = None) -> Tensor:
    """``y`` with each label replaced by :data:`~scoresde.nets.NULL_LABEL` (``-1``, "no label")
    independently with probability ``p_uncond``: label dropout for classifier-free guidance.

    Trained on these labels, one conditional network learns ``grad log p_t(x | y)`` from the kept
    labels and ``grad log p_t(x)`` from the dropped ones (Ho & Salimans 2022 use ``p_uncond`` 0.1
    or 0.2). Sample ``b`` is dropped when ``u_b < p_uncond``, ``u_b ~ U[0, 1)`` drawn from
    ``generator`` (on its device), one draw per label.

    Arguments:
        y: ``(B,)`` integer labels ``>= 0``.
        p_uncond: the dropout rate, in ``[0, 1)`` (1 would never show the network a label).
        generator: the source of the draws.

    Returns:
        ``(B,)`` labels like ``y``, ``-1`` where dropped.

    Raises:
        ValueError: ``p_uncond must be a number in [0, 1); got VALUE``, or a ``y`` that is not a
            1-D integer tensor of labels ``>= 0``.
    """
    p_uncond = check_number("p_uncond", p_uncond, 0, 1, high_open=True)
    if not (isinstance(y, Tensor) and _is_label_tensor(y)):
        raise ValueError(refusal("y", "a 1-D integer tensor of labels >= 0", y))
    device = y.device if generator is None else generator.device
    u = torch.rand(y.shape, generator=generator, device=device).to(y.device)
    return torch.where(u < p_uncond, NULL_LABEL, y)


def classifier_guidance(
    score_fn: ScoreFn, classifier: Classifier, label: Label, scale: float = 1.0
) -> ScoreFn:
    """The guided score ``s(x, t) + scale * grad_x log softmax(classifier(x, t))[label]``.

    With ``score_fn = grad log p_t`` and ``classifier`` the logits of the noisy posterior
    ``p_t(y | x)``, ``scale = 1`` gives the exact conditional score ``grad log p_t(x | label)``;
    ``scale > 1`` sharpens the class, ``scale = 0`` is ``score_fn`` itself.

    Arguments:
        score_fn: the unconditional score ``s(x, t)``.
        classifier: ``(x, t) -> (B, C)`` logits; the log-softmax is taken here, so normalised
            log-probabilities and raw logits are the same. Its batch entries must be independent
            (the gradient of their sum is taken).
        label: the class to sample, an ``int`` or a ``(B,)`` integer tensor (one per sample).
        scale: the guidance scale, a finite number.

    Returns:
        a :data:`~scoresde.sde.ScoreFn`, usable with every sampler.

    Raises:
        ValueError: at once, for a bad ``label`` or ``scale``; on a call, for a label tensor of
            the wrong length, a label outside the classifier's ``C`` classes, or logits that are not
            ``(B, C)``.
        RuntimeError: on a call under ``torch.inference_mode()``, which forbids autograd (the
            samplers never run there; a caller's own inference-mode block does).
    """
    label = check_label(label)
    scale = check_number("scale", scale)
    largest = int(label.max()) if isinstance(label, Tensor) else label

    def guided_score(x: Tensor, t: Tensor) -> Tensor:
        if torch.is_inference_mode_enabled():
            raise RuntimeError(
                "classifier_guidance differentiates the classifier, which torch.inference_mode() "
                "forbids: call it under torch.no_grad() instead (as scoresde.sample does)"
            )
        y = batch_labels(label, x.shape[0], x.device)
        return score_fn(x, t) + scale * _log_posterior_gradient(classifier, x, t, y, largest)

    return guided_score


def _log_posterior_gradient(
    classifier: Classifier, x: Tensor, t: Tensor, y: Tensor, largest: int
) -> Tensor:
    """``grad_x sum_b log softmax(classifier(x, t))[b, y_b]``, with the caller's graph kept if
    the caller is differentiating in ``x``."""
    keep_graph = torch.is_grad_enabled() and x.requires_grad
    with torch.enable_grad():
        x_in = x if keep_graph else x.detach().requires_grad_()
        logits = classifier(x_in, t)
        C = check_logits("classifier(x, t)", logits, x.shape[0])
        if largest >= C:
            raise ValueError(refusal("label", f"a class of the classifier's {C}, < {C}", largest))
        log_p = torch.log_softmax(logits, dim=1).gather(1, y[:, None]).sum()
        (grad,) = torch.autograd.grad(log_p, x_in, create_graph=keep_graph)
    return grad


def unconditional(cond_score_fn: CondScoreFn) -> ScoreFn:
    """The unconditional score ``s(x, t) = cond_score_fn(x, t, None)`` of a conditional one."""

    def score_fn(x: Tensor, t: Tensor) -> Tensor:
        return cond_score_fn(x, t, None)

    return score_fn


def classifier_free(
    cond_score_fn: CondScoreFn,
    label: Label,
    w: float,
    *,
    interval: Sequence[float] | None = None,
) -> ScoreFn:
    """The guided score ``(1 + w) s(x, t, label) - w s(x, t, None)`` (Ho & Salimans 2022).

    ``w = 0`` is the conditional score (then the unconditional one is never evaluated), ``w = -1``
    the unconditional one; see the module's docstring for the ``gamma = 1 + w`` convention.

    **Guidance interval** (Kynkäänniemi et al. 2024): with ``interval = (t_lo, t_hi)`` guidance is
    applied only where ``t_lo < t <= t_hi`` (their ``(sigma_lo, sigma_hi]``, in time; map a
    noise-level interval through ``sde.kernel_coefficients``, whose ``sigma(t)`` increases).
    Outside it the score is the conditional score alone (``w = 0``), as in the paper: guidance
    is harmful at high noise and unnecessary at low noise, but conditioning is not. When no sample
    of a call lies inside, the unconditional score is not evaluated (this reads one boolean from
    ``t``'s device per call).

    Arguments:
        cond_score_fn: ``(x, t, y) -> score`` with ``y`` a ``(B,)`` int64 tensor, or ``None`` for
            the unconditional score.
        label: the class to sample, an ``int`` or a ``(B,)`` integer tensor (one per sample).
        w: the guidance strength, a finite number.
        interval: ``None`` (guide at every time) or ``(t_lo, t_hi)`` with ``0 <= t_lo < t_hi``.

    Returns:
        a :data:`~scoresde.sde.ScoreFn` (no gradients needed).

    Raises:
        ValueError: at once, for a bad ``label``, ``w`` or ``interval``; on a call, for a label
            tensor of the wrong length.
    """
    label = check_label(label)
    w = check_number("w", w)
    bounds = None if interval is None else _check_interval(interval)

    def guided_score(x: Tensor, t: Tensor) -> Tensor:
        y = batch_labels(label, x.shape[0], x.device)
        cond = cond_score_fn(x, t, y)
        if w == 0:  # the conditional law: the unconditional term has no weight
            return cond
        if bounds is None:
            return cond + w * (cond - cond_score_fn(x, t, None))
        inside = (t > bounds[0]) & (t <= bounds[1])
        if not bool(inside.any()):
            return cond
        weight = batch_broadcast(w * inside.to(cond.dtype), cond)
        return cond + weight * (cond - cond_score_fn(x, t, None))

    return guided_score


def _check_interval(interval: Sequence[float]) -> tuple[float, float]:
    valid = (
        isinstance(interval, Sequence)
        and not isinstance(interval, str)
        and len(interval) == 2
        and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in interval)
        and 0 <= interval[0] < interval[1] < float("inf")
    )
    if not valid:
        raise ValueError(
            refusal("interval", "None or a pair (t_lo, t_hi) with 0 <= t_lo < t_hi", interval)
        )
    return float(interval[0]), float(interval[1])
