"""Sample-quality measures: how far a set of generated points is from the data distribution.

Every function takes point clouds ``x`` of shape ``(n, *D)`` (flattened to ``(n, d)``) and returns
plain numbers, so a run can write them to ``metrics.json``. The measures:

* :func:`mean_and_stderr`: a Monte-Carlo mean and its standard error ``std / sqrt(n)`` (NLL in nats,
  cross-entropy of samples under the true density, NLL minus entropy per point).
* :func:`energy_distance`: Székely's energy distance between two samples, a metric on distributions
  with finite first moment that is zero only when they are equal.
* :func:`sliced_wasserstein`: the sliced 2-Wasserstein distance, the root-mean-square over random
  directions of the 1D Wasserstein-2 distance between the projected samples.
* :func:`support_fraction`: the fraction of samples with finite log-density under a density that is
  zero outside its support (e.g. the fraction inside the squares of ``checkerboard``).
* :func:`fraction_outside`: the fraction of samples outside the range of the data, a blunt test
  that samples are where the data are at all (an untrained model's are not).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scoresde.validation import check_int, check_number

__all__ = [
    "mean_and_stderr",
    "energy_distance",
    "sliced_wasserstein",
    "support_fraction",
    "fraction_outside",
]


def _points(name: str, x: Tensor) -> Tensor:
    if x.ndim < 2 or x.shape[0] < 2:
        raise ValueError(f"{name} must have shape (n, *D) with n >= 2; got {tuple(x.shape)}")
    return x.reshape(x.shape[0], -1).to(torch.float64)


def mean_and_stderr(values: Tensor) -> tuple[float, float]:
    """The mean of ``n`` i.i.d. values and its standard error ``s / sqrt(n)``.

    ``s`` is the sample standard deviation (``n - 1`` in the denominator). Non-finite values give a
    non-finite mean, as they should: an infinite NLL is not averaged away.

    Arguments:
        values: ``(n,)`` with ``n >= 2``.

    Returns:
        ``(mean, stderr)`` as floats.
    """
    if values.ndim != 1 or values.shape[0] < 2:
        raise ValueError(f"values must have shape (n,) with n >= 2; got {tuple(values.shape)}")
    v = values.to(torch.float64)
    return float(v.mean()), float(v.std() / math.sqrt(v.shape[0]))


def _mean_pairwise_distance(a: Tensor, b: Tensor, *, exclude_diagonal: bool, chunk: int) -> Tensor:
    """Mean of ``||a_i - b_j||`` over all pairs (or over ``i != j`` when ``a is b``), in chunks."""
    total = a.new_zeros(())
    for start in range(0, a.shape[0], chunk):
        total = total + torch.cdist(a[start : start + chunk], b).sum()
    pairs = a.shape[0] * b.shape[0]
    if exclude_diagonal:
        pairs -= a.shape[0]  # the diagonal distances are zero and add nothing to the sum
    return total / pairs


def energy_distance(x: Tensor, y: Tensor, *, chunk: int = 1024) -> float:
    """The (squared) energy distance between the distributions of two samples.

    For ``X, X' ~ P`` and ``Y, Y' ~ Q`` independent (Székely & Rizzo, 2013)::

        D^2(P, Q) = 2 E||X - Y|| - E||X - X'|| - E||Y - Y'||  >= 0,

    with equality only for ``P = Q``. The within-sample means exclude the ``i = j`` pairs, so each
    term is an unbiased U-statistic and the estimate fluctuates around 0 for equal distributions (it
    can then be slightly negative). It scales like a distance (units of ``x``).

    Arguments:
        x: ``(n, *D)`` samples of ``P``.
        y: ``(m, *D)`` samples of ``Q``, same ``D``.
        chunk: rows of the distance matrix held in memory at once (cost ``O(n m)`` either way).

    Returns:
        ``D^2`` as a float.
    """
    a, b = _points("x", x), _points("y", y)
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"x and y must have the same point shape; got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    xy = _mean_pairwise_distance(a, b, exclude_diagonal=False, chunk=chunk)
    xx = _mean_pairwise_distance(a, a, exclude_diagonal=True, chunk=chunk)
    yy = _mean_pairwise_distance(b, b, exclude_diagonal=True, chunk=chunk)
    return float(2 * xy - xx - yy)


def sliced_wasserstein(
    x: Tensor, y: Tensor, *, n_projections: int = 256, generator: torch.Generator | None = None
) -> float:
    """The sliced 2-Wasserstein distance between two equally sized samples.

    With directions ``theta`` uniform on the unit sphere (Bonneel et al., 2015)::

        SW_2(P, Q)^2 = E_theta W_2(theta^T X, theta^T Y)^2,

    and the 1D distance between two empirical measures of ``n`` points each is the mean squared
    difference of their sorted values, ``W_2^2 = 1/n sum_i (u_(i) - v_(i))^2``. The expectation over
    ``theta`` is estimated with ``n_projections`` Gaussian directions normalised to unit length.

    Arguments:
        x, y: ``(n, *D)`` samples (same ``n`` and ``D``).
        n_projections: number of random directions.
        generator: the source of the directions.

    Returns:
        ``SW_2`` as a float, in units of ``x``.
    """
    a, b = _points("x", x), _points("y", y)
    if a.shape != b.shape:
        raise ValueError(
            f"x and y must have the same shape; got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    check_int("n_projections", n_projections, 1)
    theta = torch.randn(a.shape[1], n_projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    u = (a @ theta).sort(dim=0).values
    v = (b @ theta).sort(dim=0).values
    return float((u - v).pow(2).mean().sqrt())


def support_fraction(log_prob: Tensor) -> float:
    """The fraction of points whose log-density is finite, i.e. that lie in the density's support.

    Arguments:
        log_prob: ``(n,)`` log-densities of the points under a density that is zero (``log p =
            -inf``) outside its support.
    """
    if log_prob.ndim != 1 or log_prob.shape[0] < 1:
        raise ValueError(f"log_prob must have shape (n,) with n >= 1; got {tuple(log_prob.shape)}")
    return float(torch.isfinite(log_prob).to(torch.float64).mean())


def fraction_outside(
    x: Tensor, reference: Tensor, *, coverage: float = 0.999, margin: float = 0.05
) -> float:
    """The fraction of the points ``x`` outside the box where ``reference`` lies.

    The box spans, in each coordinate, the ``(1 - coverage) / 2`` and ``(1 + coverage) / 2``
    quantiles of ``reference``, widened on each side by ``margin`` times its width. Points drawn
    from the reference's own distribution fall outside with probability at most about
    ``(1 - coverage) d`` in ``d`` coordinates (less, for the margin): ``0.2 %`` in 2D at the
    defaults, so a fraction of several percent means the points are not where the data are.

    Arguments:
        x: ``(n, *D)`` points to test.
        reference: ``(m, *D)`` points of the data, ``m >= 2``.
        coverage: the central fraction of each coordinate of ``reference`` the box holds.
        margin: the widening of the box, as a fraction of its width.
    """
    a, b = _points("x", x), _points("reference", reference)
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"x and reference must have the same point shape; got {tuple(x.shape)} and "
            f"{tuple(reference.shape)}"
        )
    check_number("coverage", coverage, 0, 1, low_open=True, high_open=True)
    q = torch.tensor([(1 - coverage) / 2, (1 + coverage) / 2], dtype=torch.float64)
    low, high = torch.quantile(b, q, dim=0)
    pad = margin * (high - low)
    inside = ((a >= low - pad) & (a <= high + pad)).all(dim=1)
    return float(1 - inside.to(torch.float64).mean())
