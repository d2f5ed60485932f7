"""The oracle's exact conditionals against independent computations.

A mixture whose components carry class labels ``c_k`` is a joint law of ``(x, y)``. Its noisy class
posterior ``p_t(y | x)`` is checked against Bayes' rule with the perturbed densities computed by
quadrature of the forward kernel (1-D), and against a hand-derived two-component closed form; its
gradient ``grad log p_t(y | x)`` against that closed form, against autograd, and against the
difference of the class-conditional and unconditional scores. The conditional law given observed
coordinates is checked against normalising the joint density by quadrature (2-D) and against the
precision-matrix form of Gaussian conditioning (3-D), with weights from scipy's marginal densities.
"""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import trapezoid
from scipy.special import log_expit, logsumexp
from scipy.stats import multivariate_normal, norm
from user_sde import TimeVaryingOU

from scoresde import VESDE, VPSDE, GaussianMixture, LinearSDE, SubVPSDE

F64 = torch.float64

# Three dimensions with full covariances; components 0 and 2 are class 0, component 1 class 1.
WEIGHTS = [0.5, 0.2, 0.3]
MEANS = [[0.0, 0.0, 0.0], [3.0, -1.0, 0.5], [-2.0, 2.5, -1.0]]
COVS = [
    [[1.0, 0.6, 0.2], [0.6, 0.8, -0.1], [0.2, -0.1, 0.5]],
    [[0.3, -0.1, 0.05], [-0.1, 0.5, 0.2], [0.05, 0.2, 0.9]],
    [[2.0, 0.0, 0.3], [0.0, 0.2, 0.0], [0.3, 0.0, 0.4]],
]
LABELS = [0, 1, 0]
MIXTURE = GaussianMixture(WEIGHTS, MEANS, COVS, labels=LABELS)

SDES = {
    "vp": VPSDE(),
    "subvp": SubVPSDE(),
    "ve": VESDE(),
    "linear-fg": LinearSDE(
        lambda t: torch.full_like(t, -1.3), lambda t: torch.full_like(t, 0.9), initial_std=0.2
    ),
    "user-ou": TimeVaryingOU(),
}


def points(n: int = 64, d: int = 3, seed: int = 0, scale: float = 2.5) -> torch.Tensor:
    return scale * torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


def times(n: int, seed: int = 0) -> torch.Tensor:
    return 0.02 + 0.96 * torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=F64)


# -- kernels written out by hand (not read from the library) ---------------------------------------


def vp_kernel(t: float) -> tuple[float, float]:
    B = 0.1 * t + 0.5 * (20.0 - 0.1) * t**2
    return math.exp(-B / 2), math.sqrt(1 - math.exp(-B))


def ve_kernel(t: float) -> tuple[float, float]:
    return 1.0, 0.01 * 5000**t


def ou_kernel(t: float) -> tuple[float, float]:
    alpha = math.exp(-(2.0 * t + 3.0 * t**2))
    return alpha, 2.0 * math.sqrt(1 - alpha**2)


# -- the class posterior ---------------------------------------------------------------------------

# One dimension, four components, three classes (class 0 holds two components).
W1 = [0.35, 0.25, 0.15, 0.25]
M1 = [-2.0, 0.5, 1.5, 4.0]
S1 = [0.6, 1.1, 0.3, 0.8]  # standard deviations
L1 = [0, 1, 0, 2]


@pytest.mark.parametrize(
    "sde, kernel, t",
    [
        (None, None, None),
        (VPSDE(), vp_kernel, 0.05),
        (VPSDE(), vp_kernel, 0.4),
        (VESDE(), ve_kernel, 0.5),
        (TimeVaryingOU(), ou_kernel, 0.2),
    ],
    ids=["data", "vp-0.05", "vp-0.4", "ve-0.5", "ou-0.2"],
)
def test_class_posterior_is_bayes_rule_by_quadrature(sde, kernel, t):
    gmm = GaussianMixture(W1, [[m] for m in M1], [s**2 for s in S1], labels=L1)
    x = np.linspace(-4.0, 6.0, 11)
    # p_t(x, y) = sum_{k: c_k = y} w_k int N(x0; m_k, s_k^2) N(x; alpha x0, sigma^2) dx0, by the
    # trapezoid rule on a grid 100x finer than the narrowest integrand (std >= 0.16): for these
    # smooth, decaying integrands its error is far below the 1e-9 asked.
    joint = np.zeros((len(x), 3))
    for w, m, s, c in zip(W1, M1, S1, L1, strict=True):
        if kernel is None:
            joint[:, c] += w * norm.pdf(x, m, s)
        else:
            alpha, sigma = kernel(t)
            x0 = np.linspace(-12.0, 14.0, 40_001)
            integrand = norm.pdf(x0, m, s)[None, :] * norm.pdf(x[:, None], alpha * x0, sigma)
            joint[:, c] += w * trapezoid(integrand, x0, axis=1)
    expected = joint / joint.sum(1, keepdims=True)
    got = gmm.class_log_posterior(torch.tensor(x[:, None]), t, sde).exp()
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-9)


def test_two_components_by_hand():
    # p_t(1 | x) = sigmoid(l_1 - l_0), l_k = log w_k + log N(x; alpha m_k, V_k), V_k = alpha^2 v_k
    # + sigma^2; d/dx log p_t(1 | x) = p_t(0 | x) (l_1' - l_0'), l_k' = -(x - alpha m_k) / V_k.
    w, m, v = (0.3, 0.7), (-1.0, 2.0), (0.5, 1.5)
    gmm = GaussianMixture(w, [[m[0]], [m[1]]], v)
    sde, t = VPSDE(), 0.3
    alpha, sigma = vp_kernel(t)
    x = np.linspace(-5.0, 6.0, 23)
    V = [alpha**2 * vk + sigma**2 for vk in v]
    log_n = [
        math.log(wk) + norm.logpdf(x, alpha * mk, math.sqrt(Vk))
        for wk, mk, Vk in zip(w, m, V, strict=True)
    ]
    dlog_n = [-(x - alpha * mk) / Vk for mk, Vk in zip(m, V, strict=True)]
    log_p1, log_p0 = log_expit(log_n[1] - log_n[0]), log_expit(log_n[0] - log_n[1])
    xt = torch.tensor(x[:, None])
    got = gmm.class_log_posterior(xt, t, sde).numpy()
    np.testing.assert_allclose(got, np.stack([log_p0, log_p1], 1), rtol=1e-10, atol=1e-12)
    for y, expected in (
        (1, np.exp(log_p0) * (dlog_n[1] - dlog_n[0])),
        (0, np.exp(log_p1) * (dlog_n[0] - dlog_n[1])),
    ):
        got = gmm.class_score(xt, y, t, sde)[:, 0].numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", [None, *SDES])
def test_class_score_is_the_difference_of_scores_and_the_gradient(kind):
    # grad log p_t(y | x) = grad log p_t(x | y) - grad log p_t(x) (Bayes' rule), with p_t(. | y)
    # the class's own mixture, a separate oracle; and it is the gradient of log p_t(y | x).
    sde = SDES[kind] if kind else None
    x = points(seed=1)
    t = times(len(x), seed=1) if sde else None
    for y in (0, 1):
        expected = MIXTURE.given_label(y).score(x, t, sde) - MIXTURE.score(x, t, sde)
        # Two float64 evaluations of the same quantity by different formulas: rounding only.
        torch.testing.assert_close(
            MIXTURE.class_score(x, y, t, sde), expected, rtol=1e-9, atol=1e-10
        )
        xg = x.clone().requires_grad_()
        (grad,) = torch.autograd.grad(MIXTURE.class_log_posterior(xg, t, sde)[:, y].sum(), xg)
        torch.testing.assert_close(MIXTURE.class_score(x, y, t, sde), grad, rtol=1e-9, atol=1e-10)
    # One label per sample: each row is the row of its own class.
    y = torch.arange(len(x)) % 2
    per_sample = MIXTURE.class_score(x, y, t, sde)
    for c in (0, 1):
        torch.testing.assert_close(per_sample[y == c], MIXTURE.class_score(x, c, t, sde)[y == c])
    if sde is not None:
        cond = MIXTURE.cond_score_fn(sde)
        torch.testing.assert_close(cond(x, t, None), MIXTURE.score(x, t, sde), rtol=0, atol=0)
        torch.testing.assert_close(
            cond(x, t, y), MIXTURE.score(x, t, sde) + per_sample, rtol=0, atol=0
        )
        torch.testing.assert_close(
            MIXTURE.classifier_fn(sde)(x, t), MIXTURE.class_log_posterior(x, t, sde), rtol=0, atol=0
        )


def test_class_posterior_sums_to_one_and_respects_empty_classes():
    gmm = GaussianMixture(WEIGHTS, MEANS, COVS, labels=[0, 3, 0])  # classes 1 and 2 are empty
    assert gmm.num_classes == 4
    torch.testing.assert_close(gmm.class_weights, torch.tensor([0.8, 0.0, 0.0, 0.2], dtype=F64))
    log_post = gmm.class_log_posterior(points(), 0.3, VPSDE())
    assert log_post.shape == (64, 4) and (log_post[:, 1:3] == -math.inf).all()
    torch.testing.assert_close(log_post.exp().sum(1), torch.ones(64, dtype=F64))
    # Each component its own class by default: the posterior is the responsibilities.
    plain = GaussianMixture(WEIGHTS, MEANS, COVS)
    x = points(seed=2)
    torch.testing.assert_close(
        plain.class_log_posterior(x).exp(), plain.responsibilities(x), rtol=1e-12, atol=1e-14
    )
    # Given a label, the posterior is certain of it.
    log_post = MIXTURE.given_label(1).class_log_posterior(x)
    assert (log_post[:, 1] == 0).all() and (log_post[:, 0] == -math.inf).all()


# -- the class-conditional mixture -----------------------------------------------------------------


@pytest.mark.parametrize(
    "covs", [COVS, [[1.0, 0.5, 0.3], [0.2, 0.7, 1.1], [1.5, 0.3, 0.6]]], ids=["full", "diag"]
)
def test_given_label_is_the_reweighted_class(covs):
    gmm = GaussianMixture(WEIGHTS, MEANS, covs, labels=LABELS)
    c0 = gmm.given_label(0)
    torch.testing.assert_close(c0.weights, torch.tensor([0.5, 0.3], dtype=F64) / 0.8)
    torch.testing.assert_close(c0.means, gmm.means[[0, 2]], rtol=0, atol=0)
    torch.testing.assert_close(c0.covs, gmm.covs[[0, 2]], rtol=1e-12, atol=1e-14)
    assert c0.labels.tolist() == [0, 0] and (c0.eigvecs is None) == (gmm.eigvecs is None)
    # Bayes' rule: log p_t(x | y) = log p_t(x) + log p_t(y | x) - log p(y), at t = 0 and t > 0.
    x = points(seed=3)
    for t, sde in ((None, None), (0.4, VPSDE())):
        for y in (0, 1):
            bayes = (
                gmm.log_prob(x, t, sde)
                + gmm.class_log_posterior(x, t, sde)[:, y]
                - gmm.class_weights[y].log()
            )
            torch.testing.assert_close(gmm.given_label(y).log_prob(x, t, sde), bayes)


def test_sample_returns_classes():
    n = 40_000
    x, y = MIXTURE.sample(n, torch.Generator().manual_seed(4), return_labels=True)
    assert y.dtype == torch.int64 and set(y.tolist()) == {0, 1}
    # Class frequency p(0) = 0.8 within 5 binomial standard errors; class 1 is component 1 alone,
    # whose mean it must have (5 standard errors of a mean).
    assert abs(float((y == 0).double().mean()) - 0.8) <= 5 * math.sqrt(0.8 * 0.2 / n)
    x1 = x[y == 1]
    se = (torch.tensor(COVS[1], dtype=F64).diagonal() / len(x1)).sqrt()
    assert ((x1.mean(0) - torch.tensor(MEANS[1], dtype=F64)).abs() <= 5 * se).all()


# -- conditioning on coordinates -------------------------------------------------------------------

MEANS_2D = [[0.0, 0.0], [2.5, -1.0], [-1.5, 2.0]]
COVS_2D = [[[1.0, 0.7], [0.7, 0.9]], [[0.4, -0.2], [-0.2, 0.6]], [[1.5, 0.0], [0.0, 0.3]]]


@pytest.mark.parametrize("observed_axis, value", [(0, 0.7), (1, -0.4), (0, 4.0)])
def test_condition_normalises_the_joint_by_quadrature(observed_axis, value):
    gmm = GaussianMixture(WEIGHTS, MEANS_2D, COVS_2D)
    mask = torch.tensor([observed_axis == 0, observed_axis == 1])
    observed = torch.full((2,), value, dtype=F64)
    cond = gmm.condition(observed, mask)
    assert cond.dim == 1

    def joint_log_density(u: np.ndarray) -> np.ndarray:
        pts = np.zeros((len(u), 2))
        pts[:, observed_axis], pts[:, 1 - observed_axis] = value, u
        return logsumexp(
            [
                math.log(w) + multivariate_normal(m, c).logpdf(pts)
                for w, m, c in zip(WEIGHTS, MEANS_2D, COVS_2D, strict=True)
            ],
            axis=0,
        )

    # p(u | x_o) = p(x_o, u) / int p(x_o, u') du', the integral by the trapezoid rule on a grid
    # 1000x finer than the narrowest conditional std (>= 0.2): error far below 1e-9.
    grid = np.linspace(-15.0, 15.0, 60_001)
    log_z = math.log(trapezoid(np.exp(joint_log_density(grid)), grid))
    u = np.linspace(-4.0, 5.0, 19)
    got = cond.log_prob(torch.tensor(u[:, None])).numpy()
    np.testing.assert_allclose(got, joint_log_density(u) - log_z, rtol=0, atol=1e-9)


@pytest.mark.parametrize("mask", [[True, False, True], [False, True, False], [True, True, False]])
def test_condition_matches_the_precision_form(mask):
    # Conditioning a Gaussian through its precision Lambda = Sigma^-1: cov = Lambda_uu^-1, mean =
    # mu_u - Lambda_uu^-1 Lambda_uo (x_o - mu_o); weights w_k N(x_o; mu_o, Sigma_oo) by scipy.
    o = np.array(mask)
    u = ~o
    x = np.array([0.8, -0.3, 1.7])
    cond = MIXTURE.condition(torch.tensor(x), torch.tensor(mask))
    log_w = []
    for k, (w, m, c) in enumerate(zip(WEIGHTS, MEANS, COVS, strict=True)):
        m, c = np.array(m), np.array(c)
        lam = np.linalg.inv(c)
        cov = np.linalg.inv(lam[np.ix_(u, u)])
        mean = m[u] - cov @ lam[np.ix_(u, o)] @ (x[o] - m[o])
        np.testing.assert_allclose(cond.means[k].numpy(), mean, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(cond.covs[k].numpy(), cov, rtol=1e-10, atol=1e-12)
        log_w.append(math.log(w) + multivariate_normal(m[o], c[np.ix_(o, o)]).logpdf(x[o]))
    expected = np.exp(np.array(log_w) - logsumexp(log_w))
    np.testing.assert_allclose(cond.weights.numpy(), expected, rtol=1e-10)
    # Labels are kept: the class posterior given x_o and x_u is the joint one at the full point.
    assert cond.labels.tolist() == LABELS
    x_u = points(n=16, d=int(u.sum()), seed=5)
    full = torch.tensor(x).repeat(16, 1)
    full[:, torch.tensor(u)] = x_u
    torch.testing.assert_close(
        cond.class_log_posterior(x_u), MIXTURE.class_log_posterior(full), rtol=1e-10, atol=1e-12
    )


def test_condition_on_image_shaped_points_and_on_nothing():
    gmm = GaussianMixture.ring(k=5, dim=4)
    mask = torch.tensor([[True, False], [False, True]])
    observed = torch.tensor([[1.0, math.nan], [math.nan, -0.5]], dtype=F64)  # unread entries
    as_image = gmm.condition(observed, mask)
    flat = gmm.condition(torch.tensor([1.0, 0.0, 0.0, -0.5]), mask.flatten())
    for name in ("weights", "means", "covs"):
        torch.testing.assert_close(getattr(as_image, name), getattr(flat, name), rtol=0, atol=0)
    # Nothing observed: the same distribution.
    nothing = MIXTURE.condition(torch.zeros(3), torch.zeros(3, dtype=torch.bool))
    x = points(seed=6)
    torch.testing.assert_close(nothing.log_prob(x), MIXTURE.log_prob(x), rtol=1e-12, atol=1e-12)


def test_to_moves_the_labels():
    assert MIXTURE.to("meta").labels.device.type == "meta"
    assert MIXTURE.labels.device.type == "cpu"


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "labels", [[0, 1], [0, -1, 0], [0.0, 1.0, 0.0], [True, False, True], "abc", [[0, 1, 0]]]
)
def test_bad_labels_raise(labels):
    with pytest.raises(
        ValueError,
        match=r"^labels must be 3 integers >= 0, one class per "
        r"component; got ",
    ):
        GaussianMixture(WEIGHTS, MEANS, COVS, labels=labels)


@pytest.mark.parametrize(
    "label, match",
    [
        (2, r"label must be a class of positive weight, in \[0, 1\]; got 2"),
        (-1, r"label must be an integer >= 0 or a 1-D integer tensor of labels >= 0; got -1"),
        (0.0, "label must be an integer >= 0 or a 1-D integer tensor"),
        (True, "label must be an integer >= 0 or a 1-D integer tensor"),
        (torch.tensor([0, 2, 1, 0]), r"label must be a class of positive weight, in \[0, 1\]"),
        (torch.tensor([0.0, 1.0, 1.0, 0.0]), "label must be an integer >= 0 or a 1-D integer"),
        (
            torch.tensor([0, 1, 1]),
            r"label's shape must be \(4,\), one label per sample; got \(3,\)",
        ),
    ],
)
def test_bad_class_labels_raise(label, match):
    with pytest.raises(ValueError, match=match):
        MIXTURE.class_score(points(n=4), label, 0.5, VPSDE())


def test_bad_given_label_raises():
    with pytest.raises(ValueError, match=r"label must be a class of positive weight, in \[0, 3\]"):
        GaussianMixture(WEIGHTS, MEANS, COVS, labels=[0, 3, 0]).given_label(1)
    for label in (torch.tensor(0), True, 1.0, -1):
        with pytest.raises(ValueError, match="label must be an integer >= 0; got"):
            MIXTURE.given_label(label)


@pytest.mark.parametrize(
    "observed, mask, match",
    [
        (torch.zeros(3), torch.tensor([1, 0, 1]), "mask must be a boolean tensor of 3 entries"),
        (torch.zeros(3), torch.tensor([True, False]), "mask must be a boolean tensor of 3 entries"),
        (torch.zeros(3), [True, False, True], "mask must be a boolean tensor of 3 entries"),
        (
            torch.zeros(4),
            torch.tensor([True, False, True]),
            r"observed's shape must be mask's \(3,\); got \(4,\)",
        ),
        (
            torch.tensor([math.nan, 0.0, 0.0]),
            torch.tensor([True, False, True]),
            "observed must be finite where mask is True; got tensor",
        ),
        (torch.zeros(3), torch.ones(3, dtype=torch.bool), r"mask must be False somewhere"),
    ],
)
def test_bad_conditions_raise(observed, mask, match):
    with pytest.raises(ValueError, match=match):
        MIXTURE.condition(observed, mask)
