"""Exact log-likelihoods of a score model through its probability-flow ODE, and bits per dimension.

The probability-flow ODE of a forward SDE ``dx = f(x, t) dt + g(t) dw`` with score ``s``::

    dx/dt = v(x, t) = f(x, t) - 1/2 g(t)^2 s(x, t)

carries the marginal ``p_eps`` to ``p_T`` deterministically, so the instantaneous change of
variables (Chen et al., 2018) gives the density along a trajectory ``x(t)``::

    d/dt log p_t(x(t)) = -div_x v(x(t), t)

and, integrating from ``eps`` to ``T`` with ``x(eps) = x`` and ``z = x(T)``::

    log p_eps(x) = log p_T(z) + int_eps^T div_x v(x(t), t) dt.

:func:`log_likelihood` solves the augmented ODE ``d(x, delta)/dt = (v, div v)``, ``delta(eps) = 0``,
with :func:`scoresde.odeint.odeint_within` (torchdiffeq, never evaluating outside ``[eps, T]``)
and returns ``sde.prior_logp(z) + delta(T)``: the density of the model defined by ``score_fn``
with the prior in place of the true ``p_T``. The divergence is the exact Jacobian trace (one
vector-Jacobian product per data dimension, several done as one batched product) or
Hutchinson's estimator ``E[u^T (dv/dx) u]`` with ``E[u u^T] = I`` (Grathwohl et al., 2019), whose
probes stay fixed along the trajectory so that the estimate of ``log p_eps(x)`` is unbiased; by
default the exact trace up to :data:`EXACT_TRACE_MAX_DIM` dimensions and Hutchinson's above.
:func:`bits_per_dim` turns it into the dequantised bits per dimension of data on a discrete grid.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from scoresde.odeint import (
    ADAPTIVE_METHODS,
    FIXED_METHODS,
    ODE_METHODS,
    check_tolerances,
    odeint_within,
)
from scoresde.sampling.grids import check_times, time_grid
from scoresde.score_calls import CountedScore
from scoresde.sde import SDE, ScoreFn, unchecked_times
from scoresde.validation import check_bool, check_choice, check_int, refusal

__all__ = [
    "EXACT_TRACE_MAX_DIM",
    "EXACT_TRACE_BATCH",
    "LikelihoodResult",
    "log_likelihood",
    "bits_per_dim",
]

TRACES = ("auto", "exact", "hutchinson")
PROBES = ("gaussian", "rademacher")

EXACT_TRACE_MAX_DIM = 16
"""The largest data dimension ``D = prod(x.shape[1:])`` for which ``trace="auto"`` is exact.

The exact trace costs ``D`` vector-Jacobian products per evaluation of the ODE, Hutchinson's
``n_probes``. Up to ``D = 16`` that price (under 10 times one probe's, measured in
``docs/benchmarks.md``) buys values free of Hutchinson's noise, which on low-dimensional mixtures is
of the order of a nat per sample with one probe. Above it the price grows in proportion to ``D``
while the probe noise averages out over a data set.
"""


EXACT_TRACE_BATCH = 256
"""The most Jacobian rows of all samples together that one batched vector-Jacobian product of
the exact trace computes: for a batch of ``B`` samples, ``k = min(D, EXACT_TRACE_BATCH // B)``
rows of every sample (at least one; :func:`_drift_and_exact_divergence`).

A few samples of a convolutional network gain most (4 digits, ``D = 64``: the 64 rows in one
batched product took 195-213 ms against 285-294 ms for 64 products of one row, on two CPU
threads: fewer calls into the autograd engine, since torch's vmap still loops over the vectors
for convolutions); a batch above 128 samples gets one row per product, a plain one. Copying the
batch ``k`` times and evaluating the score on the copies was faster still (123 ms), but a score
bound to its batch, such as guidance with one label per sample, cannot take copies;
``torch.func``'s ``vmap`` of ``vjp`` took 111 ms for 4 digits but 817 ms for 16.
"""


class LikelihoodResult(NamedTuple):
    """The parts of a likelihood computation, each per sample.

    ``logp = prior_logp + delta_logp``.
    """

    #: ``log p_eps(x)`` in nats, shape ``(B,)``.
    logp: Tensor
    #: ``log p_T(z)`` under the SDE's prior, shape ``(B,)``.
    prior_logp: Tensor
    #: ``int_eps^T div v(x(t), t) dt``, shape ``(B,)``.
    delta_logp: Tensor
    #: The end point ``z = x(T)`` of the probability-flow trajectory, shape of ``x``.
    z: Tensor
    #: Number of calls of ``score_fn`` (each on the whole batch).
    nfe: int
    #: The divergence used: ``"exact"`` or ``"hutchinson"`` (what ``trace="auto"`` chose).
    trace: str
    #: The time ``eps`` the likelihood is of (``log p_eps``).
    eps: float


class _AugmentedDynamics:
    """The right-hand side ``(x, delta) -> (v(x, t), div v(x, t))`` of the augmented ODE.

    ``probes`` is ``None`` for the exact trace or ``(n_probes, B, *D)`` fixed Hutchinson probes.
    """

    def __init__(self, sde: SDE, score_fn: ScoreFn, probes: Tensor | None):
        self.flow = sde.reverse(score_fn, probability_flow=True)
        self.probes = probes

    def __call__(self, t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x = state[0].detach()
        t_batch = t.to(x.dtype).expand(x.shape[0]).contiguous()
        with torch.enable_grad():
            if self.probes is None:
                drift, div = _drift_and_exact_divergence(self.flow.sde, x, t_batch)
            else:
                x.requires_grad_(True)
                drift, _ = self.flow.sde(x, t_batch)
                div = _hutchinson_divergence(drift, x, self.probes)
        return drift.detach(), div.detach()


def _drift_and_exact_divergence(
    sde: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]], x: Tensor, t: Tensor
) -> tuple[Tensor, Tensor]:
    """``v(x, t)`` and ``div v = sum_i d v_i / d x_i`` per sample, from ``(v, g) = sde(x, t)``.

    ``v`` is evaluated once, on ``x`` itself; the ``D`` rows of every sample's Jacobian then
    come ``k`` at a time (:data:`EXACT_TRACE_BATCH`; ``k`` evened out so that ``P = ceil(D / k)``
    passes of ``k`` cover them), pass ``p`` from ``k`` vector-Jacobian products
    (:func:`_jacobian_rows`) whose ``j``-th vector is the unit vector ``e_i``, ``i = p k + j``, for
    every sample (zero where ``i >= D``): each returns row ``i`` of every sample's Jacobian, whose
    ``i``-th entry is ``d v_i / d x_i``. A row of ``sum_b v[b]`` is a row of each sample's
    Jacobian only if samples do not interact (true for any per-sample score model).
    """
    b, d = x.shape[0], x[0].numel()
    passes = math.ceil(d / max(1, min(d, EXACT_TRACE_BATCH // b)))
    k = math.ceil(d / passes)
    x = x.detach().requires_grad_(True)
    v = sde(x, t)[0]
    div = torch.zeros(b, dtype=v.dtype, device=v.device)
    for p in range(passes):
        rows = torch.arange(p * k, (p + 1) * k, device=v.device)  # the row of vector j
        units = torch.nn.functional.one_hot(rows.clamp(max=d - 1), d).to(v.dtype)
        units = units * (rows < d).to(v.dtype)[:, None]  # (k, D)
        vectors = units[:, None, :].expand(k, b, d).reshape(k, *x.shape)
        div = div + (_jacobian_rows(v, x, vectors) * vectors).flatten(2).sum(2).sum(0)
    return v, div


def _jacobian_rows(v: Tensor, x: Tensor, vectors: Tensor) -> Tensor:
    """``u_j^T dv/dx`` for each of the ``k`` vectors ``u_j`` (``(k, *v.shape)``), shape
    ``(k, *x.shape)``; the graph of ``v`` is kept.

    Several vectors go through one batched product (``torch.autograd.grad(...,
    is_grads_batched=True)``, torch's vmap over the backward pass), which saves the autograd
    engine's per-call work; where that fails (torch's vmap prototype has no batching rule for
    some backward formulas, e.g. GroupNorm's double backward, which classifier guidance of a
    U-Net classifier needs), one plain product per vector. A single vector takes the plain
    product: the batched machinery cost 9-23 % more on toy batches of 1,000-3,000 points.
    """
    if len(vectors) > 1:
        with contextlib.suppress(RuntimeError):  # no batching rule: the plain products below
            return torch.autograd.grad(
                v, x, grad_outputs=vectors, retain_graph=True, is_grads_batched=True
            )[0]
    return torch.stack([torch.autograd.grad(v, x, u, retain_graph=True)[0] for u in vectors])


def _hutchinson_divergence(v: Tensor, x: Tensor, probes: Tensor) -> Tensor:
    """``1/n sum_j u_j^T (dv/dx) u_j`` per sample, one vector-Jacobian product per probe ``u_j``."""
    estimate = torch.zeros(v.shape[0], dtype=v.dtype, device=v.device)
    for u in probes:
        (u_jac,) = torch.autograd.grad(v, x, grad_outputs=u, retain_graph=True)
        estimate = estimate + (u_jac * u).flatten(1).sum(1)
    return estimate / probes.shape[0]


def _draw_probes(probe: str, n_probes: int, x: Tensor, generator: torch.Generator | None) -> Tensor:
    """``(n_probes, *x.shape)`` probes with ``E[u u^T] = I``: standard normal or uniform ``+-1``."""
    shape = (n_probes, *x.shape)
    if probe == "gaussian":
        return torch.randn(shape, generator=generator, dtype=x.dtype, device=x.device)
    signs = torch.randint(0, 2, shape, generator=generator, device=x.device)
    return (2 * signs - 1).to(x.dtype)


def log_likelihood(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    *,
    eps: float | None = None,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    trace: str = "auto",
    n_probes: int = 1,
    probe: str = "rademacher",
    num_steps: int | None = None,
    times: Tensor | None = None,
    grid: str = "uniform",
    generator: torch.Generator | None = None,
    return_info: bool = False,
) -> Tensor | LikelihoodResult:
    """Per-sample log-density ``log p_eps(x)`` in nats of the model defined by ``score_fn``.

    Solves the probability-flow ODE ``dx/dt = v(x, t) = f(x, t) - 1/2 g(t)^2 s(x, t)`` together
    with ``d delta/dt = div_x v(x, t)`` from ``eps`` to ``T`` and returns::

        log p_eps(x) = sde.prior_logp(x(T)) + int_eps^T div_x v(x(t), t) dt.

    This is the density at time ``eps`` (the data density smoothed by the forward kernel), which
    tends to the data density as ``eps -> 0``. It is the model's, with ``sde.prior_logp`` standing
    in for the true ``p_T``: with the exact score, what separates it from ``log p_eps`` is the
    solver's error plus the prior mismatch ``log prior(z) - log p_T(z)``, whose mean over data is
    ``-KL(p_T || prior)``. To see the two apart, ask for ``return_info`` and recombine
    ``delta_logp`` with any other ``log p_T(z)``.

    The score is only ever evaluated at times in ``[eps, T]`` (the guard of
    :func:`scoresde.odeint.odeint_within`: adaptive methods land on ``T`` rather than step past
    it and interpolate, and no probe of torchdiffeq's leaves the interval). Step sizes are chosen
    for the whole batch (the error norm is over every sample), so a sample's value depends
    slightly, within the tolerance, on the rest of its batch.

    Defaults: ``dopri5`` with ``rtol = atol = 1e-5``, well inside the 1e-3 nats the tests ask of a
    2-D mixture with the exact score (errors and evaluation counts per solver and tolerance are in
    ``docs/benchmarks.md``); ``eps = sde.likelihood_eps`` (``1e-5``, as the reference
    implementation).

    Arguments:
        sde: the forward SDE; only its protocol (``sde``, ``prior_logp``, ``T``) is used.
        score_fn: ``(x, t) -> score`` of the shape of ``x``, differentiable in ``x`` (autograd),
            treating samples independently.
        x: data points ``(B, *D)``, floating point; the ODE is solved in ``x.dtype``.
        eps: the start time, in ``(0, T)``; default ``sde.likelihood_eps``.
        method: an adaptive torchdiffeq method (``"dopri5"``, ``"dopri8"``, ``"bosh3"``,
            ``"fehlberg2"``, ``"adaptive_heun"``) or a fixed-step one (``"euler"``,
            ``"midpoint"``, ``"heun2"``, ``"heun3"``, ``"rk4"``).
        rtol, atol: relative and absolute tolerances of adaptive methods.
        trace: ``"exact"`` (``D = prod(x.shape[1:])`` vector-Jacobian products per evaluation:
            for low dimension), ``"hutchinson"`` (``n_probes`` of them: unbiased, noisy) or
            ``"auto"``: exact if ``D <=`` :data:`EXACT_TRACE_MAX_DIM` (16), else Hutchinson.
        n_probes: Hutchinson probes per sample, averaged.
        probe: ``"rademacher"`` (entries ``+-1``; its variance ``2 sum_{i != j} A_ij^2``, with
            ``A`` the symmetrised Jacobian, never exceeds the Gaussian's ``2 sum_ij A_ij^2``) or
            ``"gaussian"``. Drawn once per call from ``generator`` and fixed along the trajectory.
        num_steps: the number of steps of a fixed-step method, on ``time_grid(sde, num_steps,
            kind=grid, eps=eps)`` (the samplers' grids, walked from ``eps`` up to ``T``); default
            ``sde.N``. Not accepted by adaptive methods.
        times: the grid itself (strictly decreasing from ``T`` to ``eps``, as for the samplers),
            instead of ``num_steps``, ``grid`` and ``eps``; an adaptive method uses its ends.
        grid: the kind of grid (:data:`~scoresde.sampling.grids.GRIDS`) of a fixed-step method.
        generator: the source of the Hutchinson probes (nothing is drawn for the exact trace).
        return_info: return a :class:`LikelihoodResult` instead of ``logp``.

    Returns:
        ``logp`` of shape ``(B,)`` and dtype of ``x``, or a :class:`LikelihoodResult`. Not
        differentiable: the ODE is solved without a graph through the solver.

    Raises:
        ValueError: for a bad argument (naming it and what is allowed), points that are not all
            finite (naming how many rows are not), or a ``score_fn`` whose first answer does not
            have the shape of ``x`` or is not finite.
        RuntimeError: for a ``score_fn`` whose output carries no gradient with respect to ``x``.
    """
    check_choice("method", method, ODE_METHODS)
    check_choice("trace", trace, TRACES)
    check_choice("probe", probe, PROBES)
    n_probes = check_int("n_probes", n_probes, minimum=1)
    check_bool("return_info", return_info)
    if not (isinstance(x, Tensor) and x.is_floating_point() and x.ndim >= 2 and x.shape[0] > 0):
        described = (
            f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x)
        )
        raise ValueError(f"x must be a floating-point tensor of shape (B, *D); got a {described}")
    check_tolerances(rtol, atol, x.dtype)
    bad_rows = int((~x.flatten(1).isfinite().all(1)).sum())
    if bad_rows:
        raise ValueError(
            f"x must be finite; got {bad_rows} of {x.shape[0]} rows with a NaN or an infinity"
        )
    if method in ADAPTIVE_METHODS and num_steps is not None:
        raise ValueError(
            f"num_steps is for the fixed-step methods {', '.join(map(repr, FIXED_METHODS))}; "
            f"method={method!r} chooses its steps from rtol and atol; got num_steps={num_steps!r}"
        )
    if times is not None:
        grid64 = _given_grid(sde, times, num_steps, eps)
    else:
        steps = 1 if method in ADAPTIVE_METHODS else (sde.N if num_steps is None else num_steps)
        eps = sde.likelihood_eps if eps is None else eps
        grid64 = time_grid(sde, steps, kind=grid, eps=eps)

    x = x.detach()
    if trace == "auto":
        trace = "exact" if x[0].numel() <= EXACT_TRACE_MAX_DIM else "hutchinson"
    probes = None if trace == "exact" else _draw_probes(probe, n_probes, x, generator)
    counted = CountedScore(score_fn, require_grad=True)
    dynamics = _AugmentedDynamics(sde, counted, probes)
    up = grid64.flip(0).to(x.device)  # from eps up to T
    ends = up[[0, -1]]
    steps = up if method in FIXED_METHODS else None
    state = (x, torch.zeros(x.shape[0], dtype=x.dtype, device=x.device))
    with torch.no_grad(), unchecked_times():
        xs, deltas = odeint_within(
            dynamics, state, ends, method=method, rtol=rtol, atol=atol, grid=steps
        )
    z, delta_logp = xs[-1], deltas[-1]
    prior_logp = sde.prior_logp(z)
    logp = prior_logp + delta_logp
    if return_info:
        eps_used = float(grid64[-1])
        return LikelihoodResult(logp, prior_logp, delta_logp, z, counted.calls, trace, eps_used)
    return logp


def _given_grid(sde: SDE, times: Tensor, num_steps: int | None, eps: float | None) -> Tensor:
    """The caller's grid, refusing the arguments it replaces."""
    given = [name for name, value in (("num_steps", num_steps), ("eps", eps)) if value is not None]
    if given:
        raise ValueError(f"times is the whole grid; do not also give {', '.join(given)}")
    return check_times(sde, times)


def bits_per_dim(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    *,
    num_bins: int = 256,
    data_range: tuple[float, float] = (-1.0, 1.0),
    dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
    **likelihood_kwargs: Any,
) -> Tensor:
    """Dequantised bits per dimension of discrete data ``x`` under the model of ``score_fn``.

    ``x`` holds bin indices ``k`` in ``{0, ..., num_bins - 1}`` (e.g. uint8 pixels; convert data
    stored as ``k / (num_bins - 1)`` in ``[0, 1]`` with ``(x * (num_bins - 1)).round().long()``).
    With ``D = prod(x.shape[1:])`` and ``(lo, hi) = data_range``, the space the model was trained
    on, each sample is uniformly dequantised and rescaled::

        u ~ U[0, 1)^D,   c = (k + u) / num_bins  in [0, 1)^D,   y = a c + b,   a = hi - lo, b = lo

    and, since the density of ``c`` is ``a^D p_model(y)`` and a bin of ``c`` has volume
    ``num_bins^-D``::

        bpd = -(log p_model(y) + D log a - D log num_bins) / (D ln 2).

    Its mean over data and ``u`` bounds the discrete model's ``-log2 P(k) / D`` from above, by
    Jensen's inequality on ``P(k) = E_u[num_bins^-D a^D p_model(y)]`` (Theis et al., 2016).

    For 8-bit data on ``[-1, 1]`` (``a = 2``, ``num_bins = 256``) this is
    ``-log p_model(y) / (D ln 2) + 7``: ``+8`` is the bin width (``log2 256`` bits per dimension),
    ``-1`` the factor ``2`` by which ``[0, 1]`` is stretched to ``[-1, 1]``. The reference
    implementation adds that 7 (8 for data on ``[0, 1]``) as a bare constant, so its output looks
    unlike the log-likelihood and does not carry over to other bit depths or ranges; here both
    terms come from ``num_bins`` and ``data_range``. The model's training data, ``k / (num_bins -
    1)`` rescaled to ``[lo, hi]``, differ from the dequantised bins by at most one bin, as in the
    reference.

    Arguments:
        sde, score_fn: the model, as for :func:`log_likelihood`.
        x: integer bin indices ``(B, *D)``.
        num_bins: number of levels of the grid, ``>= 2`` (256 for 8-bit data).
        data_range: ``(lo, hi)``, the interval the model's data were scaled to.
        dtype: floating dtype of the dequantised data; default ``torch.get_default_dtype()``.
        generator: the source of the dequantisation noise ``u``, drawn first, and then of any
            Hutchinson probes.
        **likelihood_kwargs: passed to :func:`log_likelihood` (``eps``, ``method``, ``rtol``,
            ``atol``, ``trace``, ``n_probes``, ``probe``, ``num_steps``, ``times``, ``grid``).

    Returns:
        Bits per dimension, shape ``(B,)``.
    """
    check_int("num_bins", num_bins, minimum=2)
    lo, hi = data_range
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(refusal("data_range", "finite (lo, hi) with lo < hi", data_range))
    if (
        not isinstance(x, Tensor)
        or x.is_floating_point()
        or x.is_complex()
        or x.dtype == torch.bool
    ):
        described = x.dtype if isinstance(x, Tensor) else type(x)
        raise ValueError(
            f"x must be an integer tensor of bin indices 0..{num_bins - 1}; got {described}; "
            f"convert data k / {num_bins - 1} in [0, 1] with (x * {num_bins - 1}).round().long()"
        )
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= num_bins):
        raise ValueError(
            f"x must hold bin indices in [0, {num_bins - 1}]; got values in "
            f"[{int(x.min())}, {int(x.max())}]"
        )
    dtype = torch.get_default_dtype() if dtype is None else dtype
    u = torch.rand(x.shape, generator=generator, dtype=dtype, device=x.device)
    scale = hi - lo
    y = scale * (x.to(dtype) + u) / num_bins + lo
    logp = log_likelihood(sde, score_fn, y, generator=generator, **likelihood_kwargs)
    d = x[0].numel()
    return -(logp + d * math.log(scale) - d * math.log(num_bins)) / (d * math.log(2))
