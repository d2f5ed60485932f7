"""Parameterisations: the one place where a network's output becomes a score.

Under a linear SDE the perturbation kernel is ``x_t = alpha(t) x_0 + sigma(t) eps``,
``eps ~ N(0, I)`` (``alpha, sigma`` come from :meth:`SDE.kernel_coefficients`, so any SDE with such
a kernel works). A network ``F`` may predict any of four targets; Tweedie's formula,
``E[x_0 | x_t] = (x_t + sigma^2 s(x_t, t)) / alpha``, ties them to the score ``s = grad log p_t``::

    parameterization  F estimates                  score s(x, t)
    "score"           s                            F
    "epsilon"         E[eps | x]                   -F / sigma
    "x0"              E[x_0 | x]                   (alpha F - x) / sigma^2
    "v"               E[alpha eps - sigma x_0 | x] -(sigma x + alpha F) / (sigma (alpha^2+sigma^2))

For ``v`` (Salimans & Ho, 2022): ``x_0 = (alpha x - sigma v) / (alpha^2 + sigma^2)`` and
``eps = (sigma x + alpha v) / (alpha^2 + sigma^2)``, then ``s = -eps / sigma``.

Input scaling (EDM's ``c_in``, Karras et al., 2022): the network sees ``c_in(t) x`` with
``c_in = 1 / sqrt(alpha^2 data_std^2 + sigma^2)``, the inverse std of ``x_t`` for data of
per-feature std ``data_std``, so its inputs have unit scale at every ``t``. Under a VP SDE with
``data_std = 1`` this is exactly 1; under a VE SDE (``sigma`` up to 50 or more) the network would
otherwise see inputs spanning orders of magnitude. The network is still given ``t`` itself.

A network that takes a class label, ``model(x_in, t, y)``, gets the same table through
:func:`get_cond_score_fn`, whose ``(x, t, y) -> score`` is what classifier-free guidance combines;
:func:`get_score_fn` is its special case of a network without labels.

Samplers and likelihoods see only the returned :data:`~scoresde.sde.ScoreFn`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from scoresde.guidance import CondScoreFn, unconditional
from scoresde.sde import SDE, ScoreFn, batch_broadcast
from scoresde.validation import check_choice, check_positive

__all__ = ["PARAMETERIZATIONS", "get_score_fn", "get_cond_score_fn"]

PARAMETERIZATIONS = ("score", "epsilon", "x0", "v")

Network = Callable[[Tensor, Tensor], Tensor]
"""``model(x_in, t) -> F``."""

CondNetwork = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]
"""``model(x_in, t, y) -> F``, ``y`` ``(B,)`` labels or ``None`` (no label)."""


def get_score_fn(
    sde: SDE,
    model: Network,
    parameterization: str = "epsilon",
    *,
    input_scaling: bool = True,
    data_std: float = 1.0,
) -> ScoreFn:
    """The score function ``(x, t) -> s(x, t)`` of a network under a parameterisation.

    Arguments:
        sde: the forward SDE whose kernel defines the parameterisation.
        model: the network, ``model(x_in, t) -> F`` shaped like ``x``; any callable.
        parameterization: what ``F`` estimates, one of :data:`PARAMETERIZATIONS` (table above).
        input_scaling: give the network ``x_in = c_in(t) x`` with ``c_in = 1 / sqrt(alpha^2
            data_std^2 + sigma^2)`` (else ``x_in = x``).
        data_std: per-feature std of the data, for ``c_in``.

    Returns:
        A :data:`~scoresde.sde.ScoreFn`. It divides by ``sigma(t)`` (``"score"`` excepted), so it
        is defined for ``t`` with ``sigma(t) > 0``: samplers and losses stop at ``eps > 0``.
    """
    cond_score_fn = get_cond_score_fn(
        sde,
        lambda x_in, t, y: model(x_in, t),
        parameterization,
        input_scaling=input_scaling,
        data_std=data_std,
    )
    return unconditional(cond_score_fn)


def get_cond_score_fn(
    sde: SDE,
    model: CondNetwork,
    parameterization: str = "epsilon",
    *,
    input_scaling: bool = True,
    data_std: float = 1.0,
) -> CondScoreFn:
    """The conditional score ``(x, t, y) -> s(x, t, y)`` of a network that takes a label.

    The same parameterisation as :func:`get_score_fn`, with the label passed through to the
    network: ``s(x, t, y)`` is the table's score of ``F = model(x_in, t, y)``. ``y`` is ``(B,)``
    int64 labels, or ``None`` for the unconditional score (the network's "no label", e.g.
    :data:`~scoresde.nets.NULL_LABEL`); this is the ``cond_score_fn`` that
    :func:`scoresde.guidance.classifier_free` takes.

    Arguments:
        sde, parameterization, input_scaling, data_std: as for :func:`get_score_fn`.
        model: the network, ``model(x_in, t, y) -> F`` shaped like ``x`` (e.g.
            :class:`~scoresde.nets.MLPScoreNet` or :class:`~scoresde.nets.UNet` with
            ``num_classes`` set); any callable.

    Returns:
        A :data:`~scoresde.guidance.CondScoreFn`, defined where ``sigma(t) > 0``.
    """
    check_choice("parameterization", parameterization, PARAMETERIZATIONS)
    data_var = check_positive("data_std", data_std) ** 2

    def cond_score_fn(x: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        alpha, sigma = (batch_broadcast(c, x) for c in sde.kernel_coefficients(t, x.ndim))
        x_in = x * torch.rsqrt(alpha**2 * data_var + sigma**2) if input_scaling else x
        out = model(x_in, t, y)
        if parameterization == "score":
            return out
        if parameterization == "epsilon":
            return -out / sigma
        if parameterization == "x0":
            return (alpha * out - x) / sigma**2
        return -(sigma * x + alpha * out) / (sigma * (alpha**2 + sigma**2))

    return cond_score_fn
