"""Bits/dim of reference density models for discrete images: what a score model must beat.

Data are integer levels ``k in {0, ..., L - 1}^D`` (:attr:`Split.levels
<scoresde.datasets.protocol.Split>`); each model is fitted on a training split and scored on a test
split in bits per dimension, ``-log2 P(k) / D``, the unit of :func:`scoresde.bits_per_dim`:

* :func:`uniform_bpd`: every level equally likely, ``log2 L`` (4.09 for the 17 levels of digits).
* :func:`categorical_bpd`: independent pixels, each a categorical over the ``L`` levels with
  add-``alpha`` smoothing, ``p_j(k) = (n_j(k) + alpha) / (N + L alpha)``: the best model that
  ignores how pixels co-vary. ``alpha = 1/2`` (the Krichevsky–Trofimov estimator) keeps levels
  never seen at a pixel possible; on the digits split the result moves by < 0.003 bits for
  ``alpha`` in ``[0.01, 1]``.
* :func:`gaussian_bpd`: a full-covariance Gaussian on uniformly dequantised levels ``y = k + u``,
  ``u ~ U[0, 1)^D`` (bin width 1, so ``-log2 p(y) / D`` is already in bits per dimension), with the
  maximum-likelihood fit to the dequantised training data, ``mu = mean(k) + 1/2`` and
  ``Sigma = cov(k) + I / 12`` (the uniform noise adds its mean and its variance ``1/12``; this also
  keeps ``Sigma`` invertible where a pixel never changes). The expectation over ``u`` is exact::

      E_u[(k + u - mu)^T P (k + u - mu)] = (k + 1/2 - mu)^T P (k + 1/2 - mu) + tr(P) / 12,

  ``P = Sigma^-1``; by Jensen's inequality it bounds the discrete model's ``-log2 P(k) / D`` from
  above, as :func:`scoresde.bits_per_dim` does for a score model.

Their values on the digits test split are in ``docs/benchmarks.md``
(``benchmarks/digits_reference.py`` prints them).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scoresde.validation import check_int, check_positive

__all__ = ["uniform_bpd", "categorical_bpd", "gaussian_bpd"]


def _levels(name: str, x: Tensor, num_levels: int | None = None) -> Tensor:
    """``x`` as int64 ``(N, D)``, checked to be integer levels (in ``[0, L - 1]`` given ``L``)."""
    if not isinstance(x, Tensor) or x.is_floating_point() or x.dtype == torch.bool or x.ndim < 2:
        what = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be integer levels of shape (N, *D); got {what}")
    if num_levels is not None and x.numel() and (int(x.min()) < 0 or int(x.max()) >= num_levels):
        raise ValueError(
            f"{name} must hold levels in [0, {num_levels - 1}]; "
            f"got [{int(x.min())}, {int(x.max())}]"
        )
    return x.flatten(1).to(torch.int64)


def _same_dims(train: Tensor, test: Tensor) -> None:
    if train.shape[1] != test.shape[1]:
        raise ValueError(
            f"train and test must have the same number of dimensions; got {train.shape[1]} and "
            f"{test.shape[1]}"
        )


def uniform_bpd(num_levels: int) -> float:
    """``log2 L``: bits per dimension of the uniform distribution on ``L`` levels."""
    return math.log2(check_int("num_levels", num_levels, 2))


def categorical_bpd(train: Tensor, test: Tensor, num_levels: int, *, alpha: float = 0.5) -> Tensor:
    """Bits per dimension of each test image under independent per-pixel categoricals.

    ``-(1 / D) sum_j log2 p_j(k_j)`` with ``p_j(k) = (n_j(k) + alpha) / (N + L alpha)``, ``n_j(k)``
    the number of the ``N`` training images with level ``k`` at pixel ``j``.

    Arguments:
        train, test: integer levels ``(N, *D)`` and ``(M, *D)`` in ``[0, num_levels - 1]``.
        num_levels: ``L``.
        alpha: the smoothing count ``> 0`` added to every level.

    Returns:
        ``(M,)`` float64.
    """
    num_levels = check_int("num_levels", num_levels, 2)
    alpha = check_positive("alpha", alpha)
    train, test = _levels("train", train, num_levels), _levels("test", test, num_levels)
    _same_dims(train, test)
    counts = torch.zeros(train.shape[1], num_levels, dtype=torch.float64)
    counts.scatter_add_(1, train.T, torch.ones(train.T.shape, dtype=torch.float64))
    log_p = torch.log2((counts + alpha) / (train.shape[0] + num_levels * alpha))  # (D, L)
    return -log_p.gather(1, test.T).T.mean(dim=1)


def gaussian_bpd(train: Tensor, test: Tensor) -> Tensor:
    """Bits per dimension of each test image under a full-covariance Gaussian, dequantised.

    The Gaussian is the maximum-likelihood fit to the dequantised training levels (module doc);
    each test image's value is the exact expectation over its dequantisation noise of
    ``-log2 N(k + u; mu, Sigma) / D``.

    Arguments:
        train, test: integer levels ``(N, *D)`` (``N >= 2``) and ``(M, *D)``.

    Returns:
        ``(M,)`` float64.
    """
    train, test = _levels("train", train).double(), _levels("test", test).double()
    _same_dims(train, test)
    if train.shape[0] < 2:
        raise ValueError(f"train must hold at least 2 images; got {train.shape[0]}")
    d = train.shape[1]
    mu = train.mean(dim=0) + 0.5
    sigma = torch.cov(train.T, correction=0).reshape(d, d) + torch.eye(d, dtype=torch.float64) / 12
    chol = torch.linalg.cholesky(sigma)
    centred = test + 0.5 - mu
    white = torch.linalg.solve_triangular(chol, centred.T, upper=False)  # L^-1 (k + 1/2 - mu)
    trace_p = torch.cholesky_inverse(chol).diagonal().sum()
    log_det = 2 * chol.diagonal().log().sum()
    nats = 0.5 * (d * math.log(2 * math.pi) + log_det + white.square().sum(dim=0) + trace_p / 12)
    return nats / (d * math.log(2))
