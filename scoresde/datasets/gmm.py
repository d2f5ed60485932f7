"""A Gaussian mixture with its exact perturbed densities and scores: the oracle for testing.

A mixture ``p_0 = sum_k w_k N(mu_k, Sigma_k)`` pushed through any SDE whose perturbation kernel is
``N(alpha(t) x0, sigma(t)^2 I)`` (every linear SDE) stays a mixture in closed form::

    p_t(x) = sum_k w_k N(x; alpha(t) mu_k, alpha(t)^2 Sigma_k + sigma(t)^2 I).

With ``Sigma_k = U_k diag(lambda_k) U_k^T`` the perturbed covariance is diagonal in the same basis,
``U_k diag(alpha^2 lambda_k + sigma^2) U_k^T``, so densities and scores at any per-sample ``t`` cost
one eigendecomposition at construction and elementwise work afterwards. The score is::

    grad log p_t(x) = - sum_k r_k(x) (alpha^2 Sigma_k + sigma^2 I)^{-1} (x - alpha mu_k),

with responsibilities ``r_k(x) = w_k N_k(x) / p_t(x)``.

Use it to test a sampler or a likelihood against the truth: :meth:`GaussianMixture.score_fn` is a
:data:`~scoresde.sde.ScoreFn` for any linear SDE, :meth:`GaussianMixture.log_prob` the exact
density.

**Classes.** Each component carries a class label ``c_k`` (by default its own index), so the mixture
is a joint law of ``(x, y)`` with ``p(y) = sum_{k: c_k = y} w_k``. The forward process leaves the
labels alone, so the noisy class posterior is a sum of responsibilities::

    p_t(y | x) = sum_{k: c_k = y} r_k(x),

and by Bayes' rule ``grad log p_t(y | x) = grad log p_t(x | y) - grad log p_t(x)``, where
``p_t(. | y)`` is the mixture of class ``y``'s components, reweighted (:meth:`given_label`): exact
classifier guidance. :meth:`condition` gives the exact conditional law of some coordinates given
the others (the truth for inpainting).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from scoresde.datasets.draws import Draws
from scoresde.guidance import Classifier, CondScoreFn, batch_labels, check_label
from scoresde.sde import SDE, ScoreFn
from scoresde.validation import integer, refusal

__all__ = ["GaussianMixture"]


def _require_finite(name: str, value: Tensor) -> None:
    bad = value[~value.isfinite()]
    if bad.numel():
        raise ValueError(f"{name} must be finite; got an entry {bad[0].item()}")


def _component_labels(labels: Tensor | Sequence[int] | None, K: int) -> Tensor:
    """``labels`` as a ``(K,)`` int64 tensor of classes ``>= 0``; ``arange(K)`` for None."""
    if labels is None:
        return torch.arange(K)
    allowed = f"{K} integers >= 0, one class per component"
    try:
        as_tensor = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(refusal("labels", allowed, labels)) from None
    valid = (
        as_tensor.shape == (K,)
        and not as_tensor.is_floating_point()
        and not as_tensor.is_complex()
        and as_tensor.dtype != torch.bool
        and bool((as_tensor >= 0).all())
    )
    if not valid:
        raise ValueError(refusal("labels", allowed, labels))
    return as_tensor.to(torch.int64)


class GaussianMixture:
    """A mixture of ``K`` Gaussians in ``d`` dimensions.

    Arguments:
        weights: ``(K,)`` non-negative mixture weights (normalised here).
        means: ``(K, d)`` component means.
        covs: ``(K, d, d)`` full covariances, ``(K, d)`` diagonal variances, ``(K,)`` isotropic
            variances, or a single number shared by every component.
        labels: ``(K,)`` integers ``>= 0``, the class of each component; classes are
            ``0, ..., C - 1`` with ``C = max(labels) + 1`` (a class without components has
            probability 0). Default: one class per component, ``labels = (0, ..., K - 1)``.

    Data points are ``(B, d)``; an image-shaped ``(B, *D)`` input is flattened with ``d = prod(D)``.
    Computation is in float64; results take the dtype of the input.
    """

    def __init__(
        self,
        weights: Tensor | Sequence[float],
        means: Tensor | Sequence,
        covs: Tensor | float | Sequence,
        labels: Tensor | Sequence[int] | None = None,
    ):
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, d); got {tuple(means.shape)}")
        _require_finite("means", means)
        K, d = means.shape
        weights = torch.as_tensor(weights, dtype=torch.float64)
        if (
            weights.shape != (K,)
            or not bool(weights.isfinite().all())
            or bool((weights < 0).any())
            or float(weights.sum()) <= 0
        ):
            raise ValueError(
                f"weights must be {K} finite non-negative numbers with a positive sum, "
                f"got {weights.tolist()}"
            )
        covs = torch.as_tensor(covs, dtype=torch.float64)
        _require_finite("covs", covs)
        if covs.ndim == 0:
            covs = covs.expand(K)
        if covs.shape == (K,):
            covs = covs[:, None].expand(K, d)
        if covs.shape == (K, d):
            eigvals, eigvecs = covs.clone(), None
        elif covs.shape == (K, d, d):
            if not torch.allclose(covs, covs.transpose(1, 2)):
                asym = float((covs - covs.transpose(1, 2)).abs().max())
                raise ValueError(f"covs must be symmetric; got max |C - C^T| = {asym:.3g}")
            eigvals, eigvecs = torch.linalg.eigh(covs)
        else:
            raise ValueError(
                f"covs must have shape (K, d, d), (K, d), (K,) or (); got {tuple(covs.shape)}"
            )
        if bool((eigvals <= 0).any()):
            raise ValueError(
                "covs must be positive definite, "
                f"got smallest eigenvalue {float(eigvals.min()):.3g}"
            )
        self.weights = weights / weights.sum()
        self.means = means
        self.eigvals = eigvals  # (K, d)
        self.eigvecs = eigvecs  # (K, d, d) or None for diagonal covariances
        self.labels = _component_labels(labels, K)  # (K,) int64
        self.dim = d
        self.num_classes = int(self.labels.max()) + 1

    def to(self, device: torch.device | str) -> GaussianMixture:
        """This mixture with its parameters on ``device`` (a new object; ``self`` is unchanged).

        Queries move the parameters to the points' device when they differ, so a mixture used on
        an accelerator should be moved there once rather than copied at every call.
        """
        moved = copy.copy(self)
        for name in ("weights", "means", "eigvals", "eigvecs", "labels"):
            value = getattr(self, name)
            setattr(moved, name, None if value is None else value.to(device))
        return moved

    @property
    def num_components(self) -> int:
        return len(self.weights)

    @property
    def covs(self) -> Tensor:
        """``(K, d, d)`` covariances."""
        if self.eigvecs is None:
            return torch.diag_embed(self.eigvals)
        return self.eigvecs @ torch.diag_embed(self.eigvals) @ self.eigvecs.transpose(1, 2)

    def sample(
        self, n: int, generator: torch.Generator | None = None, *, return_labels: bool = False
    ):
        """Draw ``n`` points ``(n, d)`` (float64); with ``return_labels`` also their classes
        ``(n,)`` (the component indices when each component is its own class)."""
        draw = Draws(generator)
        k = draw.choice(self.weights, n)
        z = draw.randn(n, self.dim)
        z = z * self.eigvals[k].sqrt()
        if self.eigvecs is not None:
            z = torch.einsum("nij,nj->ni", self.eigvecs[k], z)
        x = self.means[k] + z
        return (x, self.labels[k]) if return_labels else x

    # -- the perturbed mixture -----------------------------------------------------------------
    def _kernel(self, sde: SDE | None, t: Tensor | None, x: Tensor) -> tuple[Tensor, Tensor]:
        """``alpha(t)`` and ``sigma(t)`` per sample ``(B,)``, from ``sde.kernel_coefficients``."""
        B = x.shape[0]
        if sde is None:
            if t is not None:
                raise ValueError(f"t = {t!r} needs an sde to perturb the data; got sde=None")
            ones = torch.ones(B, dtype=torch.float64, device=x.device)
            return ones, torch.zeros_like(ones)
        if t is None:
            raise ValueError("t is required with sde")
        # float64 before anything else: a Python float t must not be rounded to float32 first.
        t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        t = t.expand(B) if t.ndim == 0 else t
        alpha, sigma = sde.kernel_coefficients(t)
        return alpha.to(torch.float64), sigma.to(torch.float64)

    def _terms(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-component log-densities ``(B, K)``; rotated residuals and variances ``(B, K, d)``."""
        x = x.reshape(x.shape[0], -1).to(torch.float64)
        if x.shape[1] != self.dim:
            raise ValueError(f"points must have {self.dim} features; got {x.shape[1]}")
        diff = x[:, None, :] - alpha[:, None, None] * self.means.to(x.device)  # (B, K, d)
        if self.eigvecs is not None:
            diff = torch.einsum(
                "kji,bkj->bki", self.eigvecs.to(x.device), diff
            )  # U_k^T (x - alpha mu_k)
        var = alpha[:, None, None] ** 2 * self.eigvals.to(x.device) + sigma[:, None, None] ** 2
        log_norm = -0.5 * (self.dim * math.log(2 * math.pi) + var.log().sum(-1))
        log_comp = log_norm - 0.5 * (diff**2 / var).sum(-1) + self.weights.to(x.device).log()
        return log_comp, diff, var

    def log_prob(
        self, x: Tensor, t: Tensor | float | None = None, sde: SDE | None = None
    ) -> Tensor:
        """``log p_t(x)`` per point, ``(B,)``; the data density ``log p_0(x)`` when ``sde`` is None.

        With ``sde`` (any SDE with a linear-Gaussian kernel) and ``t`` (a number or ``(B,)``), the
        density of the mixture perturbed by that SDE's kernel at time ``t``.
        """
        alpha, sigma = self._kernel(sde, t, x)
        log_comp, _, _ = self._terms(x, alpha, sigma)
        return torch.logsumexp(log_comp, dim=1).to(x.dtype)

    def responsibilities(
        self, x: Tensor, t: Tensor | float | None = None, sde: SDE | None = None
    ) -> Tensor:
        """``r_k(x) = w_k N_k(x) / p_t(x)``, shape ``(B, K)``: the posterior over components."""
        alpha, sigma = self._kernel(sde, t, x)
        log_comp, _, _ = self._terms(x, alpha, sigma)
        return torch.softmax(log_comp, dim=1)

    def score(self, x: Tensor, t: Tensor | float | None = None, sde: SDE | None = None) -> Tensor:
        """``grad_x log p_t(x)``, same shape and dtype as ``x``."""
        alpha, sigma = self._kernel(sde, t, x)
        log_comp, diff, var = self._terms(x, alpha, sigma)
        r = torch.softmax(log_comp, dim=1)  # (B, K)
        g = self._component_scores(diff, var)
        return (r[..., None] * g).sum(1).reshape(x.shape).to(x.dtype)

    def _component_scores(self, diff: Tensor, var: Tensor) -> Tensor:
        """``grad_x log N_k(x) = -(alpha^2 Sigma_k + sigma^2 I)^{-1} (x - alpha mu_k)``, shape
        ``(B, K, d)``, from the rotated residuals and variances of :meth:`_terms`."""
        g = -diff / var  # in each component's eigenbasis
        if self.eigvecs is not None:
            g = torch.einsum("kij,bkj->bki", self.eigvecs.to(g.device), g)
        return g

    def score_fn(self, sde: SDE) -> ScoreFn:
        """The exact score of the mixture perturbed by ``sde``, as a ScoreFn ``(x, t) -> score``."""

        def score_fn(x: Tensor, t: Tensor) -> Tensor:
            return self.score(x, t, sde)

        return score_fn

    # -- classes -------------------------------------------------------------------------------
    @property
    def class_weights(self) -> Tensor:
        """``p(y) = sum_{k: c_k = y} w_k`` for ``y = 0, ..., C - 1``, shape ``(C,)``."""
        return torch.zeros(
            self.num_classes, dtype=torch.float64, device=self.weights.device
        ).index_add_(0, self.labels, self.weights)

    def _class_mask(self, classes: Tensor) -> Tensor:
        """``mask[..., k] = (c_k == classes[...])``: which components belong to each class."""
        return self.labels.to(classes.device) == classes[..., None]

    def class_log_posterior(
        self, x: Tensor, t: Tensor | float | None = None, sde: SDE | None = None
    ) -> Tensor:
        """``log p_t(y | x) = log sum_{k: c_k = y} r_k(x)`` for every class, shape ``(B, C)``.

        ``-inf`` for a class of probability 0. Differentiable in ``x`` (through float64).
        """
        alpha, sigma = self._kernel(sde, t, x)
        log_comp, _, _ = self._terms(x, alpha, sigma)  # (B, K)
        in_class = self._class_mask(torch.arange(self.num_classes, device=x.device))  # (C, K)
        log_joint = torch.logsumexp(
            torch.where(in_class, log_comp[:, None, :], -math.inf), dim=2
        )  # log p_t(x, y), (B, C)
        return (log_joint - torch.logsumexp(log_comp, dim=1, keepdim=True)).to(x.dtype)

    def classifier_fn(self, sde: SDE) -> Classifier:
        """The exact noisy classifier ``(x, t) -> log p_t(y | x)``, ``(B, C)``, under ``sde``: the
        oracle's :data:`~scoresde.guidance.Classifier` for classifier guidance."""

        def classifier_fn(x: Tensor, t: Tensor) -> Tensor:
            return self.class_log_posterior(x, t, sde)

        return classifier_fn

    def _check_classes(self, label: int | Tensor) -> None:
        """Refuse a label whose class has probability 0 or does not exist."""
        possible = (self.class_weights > 0).nonzero().flatten().cpu()
        if not bool(torch.isin(torch.as_tensor(label).cpu(), possible).all()):
            raise ValueError(
                refusal("label", f"a class of positive weight, in {possible.tolist()}", label)
            )

    def class_score(
        self,
        x: Tensor,
        label: int | Tensor,
        t: Tensor | float | None = None,
        sde: SDE | None = None,
    ) -> Tensor:
        """``grad_x log p_t(y | x)`` for ``y = label`` (an int or ``(B,)`` labels), in closed form::

            grad_x log p_t(y | x) = sum_k (q_k(x) - r_k(x)) grad_x log N_k(x),

        with ``r`` the responsibilities and ``q`` those within class ``y``
        (``q_k = r_k [c_k = y] / p_t(y | x)``). Same shape and dtype as ``x``.
        """
        label = check_label(label)
        self._check_classes(label)
        y = batch_labels(label, x.shape[0], x.device)
        alpha, sigma = self._kernel(sde, t, x)
        log_comp, diff, var = self._terms(x, alpha, sigma)
        q = torch.softmax(log_comp.masked_fill(~self._class_mask(y), -math.inf), dim=1)
        r = torch.softmax(log_comp, dim=1)
        g = self._component_scores(diff, var)
        return ((q - r)[..., None] * g).sum(1).reshape(x.shape).to(x.dtype)

    def cond_score_fn(self, sde: SDE) -> CondScoreFn:
        """The exact class-conditional score under ``sde``, ``(x, t, y) -> grad log p_t(x | y)``
        (``grad log p_t(x)`` for ``y = None``): the oracle's
        :data:`~scoresde.guidance.CondScoreFn` for classifier-free guidance."""

        def cond_score_fn(x: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
            score = self.score(x, t, sde)
            return score if y is None else score + self.class_score(x, y, t, sde)

        return cond_score_fn

    def given_label(self, label: int) -> GaussianMixture:
        """The data law of class ``label``, ``p_0(x | y = label)``: a mixture of that class's
        components with weights ``w_k / p(label)`` (labels kept). Any SDE perturbs it into
        ``p_t(x | label)``, since the forward process does not touch labels."""
        integer(minimum=0).check("label", label)
        self._check_classes(label)
        keep = self.labels == label
        covs = self.eigvals[keep] if self.eigvecs is None else self.covs[keep]
        return GaussianMixture(self.weights[keep], self.means[keep], covs, self.labels[keep])

    # -- coordinates -----------------------------------------------------------------------------
    def condition(self, observed: Tensor, mask: Tensor) -> GaussianMixture:
        """The exact law of the unobserved coordinates given the observed ones, ``p_0(x_u | x_o)``.

        Each component is conditioned as a Gaussian and reweighted by its likelihood of ``x_o``::

            mu_k' = mu_u + S_uo S_oo^{-1} (x_o - mu_o),   Sigma_k' = S_uu - S_uo S_oo^{-1} S_ou,
            w_k' ∝ w_k N(x_o; mu_o, S_oo),

        with ``S = Sigma_k`` split by ``mask``. Component labels are kept, so the result's
        :meth:`class_log_posterior` is ``p(y | x_u, x_o)``.

        Arguments:
            observed: the point, of shape ``(d,)`` or any shape of ``d`` entries (an image
                ``D``); only its observed entries are read (the others may be anything, NaN too).
            mask: a boolean tensor of ``observed``'s shape, True where the value is observed.

        Raises:
            ValueError: for a mask that is not a boolean tensor of ``d`` entries or observes every
                coordinate, ``observed`` of another shape, or a non-finite observed value.

        Returns:
            a mixture in the ``d_u`` unobserved dimensions, in the order of ``mask.flatten()``.
        """
        allowed = f"a boolean tensor of {self.dim} entries (True = observed)"
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.numel() != self.dim:
            raise ValueError(refusal("mask", allowed, mask))
        observed = torch.as_tensor(observed, dtype=torch.float64, device=self.means.device)
        if observed.shape != mask.shape:
            raise ValueError(
                refusal("observed's shape", f"mask's {tuple(mask.shape)}", tuple(observed.shape))
            )
        o = mask.flatten().to(self.means.device)
        u = ~o
        if not bool(u.any()):
            raise ValueError(refusal("mask", "False somewhere (a coordinate left to infer)", mask))
        x_o = observed.flatten()[o]
        if not bool(x_o.isfinite().all()):
            raise ValueError(refusal("observed", "finite where mask is True", observed))
        S = self.covs
        S_oo, S_uo, S_uu = S[:, o][:, :, o], S[:, u][:, :, o], S[:, u][:, :, u]
        L = torch.linalg.cholesky(S_oo)
        resid = (x_o - self.means[:, o])[..., None]  # (K, d_o, 1)
        solved = torch.cholesky_solve(torch.cat([resid, S_uo.transpose(1, 2)], dim=2), L)
        means = self.means[:, u] + (S_uo @ solved[..., :1]).squeeze(-1)
        covs = S_uu - S_uo @ solved[..., 1:]
        log_lik = -0.5 * (
            o.sum() * math.log(2 * math.pi)
            + 2 * L.diagonal(dim1=1, dim2=2).log().sum(-1)
            + (resid * solved[..., :1]).sum((1, 2))
        )
        weights = torch.softmax(self.weights.log() + log_lik, dim=0)
        return GaussianMixture(weights, means, (covs + covs.transpose(1, 2)) / 2, self.labels)

    def mode_weights(self, x: Tensor) -> Tensor:
        """Fraction ``(K,)`` of points ``(B, d)`` whose most responsible component is each k."""
        labels = self.responsibilities(x).argmax(dim=1)
        return torch.bincount(labels, minlength=self.num_components).to(torch.float64) / len(labels)

    def entropy(
        self, n: int = 200_000, generator: torch.Generator | None = None
    ) -> tuple[float, float]:
        """Monte-Carlo estimate of the entropy ``H(p_0) = -E log p_0(x)`` (nats) and its std error.

        A Gaussian mixture has no closed-form entropy; ``n`` samples give a standard error
        ``std(log p) / sqrt(n)`` (about 1e-3 nats for the default on a 2D mixture).
        """
        logp = self.log_prob(self.sample(n, generator))
        return float(-logp.mean()), float(logp.std() / math.sqrt(n))

    @classmethod
    def ring(
        cls, k: int = 8, radius: float = 4.0, std: float = 0.5, dim: int = 2
    ) -> GaussianMixture:
        """``k`` equal-weight isotropic Gaussians on a circle in the first two coordinates."""
        angles = torch.arange(k, dtype=torch.float64) * 2 * math.pi / k
        means = torch.zeros(k, dim, dtype=torch.float64)
        means[:, 0], means[:, 1] = radius * angles.cos(), radius * angles.sin()
        return cls(torch.ones(k), means, std**2)

    def __repr__(self) -> str:
        return (
            f"GaussianMixture(K={self.num_components}, dim={self.dim}, classes={self.num_classes})"
        )
