"""The adaptive-step reverse-SDE solver of Jolicoeur-Martineau et al. (2021, "Gotta Go Fast",
Algorithm 1).

The reverse-time SDE ``dx = [f(x, t) - g(t)^2 s(x, t)] dt + g(t) dw_bar`` is stepped from ``t``
to ``t - h`` by Euler–Maruyama and by the stochastic improved Euler (Heun) method with the same
noise ``z ~ N(0, I)``; with the reverse drift ``b(x, t) = f(x, t) - g(t)^2 s(x, t)``::

    k_1 = -h b(x, t)         + g(t)     sqrt(h) z,      x'  = x + k_1          (Euler–Maruyama)
    k_2 = -h b(x', t - h)    + g(t - h) sqrt(h) z,      x'' = x + (k_1 + k_2) / 2   (improved Euler)

Their difference estimates the local error, scaled by the mixed tolerance ``delta = max(atol,
rtol max(|x'|, |x'_prev|))`` (elementwise, ``x'_prev`` the Euler proposal of the last accepted
step) in the root-mean-square norm over a sample's ``n`` numbers::

    E = || (x' - x'') / delta ||_2 / sqrt(n).

A step with ``E <= 1`` is accepted, keeping the more accurate ``x''`` (extrapolation), and the
next step is ``h <- min(t - eps, theta h E^(-r))`` with ``theta = 0.9``, ``r = 0.9``: a rejected
step retries from the same ``x`` and ``t`` with that smaller ``h``. Two score evaluations per
attempt, rejected ones included; the first step is ``h_init``.

As in the paper's code, every sample has its own clock: its own error ``E``, acceptance, time and
step size (a batch-wide error would hold every sample to the worst one's steps). The batch is
evaluated together, so ``nfe`` counts the batch's attempts; samples that already stand at the
next grid time ride along with a zero step until the others get there.

**The grid** is where the state is reported: between two grid times the solver chooses its own
steps and lands exactly on the next one (the last step is shortened to reach it), calls
``on_step`` there, and carries its step size on. By default the grid is just ``[T, eps]``.

**Rejected steps keep their noise.** The paper redraws the noise of a rejected step. Since the
decision depends on the drawn noise (``E`` does), that keeps the draws with small error and
biases the samples: on 2-D data, where ``E`` is the norm of only two numbers and about a third of
the attempts are rejected, the cross-entropy gap of the 8-Gaussians ring on VP is +0.10, +0.15 and
+0.19 nats at rtol = atol = 0.05, 0.01 and 0.005 (5000 samples, standard error 0.014): it grows as
the tolerances tighten (in images ``E`` averages thousands of numbers and rejections are rare).
Here the solver stays on one Brownian path per sample, as in
Rackauckas & Nie's rejection sampling with memory (2017, RSwM1): a rejected attempt's increment
``W`` over ``h`` is kept, the retry over ``h' < h`` takes the Brownian bridge's part of it,
``N((h'/h) W, h' (h - h')/h I)``, and the rest waits on a per-sample stack for the next steps
(:class:`BrownianStack`), which take it whole or split it again before drawing fresh noise. The
solution then converges to the reverse SDE's as the tolerances tighten. With one generator per
sample, a sample draws only when it steps, so its path does not depend on the batch it is drawn
in.

**Defaults** are the paper's code's: ``rtol = atol = 0.01``, ``h_init = 0.01``; the smallest
tolerance measured at which VP, sub-VP and VE all sample the 8-Gaussians ring within 0.01 nats
(``docs/benchmarks.md`` has the error and evaluations per tolerance).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from scoresde.odeint import check_tolerances
from scoresde.sampling.base import StepHook, register_sampler
from scoresde.sampling.noise import GaussianNoise
from scoresde.sde import SDE, ScoreFn, batch_broadcast
from scoresde.validation import check_positive

__all__ = ["adaptive_sde", "BrownianStack", "SAFETY", "EXPONENT"]

SAFETY = 0.9
"""``theta``, the safety factor of the step-size rule."""
EXPONENT = 0.9
"""``r``, the exponent of the step-size rule ``h <- theta h E^(-r)``."""


def _adaptive(options: dict[str, Any]) -> bool:
    return True


@register_sampler("adaptive_sde", adaptive=_adaptive)
def adaptive_sde(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    times: Tensor,
    *,
    noise: GaussianNoise,
    on_step: StepHook,
    rtol: float = 0.01,
    atol: float = 0.01,
    h_init: float = 0.01,
) -> Tensor:
    """Solve the reverse-time SDE with adaptive steps, reporting the state at ``times``.

    Options:
        rtol, atol: relative and absolute tolerances of the local error, at least the resolution
            of the samples' dtype (``torch.finfo(dtype).eps``).
        h_init: the first step, in units of time, > 0 (capped at ``T - eps``).

    Raises:
        ValueError: if a sample's step size falls below the resolution of its time in the
            samples' dtype (the tolerances ask for more than the score's precision gives).
    """
    check_tolerances(rtol, atol, x.dtype)
    check_positive("h_init", h_init)
    reverse = sde.reverse(score_fn)
    end = times[-1]
    t = times[0].expand(x.shape[0]).clone()
    h = torch.clamp(torch.full_like(t, h_init), max=float(times[0] - end))
    x_euler = x  # x'_prev: the Euler proposal of the last accepted step
    path = BrownianStack(x)
    resolution = torch.finfo(x.dtype).eps
    for i in range(1, len(times)):
        target = times[i]
        while bool((active := t > target).any()):
            z = noise.like(x, active.tolist())
            gap = t - target
            step = torch.where(active, torch.minimum(h, gap), 0.0)
            step = torch.where(gap - step <= resolution * t, gap, step)  # no unresolvable rest
            step, dw = path.take(step, z)
            s = torch.where(step < gap, t - step, target)  # lands exactly on the grid
            dt = batch_broadcast(step.to(x.dtype), x)
            b1, g1 = reverse.sde(x, t.to(x.dtype))
            k1 = -dt * b1 + batch_broadcast(g1, x) * dw
            proposal = x + k1
            b2, g2 = reverse.sde(proposal, s.to(x.dtype))
            k2 = -dt * b2 + batch_broadcast(g2, x) * dw
            improved = x + 0.5 * (k1 + k2)
            delta = (rtol * torch.maximum(proposal.abs(), x_euler.abs())).clamp(min=atol)
            error = ((proposal - improved) / delta).flatten(1).pow(2).mean(1).sqrt()
            error = error.to(t.dtype).nan_to_num(nan=0.0)  # a NaN state goes on to be reported
            accepted = active & (error <= 1)
            path.put_back(active & ~accepted, step, dw)
            keep = batch_broadcast(accepted, x)
            x = torch.where(keep, improved, x)
            x_euler = torch.where(keep, proposal, x_euler)
            t = torch.where(accepted, s, t)
            proposed = SAFETY * step * error ** (-EXPONENT)
            h = torch.where(active, torch.minimum(proposed, t - end), h)
            stuck = active & (t > end) & (proposed <= resolution * t)
            if bool(stuck.any()):
                j = int(stuck.nonzero()[0])
                raise ValueError(
                    f"adaptive_sde's step size fell to {proposed[j].item():.3g} at t = "
                    f"{t[j].item():.6g}, below the resolution of {x.dtype}: the score is too "
                    f"rough there for rtol={rtol!r}, atol={atol!r}; loosen them or use float64"
                )
        x = on_step(i, x)
    return x


class BrownianStack:
    """The revealed but not yet crossed parts of each sample's Brownian path (RSwM1).

    Each sample has a stack of segments ``(duration, increment)``, the nearest on top. A rejected
    attempt puts its segment back (:meth:`put_back`); :meth:`take` then serves the next attempt
    from the top segment before any fresh noise, so every attempt, rejected or not, reads the
    same path.

    Arguments:
        x: the samples ``(B, *D)``: the increments' shape, dtype and device.
    """

    def __init__(self, x: Tensor):
        batch = x.shape[0]
        self.rows = torch.arange(batch, device=x.device)
        self.depth = torch.zeros(batch, dtype=torch.long, device=x.device)
        self.duration = torch.zeros(batch, 1, dtype=torch.float64, device=x.device)
        self.increment = x.new_zeros((batch, 1, *x.shape[1:]))

    def take(self, step: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """The next ``step`` (float64, ``(B,)``, 0 for a sample that stays) of each path, and its
        increment ``dW``, from the noise ``z ~ N(0, I)``.

        Without a stored segment ``dW = sqrt(step) z``. With one, of duration ``L`` and increment
        ``W``: a step ``>= L`` is shortened to ``L`` and takes ``W`` whole (the segment is
        popped); a shorter step takes the bridge's ``q W + sqrt(step (1 - q)) z``, ``q = step /
        L``, and leaves ``(L - step, W - dW)`` on top.

        Returns:
            ``(step, dW)``: the steps, possibly shortened, and the increments ``(B, *D)``.
        """
        top = (self.depth - 1).clamp(min=0)
        length, whole_w = self.duration[self.rows, top], self.increment[self.rows, top]
        stored = (self.depth > 0) & (step > 0)
        whole = stored & (step >= length)
        split = stored & ~whole
        step = torch.where(whole, length, step)
        q = torch.where(split, step / length, 0.0)
        spread = torch.where(split, step * (1 - q), step).sqrt()
        dw = batch_broadcast(spread.to(z.dtype), z) * z
        dw = torch.where(
            batch_broadcast(split, z), batch_broadcast(q.to(z.dtype), z) * whole_w + dw, dw
        )
        dw = torch.where(batch_broadcast(whole, z), whole_w, dw)
        self.duration[self.rows, top] = torch.where(split, length - step, length)
        self.increment[self.rows, top] = torch.where(
            batch_broadcast(split, z), whole_w - dw, whole_w
        )
        self.depth = torch.where(whole, self.depth - 1, self.depth)
        return step, dw

    def put_back(self, rejected: Tensor, step: Tensor, dw: Tensor) -> None:
        """Push the segments ``(step, dw)`` of the ``rejected`` samples (a ``(B,)`` mask)."""
        if not bool(rejected.any()):
            return
        if int(self.depth.max()) == self.duration.shape[1]:
            self.duration = torch.cat([self.duration, torch.zeros_like(self.duration)], 1)
            self.increment = torch.cat([self.increment, torch.zeros_like(self.increment)], 1)
        rows, slot = self.rows[rejected], self.depth[rejected]
        self.duration[rows, slot] = step[rejected]
        self.increment[rows, slot] = dw[rejected]
        self.depth = torch.where(rejected, self.depth + 1, self.depth)
