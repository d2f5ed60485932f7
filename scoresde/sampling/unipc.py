"""UniPC (Zhao et al. 2023): a multistep predictor and a corrector that costs no extra evaluation,
in the data prediction on the log-SNR, with ``B(h) = e^h - 1`` (their "bh2" variant).

With ``l = log(alpha / sigma)``, the data prediction ``m`` (one score evaluation) and ``h = l_t -
l_s``, the probability-flow ODE's exact step from ``s = t_i`` to ``t = t_{i+1}`` is (see
:mod:`~scoresde.sampling.dpm_solver`)::

    x_t = (sigma_t / sigma_s) x_s + alpha_t int_0^h e^{-(h - u)} m(l_s + u) du.

The predictor (UniP-p) integrates the polynomial through the last ``p`` data predictions ``m_0 =
m(l_s), m_1, ...`` at ``u_j = l_{i-j} - l_s``; the corrector (UniC-p) evaluates ``m_t`` at the
predicted ``x_t`` and integrates the polynomial through those ``p`` values and ``m_t`` (at ``u =
h``), raising the order to ``p + 1``. ``m_t`` is the next step's ``m_0``, so the corrector costs no
evaluation; the last step, whose ``m_t`` nobody would use, is not corrected. Each rule is ``x_t =
(sigma_t / sigma_s) x_s + alpha_t sum_j W_j m_j`` with ``W_j = int_0^h e^{-(h - u)} L_j(u) du``
(:func:`~scoresde.sampling.multistep.lagrange_weights`): the solution of UniPC's order conditions
(their ``R_p(h) rho = g_p(h) / B(h)``, in which ``B`` cancels once every condition is solved). The
authors' two shortcuts, where ``B(h)`` does matter, are kept (``rho = 1/2``, with ``B(-h) = e^{-h}
- 1 = -K_0``)::

    UniP-2:  x_t = (sigma_t / sigma_s) x_s + alpha_t K_0 (m_0 + (h / h_1) (m_0 - m_1) / 2),
    UniC-1:  x_t = (sigma_t / sigma_s) x_s + alpha_t K_0 (m_0 + m_t) / 2

(UniP-2 is DPM-Solver++(2M) as the paper writes it). Step ``i`` of ``n`` has predictor order
``min(order, i + 1)``, and with ``lower_order_final`` also at most ``n - i``
(:func:`~scoresde.sampling.multistep.step_orders`). Both the predicted and the corrected state are
passed to ``on_step``. When ``m`` is constant (a point mass) every rule is exact, to round-off.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoresde.sampling.base import GridCoefficients, StepHook, data_prediction, register_sampler
from scoresde.sampling.multistep import exponential_moments, lagrange_weights, step_orders
from scoresde.sampling.noise import GaussianNoise
from scoresde.sde import SDE, ScoreFn
from scoresde.validation import check_bool, integer

__all__ = ["unipc"]


@register_sampler("unipc", default_steps=20, default_grid="log_snr")
def unipc(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    times: Tensor,
    *,
    noise: GaussianNoise,
    on_step: StepHook,
    order: int = 3,
    lower_order_final: bool = True,
) -> Tensor:
    """UniPC-``order`` (bh2) along ``times`` (module docstring for the update).

    Options:
        order: the predictor's order, 1, 2 or 3 (the corrector's is one more).
        lower_order_final: lower the order of the final steps to the number of steps left.
    """
    order = integer(1, 3).check("order", order)
    check_bool("lower_order_final", lower_order_final)
    k = GridCoefficients.on(sde, times, x.dtype)
    n = len(times) - 1
    orders = step_orders(n, order, lower_order_final)
    l = k.log_snr / 2  # noqa: E741 (the paper's lambda = log(alpha / sigma))
    h = l.diff()
    # predictor weights on (m_0, m_1, m_2); corrector weights on (m_t, m_0, m_1, m_2)
    predict = torch.zeros(n, 3, dtype=torch.float64)
    correct = torch.zeros(n, 4, dtype=torch.float64)
    for i, p in enumerate(orders):
        past = (l[i - p + 1 : i + 1].flip(0) - l[i]).tolist()  # u_j = l_{i-j} - l_i, j < p
        a = float(k.alpha[i + 1])  # the tables are made on the CPU, then moved to x's device
        predict[i, :p] = a * _weights(past, float(h[i]))
        correct[i, : p + 1] = a * _weights([float(h[i]), *past], float(h[i]))
    keep = (k.sigma[1:] / k.sigma[:-1]).to(x.dtype)
    predict, correct = predict.to(x.device, x.dtype), correct.to(x.device, x.dtype)
    alpha, sigma = k.alpha.to(x.dtype), k.sigma.to(x.dtype)
    history = [data_prediction(score_fn, x, k.t[0].expand(x.shape[0]), alpha[0], sigma[0])]
    for i in range(n):
        base = keep[i] * x
        x = _combine(base, predict[i, : orders[i]], history)
        if i < n - 1:
            x = on_step(i + 1, x)
            t = k.t[i + 1].expand(x.shape[0])
            m = data_prediction(score_fn, x, t, alpha[i + 1], sigma[i + 1])
            history = [m, *history[:3]]  # m_t, m_0, m_1, m_2
            x = _combine(base, correct[i, : orders[i] + 1], history)
        x = on_step(i + 1, x)
    return x


def _combine(base: Tensor, weights: Tensor, values: list[Tensor]) -> Tensor:
    """``base + sum_j weights_j values_j`` over the weights given (the newest values)."""
    x = base.clone()
    for w, value in zip(weights, values, strict=False):
        x = x.addcmul_(value, w)
    return x


def _weights(nodes: list[float], h: float) -> Tensor:
    """``W_j = int_0^h e^{-(h - u)} L_j(u) du`` on ``nodes``, with UniPC's ``rho = 1/2`` shortcuts
    for a 2-node rule (UniP-2 on ``[0, u_1]``, UniC-1 on ``[h, 0]``; module docstring)."""
    k0 = exponential_moments(h, 1)[0]
    if len(nodes) == 2 and nodes[0] == 0.0:  # UniP-2
        r = h / -nodes[1]
        return torch.tensor([k0 * (1 + r / 2), -k0 * r / 2], dtype=torch.float64)
    if len(nodes) == 2:  # UniC-1
        return torch.tensor([k0 / 2, k0 / 2], dtype=torch.float64)
    moments = exponential_moments(h, len(nodes))
    return torch.tensor(lagrange_weights(nodes, moments), dtype=torch.float64)
