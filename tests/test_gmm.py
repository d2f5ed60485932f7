"""The Gaussian-mixture oracle against scipy, closed forms and the Fokker–Planck equation.

Under an SDE with kernel ``N(alpha(t) x0, sigma(t)^2 I)`` the mixture stays a mixture,
``p_t = sum_k w_k N(alpha mu_k, alpha^2 Sigma_k + sigma^2 I)``. The tests compute that density
with scipy from kernels written out here (never read from the library), check the oracle's score
against autograd, and check that ``p_t`` solves the Fokker–Planck equation of ``sde.sde``:

    d/dt log p = -d f - f x . grad log p + g^2 / 2 (lap log p + |grad log p|^2)

for ``dx = f(t) x dt + g(t) dw`` in ``d`` dimensions, which ties the perturbed density to the SDE
itself rather than to its ``marginal_prob``.
"""

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from torch import Tensor
from user_sde import TimeVaryingOU

from scoresde import SDE, VESDE, VPSDE, GaussianMixture, LinearSDE, SubVPSDE

F64 = torch.float64

# Three dimensions: a 2x2 eigenvector matrix from eigh is a symmetric reflection, which would
# hide a transposed rotation; 3x3 ones are not symmetric.
D = 3
WEIGHTS = [0.5, 0.2, 0.3]
MEANS = [[0.0, 0.0, 0.0], [3.0, -1.0, 0.5], [-2.0, 2.5, -1.0]]
FULL_COVS = [
    [[1.0, 0.6, 0.2], [0.6, 0.8, -0.1], [0.2, -0.1, 0.5]],
    [[0.3, -0.1, 0.05], [-0.1, 0.5, 0.2], [0.05, 0.2, 0.9]],
    [[2.0, 0.0, 0.3], [0.0, 0.2, 0.0], [0.3, 0.0, 0.4]],
]
DIAG_COVS = [[1.0, 0.5, 0.3], [0.2, 0.7, 1.1], [1.5, 0.3, 0.6]]
ISO_COVS = [0.4, 1.0, 0.25]


def full_covs(covs) -> np.ndarray:
    """Any accepted covariance format as ``(K, d, d)`` matrices."""
    c = np.asarray(covs, dtype=float)
    if c.ndim == 0:
        c = np.full(len(WEIGHTS), float(c))
    if c.ndim == 1:
        c = c[:, None] * np.ones(D)
    if c.ndim == 2:
        c = np.stack([np.diag(row) for row in c])
    return c


def scipy_log_prob(x: Tensor, alpha: float = 1.0, sigma: float = 0.0, covs=FULL_COVS) -> np.ndarray:
    """``log sum_k w_k N(x; alpha mu_k, alpha^2 Sigma_k + sigma^2 I)`` with scipy."""
    covs = full_covs(covs)
    comps = [
        np.log(w)
        + multivariate_normal(alpha * np.asarray(m), alpha**2 * c + sigma**2 * np.eye(D)).logpdf(
            x.numpy()
        )
        for w, m, c in zip(WEIGHTS, MEANS, covs, strict=True)
    ]
    return logsumexp(np.stack(comps), axis=0)


@pytest.fixture(scope="module")
def mixture() -> GaussianMixture:
    return GaussianMixture(WEIGHTS, MEANS, FULL_COVS)


def points(n: int = 64, seed: int = 0, scale: float = 3.0) -> Tensor:
    return scale * torch.randn(n, D, generator=torch.Generator().manual_seed(seed), dtype=F64)


# -- kernels written out from each SDE's definition -------------------------------------------


def vp_kernel(b0, b1):
    def kernel(t):
        B = b0 * t + 0.5 * (b1 - b0) * t**2
        return math.exp(-B / 2), math.sqrt(1 - math.exp(-B))

    return kernel


def subvp_kernel(b0, b1):
    def kernel(t):
        B = b0 * t + 0.5 * (b1 - b0) * t**2
        return math.exp(-B / 2), 1 - math.exp(-B)

    return kernel


def cosine_kernel(t):  # below the clip time (~0.90 for beta_max = 20): Nichol & Dhariwal
    s = 0.008
    u, u0 = math.pi / 2 * (t + s) / (1 + s), math.pi / 2 * s / (1 + s)
    alpha2 = math.cos(u) ** 2 / math.cos(u0) ** 2
    return math.sqrt(alpha2), math.sqrt(1 - alpha2)


def ve_kernel(t, sigma_min=0.01, sigma_max=50.0):
    return 1.0, sigma_min * (sigma_max / sigma_min) ** t


def ou_kernel(t, a=2.0, b=6.0, s=2.0):
    alpha = math.exp(-(a * t + 0.5 * b * t**2))
    return alpha, s * math.sqrt(1 - alpha**2)


def const_linear_kernel(t, c=1.3, d=0.9, s0=0.2):
    """dx = -c x dt + d dw from sigma_0 = s0: alpha = e^{-ct},
    var = s0^2 e^{-2ct} + d^2 (1 - e^{-2ct}) / 2c."""
    alpha = math.exp(-c * t)
    return alpha, math.sqrt(s0**2 * alpha**2 + d**2 * (1 - alpha**2) / (2 * c))


SDES = {
    "vp": (VPSDE(), vp_kernel(0.1, 20.0)),
    "vp-cosine": (VPSDE(schedule="cosine"), cosine_kernel),
    "subvp": (SubVPSDE(), subvp_kernel(0.1, 20.0)),
    "ve": (VESDE(), ve_kernel),
    "linear-fg": (
        LinearSDE(
            lambda t: torch.full_like(t, -1.3), lambda t: torch.full_like(t, 0.9), initial_std=0.2
        ),
        const_linear_kernel,
    ),
    "user-ou": (TimeVaryingOU(), ou_kernel),
}
TIMES = [0.0, 1e-3, 0.3, 0.85]


# -- densities ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "covs", [FULL_COVS, DIAG_COVS, ISO_COVS, 0.6], ids=["full", "diag", "iso", "shared"]
)
def test_log_prob_matches_scipy(covs):
    gmm = GaussianMixture(WEIGHTS, MEANS, covs)
    x = points()
    # Both float64 evaluations of the same formula: rounding only (~1e-15 relative).
    np.testing.assert_allclose(gmm.log_prob(x).numpy(), scipy_log_prob(x, covs=covs), rtol=1e-12)
    np.testing.assert_allclose(gmm.covs.numpy(), full_covs(covs), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kind", SDES)
@pytest.mark.parametrize("t", TIMES)
def test_perturbed_log_prob_is_the_convolution(mixture, kind, t):
    sde, kernel = SDES[kind]
    alpha, sigma = kernel(t)
    x = points(seed=1)
    expected = scipy_log_prob(x, alpha, sigma)
    # rtol 1e-9: the library's kernels agree with these formulas to ~1e-12 (closed forms) and the
    # LinearSDE's quadrature to ~1e-12; scipy and the oracle are float64.
    np.testing.assert_allclose(mixture.log_prob(x, t, sde).numpy(), expected, rtol=1e-9)
    # A per-sample time tensor gives the same numbers as a shared Python float.
    t_batch = torch.full((len(x),), t, dtype=F64)
    np.testing.assert_allclose(mixture.log_prob(x, t_batch, sde).numpy(), expected, rtol=1e-9)


@pytest.mark.parametrize("kind", [None, *SDES])
@pytest.mark.parametrize("covs", [FULL_COVS, DIAG_COVS], ids=["full", "diag"])
def test_score_is_the_gradient_of_log_prob(kind, covs):
    gmm = GaussianMixture(WEIGHTS, MEANS, covs)
    sde = SDES[kind][0] if kind else None
    x = points(seed=2).requires_grad_(True)
    for t in [None] if sde is None else [1e-3, 0.5]:
        (grad,) = torch.autograd.grad(gmm.log_prob(x, t, sde).sum(), x)
        # Closed form vs reverse-mode derivative of the same float64 density: rounding only.
        torch.testing.assert_close(gmm.score(x.detach(), t, sde), grad, rtol=1e-10, atol=1e-10)
        if sde is not None:
            t_b = torch.full((len(x),), t, dtype=F64)
            score = gmm.score_fn(sde)(x.detach(), t_b)
            torch.testing.assert_close(score, grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", SDES)
def test_perturbed_density_solves_the_fokker_planck_equation(mixture, kind):
    sde = SDES[kind][0]
    d, h = D, 1e-5
    x = points(n=32, seed=3, scale=2.0).requires_grad_(True)
    for t in (0.3, 0.7):
        f_t, g_t = coefficient_values(sde, t)
        dlogp_dt = (mixture.log_prob(x, t + h, sde) - mixture.log_prob(x, t - h, sde)) / (2 * h)
        score = mixture.score(x, t, sde)
        laplacian = sum(
            torch.autograd.grad(score[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(d)
        )
        drift_term = -d * f_t - f_t * (x * score).sum(1)
        diffusion_term = 0.5 * g_t**2 * (laplacian + score.pow(2).sum(1))
        residual = dlogp_dt - drift_term - diffusion_term
        scale = dlogp_dt.abs() + drift_term.abs() + diffusion_term.abs()
        # Central difference in t: error h^2/6 |d^3 log p / dt^3| <~ 1e-10 * beta^3, rounding
        # eps |log p| / h ~ 1e-10; 1e-6 of the terms' size is a wide margin over both.
        assert (residual.abs() <= 1e-6 * scale + 1e-9).all(), residual.abs().max()


def coefficient_values(sde: SDE, t: float) -> tuple[float, float]:
    drift, diffusion = sde.sde(torch.ones(1, 1, dtype=F64), torch.tensor([t], dtype=F64))
    return drift.item(), diffusion.item()


def test_image_shaped_points_and_float32(mixture):
    gmm = GaussianMixture.ring(k=5, dim=12)
    x = 2 * torch.randn(7, 3, 2, 2, generator=torch.Generator().manual_seed(4), dtype=F64)
    sde = VPSDE()
    t = torch.full((7,), 0.4, dtype=F64)
    score = gmm.score_fn(sde)(x, t)
    assert score.shape == x.shape
    torch.testing.assert_close(score.flatten(1), gmm.score(x.flatten(1), t, sde), rtol=0, atol=0)
    torch.testing.assert_close(gmm.log_prob(x, t, sde), gmm.log_prob(x.flatten(1), t, sde))
    # float32 in, float32 out; computed in float64 internally, so only the output is rounded.
    score32 = gmm.score(x.float(), t.float(), sde)
    assert score32.dtype == torch.float32
    torch.testing.assert_close(score32.double(), score, rtol=1e-6, atol=1e-6)


# -- sampling -------------------------------------------------------------------------------------


def test_sample_moments_and_label_frequencies(mixture):
    n = 40_000
    x, labels = mixture.sample(n, torch.Generator().manual_seed(5), return_labels=True)
    assert x.shape == (n, D) and x.dtype == F64
    counts = torch.bincount(labels, minlength=3).double()
    w = torch.tensor(WEIGHTS, dtype=F64)
    # Label frequencies: binomial standard error sqrt(w (1 - w) / n); 5 standard errors.
    assert ((counts / n - w).abs() <= 5 * (w * (1 - w) / n).sqrt()).all()
    for k, (mu, cov) in enumerate(zip(MEANS, FULL_COVS, strict=True)):
        xk = x[labels == k]
        nk = len(xk)
        mu, cov = torch.tensor(mu, dtype=F64), torch.tensor(cov, dtype=F64)
        # Mean: standard error sqrt(Sigma_ii / n_k). Covariance entry (i, j) of a Gaussian
        # sample: standard error sqrt((Sigma_ii Sigma_jj + Sigma_ij^2) / n_k). 5 standard errors.
        assert ((xk.mean(0) - mu).abs() <= 5 * (cov.diagonal() / nk).sqrt()).all()
        se_cov = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / nk).sqrt()
        assert ((torch.cov(xk.T) - cov).abs() <= 5 * se_cov).all()
    again = mixture.sample(n, torch.Generator().manual_seed(5))
    assert torch.equal(again, x)  # same generator state, same samples


def test_mode_weights():
    gmm = GaussianMixture(WEIGHTS, MEANS, 0.1)
    counts = [3, 1, 6]
    x = torch.cat(
        [torch.tensor([m], dtype=F64).expand(c, D) for m, c in zip(MEANS, counts, strict=True)]
    )
    x = x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(6), dtype=F64)
    # Points next to their means are assigned without doubt: exact fractions.
    torch.testing.assert_close(gmm.mode_weights(x), torch.tensor([0.3, 0.1, 0.6], dtype=F64))
    ring = GaussianMixture.ring(k=8)
    n = 20_000
    w = ring.mode_weights(ring.sample(n, torch.Generator().manual_seed(7)))
    # Misassignment between neighbours is symmetric on the ring, so each fraction is 1/8 within
    # its binomial standard error sqrt(p (1 - p) / n); 5 standard errors.
    assert ((w - 1 / 8).abs() <= 5 * math.sqrt(1 / 8 * 7 / 8 / n)).all()
    assert w.sum().item() == pytest.approx(1.0)


def test_ring():
    ring = GaussianMixture.ring(k=6, radius=3.0, std=0.4, dim=3)
    torch.testing.assert_close(ring.means.norm(dim=1), torch.full((6,), 3.0, dtype=F64))
    assert (ring.means[:, 2] == 0).all()
    torch.testing.assert_close(ring.weights, torch.full((6,), 1 / 6, dtype=F64))
    torch.testing.assert_close(ring.covs, 0.16 * torch.eye(3, dtype=F64).expand(6, 3, 3))


def test_entropy_of_a_single_gaussian():
    cov = np.array([[1.0, 0.3, 0.0], [0.3, 2.0, -0.4], [0.0, -0.4, 0.5]])
    gmm = GaussianMixture([1.0], [[1.0, -2.0, 0.5]], cov[None])
    n = 20_000
    h, se = gmm.entropy(n, torch.Generator().manual_seed(8))
    exact = 0.5 * np.log(np.linalg.det(2 * np.pi * np.e * cov))
    # Var(log p) = d / 2 for a Gaussian: the standard error is sqrt(d / 2 / n) (within 10% MC).
    assert se == pytest.approx(math.sqrt(3 / 2 / n), rel=0.1)
    assert abs(h - exact) <= 5 * se


# -- bad input ----------------------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")
BAD_MIXTURES = [
    # (weights, means, covs, parameter name, value as printed, what is allowed)
    (WEIGHTS, [0.0, 1.0, 2.0], 1.0, "means", "(3,)", "(K, d)"),
    (WEIGHTS, [[0.0, 0.0], [NAN, 1.0], [2.0, 2.0]], 1.0, "means", "nan", "finite"),
    ([0.5, 0.5], MEANS, 1.0, "weights", "[0.5, 0.5]", "3 finite non-negative"),
    ([0.5, -0.2, 0.7], MEANS, 1.0, "weights", "-0.2", "non-negative"),
    ([0.0, 0.0, 0.0], MEANS, 1.0, "weights", "[0.0, 0.0, 0.0]", "positive sum"),
    ([0.5, NAN, 0.5], MEANS, 1.0, "weights", "nan", "finite"),
    ([0.5, INF, 0.5], MEANS, 1.0, "weights", "inf", "finite"),
    (WEIGHTS, MEANS, np.ones((3, 2, 3)), "covs", "(3, 2, 3)", "(K, d, d), (K, d), (K,) or ()"),
    (
        WEIGHTS,
        MEANS,
        np.stack([np.eye(3) + np.triu(np.ones((3, 3)), 1) / 2] * 3),
        "covs",
        "0.5",
        "symmetric",
    ),
    (WEIGHTS, MEANS, [[1.0, 0.0, 1.0]] * 3, "covs", "eigenvalue 0", "positive definite"),
    (
        WEIGHTS,
        MEANS,
        np.stack([np.ones((3, 3)) - np.eye(3)] * 3),
        "covs",
        "eigenvalue -1",
        "positive definite",
    ),
    (WEIGHTS, MEANS, [1.0, INF, 1.0], "covs", "inf", "finite"),
]


@pytest.mark.parametrize("weights, means, covs, name, value, allowed", BAD_MIXTURES)
def test_bad_mixtures_raise_naming_parameter_value_and_allowed(
    weights, means, covs, name, value, allowed
):
    with pytest.raises(ValueError) as info:
        GaussianMixture(weights, means, covs)
    message = str(info.value)
    assert message.startswith(name), message  # the message opens with the parameter's name
    for part in (value, allowed):
        assert part in message, f"{part!r} missing from {message!r}"


def test_bad_queries_raise(mixture):
    x = points(n=4)
    with pytest.raises(ValueError, match="t is required with sde"):
        mixture.log_prob(x, None, VPSDE())
    with pytest.raises(ValueError, match=r"t = 0\.5 needs an sde"):
        mixture.score(x, 0.5)
    with pytest.raises(ValueError, match="points must have 3 features; got 2"):
        mixture.log_prob(torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"t must lie in \[0, T\]"):  # the SDE's own check
        mixture.score(x, 1.5, VPSDE())


def test_to_moves_every_parameter_and_keeps_the_original():
    gm = GaussianMixture.ring(5)
    moved = gm.to("meta")
    assert all(p.device.type == "meta" for p in (moved.weights, moved.means, moved.eigvals))
    assert gm.means.device.type == "cpu"
    x = torch.zeros(3, 2, dtype=torch.float64, device="meta")
    assert moved.score(x).device.type == "meta"
