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
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from scoresde.sde import SDE, ScoreFn

__all__ = ["GaussianMixture"]


def _require_finite(name: str, value: Tensor) -> None:
    bad = value[~value.isfinite()]
    if bad.numel():
        raise ValueError(f"{name} must be finite, got an entry {bad[0].item()}")


class GaussianMixture:
    """A mixture of ``K`` Gaussians in ``d`` dimensions.

    Arguments:
        weights: ``(K,)`` non-negative mixture weights (normalised here).
        means: ``(K, d)`` component means.
        covs: ``(K, d, d)`` full covariances, ``(K, d)`` diagonal variances, ``(K,)`` isotropic
            variances, or a single number shared by every component.

    Data points are ``(B, d)``; an image-shaped ``(B, *D)`` input is flattened with ``d = prod(D)``.
    Computation is in float64; results take the dtype of the input.
    """

    def __init__(
        self,
        weights: Tensor | Sequence[float],
        means: Tensor | Sequence,
        covs: Tensor | float | Sequence,
    ):
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, d), got {tuple(means.shape)}")
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
                raise ValueError(f"covs must be symmetric, got max |C - C^T| = {asym:.3g}")
            eigvals, eigvecs = torch.linalg.eigh(covs)
        else:
            raise ValueError(
                f"covs must have shape (K, d, d), (K, d), (K,) or (), got {tuple(covs.shape)}"
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
        self.dim = d

    def to(self, device: torch.device | str) -> GaussianMixture:
        """This mixture with its parameters on ``device`` (a new object; ``self`` is unchanged).

        Queries move the parameters to the points' device when they differ, so a mixture used on
        an accelerator should be moved there once rather than copied at every call.
        """
        moved = copy.copy(self)
        for name in ("weights", "means", "eigvals", "eigvecs"):
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
        """Draw ``n`` points ``(n, d)`` (float64), with ``return_labels`` also their labels."""
        labels = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        z = z * self.eigvals[labels].sqrt()
        if self.eigvecs is not None:
            z = torch.einsum("nij,nj->ni", self.eigvecs[labels], z)
        x = self.means[labels] + z
        return (x, labels) if return_labels else x

    # -- the perturbed mixture -----------------------------------------------------------------
    def _kernel(self, sde: SDE | None, t: Tensor | None, x: Tensor) -> tuple[Tensor, Tensor]:
        """``alpha(t)`` and ``sigma(t)`` per sample ``(B,)``, from ``sde.kernel_coefficients``."""
        B = x.shape[0]
        if sde is None:
            if t is not None:
                raise ValueError(f"t = {t!r} needs an sde to perturb the data, got sde=None")
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
            raise ValueError(f"points must have {self.dim} features, got {x.shape[1]}")
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
        g = -diff / var  # gradient of each component in its eigenbasis
        if self.eigvecs is not None:
            g = torch.einsum("kij,bkj->bki", self.eigvecs.to(x.device), g)
        return (r[..., None] * g).sum(1).reshape(x.shape).to(x.dtype)

    def score_fn(self, sde: SDE) -> ScoreFn:
        """The exact score of the mixture perturbed by ``sde``, as a ScoreFn ``(x, t) -> score``."""

        def score_fn(x: Tensor, t: Tensor) -> Tensor:
            return self.score(x, t, sde)

        return score_fn

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
        return f"GaussianMixture(K={self.num_components}, dim={self.dim})"
