"""Calls of a user's score function, counted and checked: what samplers and likelihoods report.

:func:`scoresde.sample` and :func:`scoresde.log_likelihood` both take any ``score_fn(x, t)`` and
report how many times they called it (``nfe``). Both wrap it in one :class:`CountedScore`, which
counts every call exactly (one call on a batch is one evaluation, whatever the batch size) and
checks the first answer, so that a score of the wrong shape, device or values fails loudly instead
of broadcasting into wrong numbers (a ``(B, 1)`` score times a ``(B, D)`` tensor is a ``(B, D)``
tensor).
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoresde.sde import ScoreFn

__all__ = ["CountedScore"]


class CountedScore:
    """``score_fn`` itself, counting its calls in :attr:`calls` and checking its first answer.

    An answer in another floating dtype than ``x`` is cast to ``x``'s, so a float64 score does not
    turn float32 samples into float64 ones.

    Arguments:
        score_fn: the score ``s(x, t)``, ``x`` of shape ``(B, *D)`` and ``t`` of shape ``(B,)``.
        require_grad: also require that the first answer carries a gradient with respect to its
            input (the likelihood differentiates the score in ``x``).
        defer_finite_check: check that the first answer is finite only when
            :meth:`check_first_answer_finite` is called, not during the call: reading the verdict
            on the host would synchronise an accelerator inside a sampling loop.

    Raises (on the first call):
        ValueError: if the answer is not a floating-point tensor of the shape and device of ``x``,
            or (unless deferred) holds a NaN or an infinity.
        RuntimeError: with ``require_grad``, if the answer does not require a gradient (the score
            was computed under ``torch.no_grad()`` or detached).
    """

    def __init__(
        self,
        score_fn: ScoreFn,
        *,
        require_grad: bool = False,
        defer_finite_check: bool = False,
    ):
        self.score_fn = score_fn
        self.require_grad = require_grad
        self.defer_finite_check = defer_finite_check
        self.calls = 0
        self._first: tuple[Tensor, float | Tensor] | None = None

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        if self.calls == 0:
            score = self._first_call(x, t)
            self._check(x, t, score)
        else:
            score = self.score_fn(x, t)
        self.calls += 1
        return score if score.dtype == x.dtype else score.to(x.dtype)

    def _first_call(self, x: Tensor, t: Tensor) -> Tensor:
        """The first call, turning autograd's complaint about a score that takes gradients under
        ``torch.no_grad()`` (where samplers call it) into one that says what to do."""
        try:
            return self.score_fn(x, t)
        except RuntimeError as error:
            if torch.is_grad_enabled() or "does not require grad" not in str(error):
                raise
            raise RuntimeError(
                "score_fn takes a gradient, but samplers call it under torch.no_grad(): compute "
                "the gradient inside `with torch.enable_grad():` on `x.detach().requires_grad_()` "
                f"({error})"
            ) from error

    def _check(self, x: Tensor, t: Tensor, score: Tensor) -> None:
        if not isinstance(score, Tensor) or score.shape != x.shape:
            got = tuple(score.shape) if isinstance(score, Tensor) else type(score).__name__
            raise ValueError(
                f"score_fn must return a tensor of the input's shape {tuple(x.shape)}; got {got}"
            )
        if score.device != x.device or not score.is_floating_point():
            raise ValueError(
                f"score_fn must return a floating-point tensor on the input's device {x.device}; "
                f"got {score.dtype} on {score.device}"
            )
        self._first = (score.isfinite().all(), t[0])
        if not self.defer_finite_check:
            self.check_first_answer_finite()
        if self.require_grad and not score.requires_grad:
            raise RuntimeError(
                "score_fn's output carries no gradient with respect to x; it must be "
                "differentiable in x (do not compute it under torch.no_grad() or detach it)"
            )

    def check_first_answer_finite(self) -> None:
        """Raise ``ValueError`` if the first answer held a NaN or an infinity."""
        if self._first is not None and not bool(self._first[0]):
            t = float(self._first[1])
            raise ValueError(
                f"score_fn returned a NaN or an infinity at its first call (t = {t:.6g})"
            )
