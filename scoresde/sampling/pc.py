"""The predictor–corrector loop (Song et al., 2021, Algorithm 1).

On a decreasing grid ``t_0 = T > t_1 > ... > t_{n-1} = eps`` the sample is corrected at every grid
time and predicted from each grid time to the next::

    x ~ p_T
    for i = 0, ..., n - 1:
        repeat n_steps times: x <- corrector(x, t_i)    (one MCMC step at t_i)
        if i < n - 1: x <- predictor(x, t_i)            (t_i -> t_{i+1})

so the sample that leaves the loop is one of ``p_eps``. Euler–Maruyama sampling is this loop with
the ``euler_maruyama`` predictor and no corrector.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from scoresde.sampling.correctors import Corrector
from scoresde.sampling.predictors import Predictor

__all__ = ["pc_loop"]


def pc_loop(
    x: Tensor,
    grid: Tensor,
    predictor: Predictor,
    corrector: Corrector,
    n_steps: int,
    keep: Sequence[int] = (),
) -> tuple[Tensor, list[Tensor]]:
    """Run the predictor–corrector loop from ``x ~ p_T`` along ``grid``.

    The loop makes no host–device synchronisation and allocates no per-step state of its own:
    ``t_i`` is a broadcast view of the grid and the sample is updated in place where the predictor
    and corrector allow.

    Arguments:
        x: the prior sample at ``t_0 = T``, shape ``(B, *D)``; it is updated in place.
        grid: the times ``t_0 = T > ... > t_{n-1} = eps``, shape ``(n,)``.
        predictor: moves a sample from ``t_i`` to ``t_{i+1}``.
        corrector: corrects a sample at ``t_i``, one MCMC step per call.
        n_steps: corrector steps per grid time, >= 0.
        keep: increasing grid indices at which to keep a copy of the (corrected) sample.

    Returns:
        ``(x, kept)``: the sample at ``eps`` and the copies kept, in the order of ``keep``.
    """
    batch, last = x.shape[0], len(grid) - 1
    kept_at = set(keep)
    kept: list[Tensor] = []
    for i in range(last + 1):
        t = grid[i].expand(batch)
        for _ in range(n_steps):
            x = corrector.update(x, t, i)
        if i in kept_at:
            kept.append(x.clone())
        if i < last:
            x = predictor.update(x, t, i)
    return x, kept
