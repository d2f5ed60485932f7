"""log_likelihood and bits_per_dim against the Gaussian-mixture oracle's exact densities.

With the oracle's exact score the probability-flow ODE carries ``p_eps`` exactly onto ``p_T``,
so ``log_likelihood`` differs from the oracle's ``log p_eps`` only by (i) the solver's error and
(ii) the prior mismatch ``log prior(z) - log p_T(z)``. Giving the SDE the oracle's ``p_T`` as
its prior removes (ii); (ii) itself is checked against its theoretical mean separately.
"""

import math

import numpy as np
import pytest
import torch
from closed_forms import WrittenKernel
from user_sde import TimeVaryingOU

from scoresde import (
    SDE,
    VESDE,
    VPSDE,
    GaussianMixture,
    SubVPSDE,
    batch_broadcast,
    bits_per_dim,
    log_likelihood,
)
from scoresde.guidance import classifier_free
from scoresde.likelihood import EXACT_TRACE_BATCH, EXACT_TRACE_MAX_DIM, _drift_and_exact_divergence

EPS = 1e-5
SDES = {
    "vp": VPSDE,
    "subvp": SubVPSDE,
    "ve": VESDE,
    "user": TimeVaryingOU,
}


class ExactPriorSDE(SDE):
    """``base`` with the oracle's ``p_T`` as prior, so likelihoods carry solver error only."""

    def __init__(self, base: SDE, oracle: GaussianMixture, kernel=None):
        super().__init__(base.N)
        self.base, self.oracle, self.kernel = base, oracle, kernel or base

    @property
    def T(self):
        return self.base.T

    def sde(self, x, t):
        return self.base.sde(x, t)

    def marginal_prob(self, x, t):
        return self.base.marginal_prob(x, t)

    def prior_sampling(self, shape, generator=None):
        return self.base.prior_sampling(shape, generator)

    def prior_logp(self, z):
        return self.oracle.log_prob(z, self.T, self.kernel)


@pytest.fixture(scope="module")
def ring():
    return GaussianMixture.ring(8)


def perturbed(
    oracle: GaussianMixture, sde: SDE, t: float, n: int, seed: int, shape=None
) -> torch.Tensor:
    """``n`` exact samples of the oracle perturbed to time ``t`` (float64), optionally reshaped."""
    g = torch.Generator().manual_seed(seed)
    x0 = oracle.sample(n, g)
    if shape is not None:
        x0 = x0.reshape(n, *shape)
    alpha, std = sde.kernel_coefficients(torch.full((n,), t, dtype=torch.float64))
    noise = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    return batch_broadcast(alpha, x0) * x0 + batch_broadcast(std, x0) * noise


@pytest.mark.parametrize("name", SDES)
def test_exact_trace_matches_oracle(ring, name):
    # The oracle (score, p_eps, p_T, the perturbed points) follows the kernels written out in
    # tests/closed_forms.py, so a kernel or diffusion formula the library gets wrong shows here.
    sde = SDES[name]()
    kernel = WrittenKernel(name) if name != "user" else sde
    x = perturbed(ring, kernel, EPS, 64, seed=1)
    exact_prior = ExactPriorSDE(sde, ring, kernel)
    info = log_likelihood(exact_prior, ring.score_fn(kernel), x, return_info=True)
    truth = ring.log_prob(x, EPS, kernel)
    error = (info.logp - truth).abs().mean().item()
    print(f"{name}: solver error {error:.2e} nats (mean |.|), nfe {info.nfe}")
    # The target: solver error <= 1e-3 nats at <= 150 score evaluations. The defaults
    # (dopri5, rtol = atol = 1e-5) measure 2e-5 to 4e-5 nats with 85 to 145 evaluations.
    assert error <= 1e-3
    assert info.nfe <= 150
    torch.testing.assert_close(info.logp, info.prior_logp + info.delta_logp, rtol=0, atol=1e-12)
    assert info.z.shape == x.shape


@pytest.mark.parametrize("name", SDES)
def test_prior_mismatch_is_minus_kl(ring, name):
    """With the SDE's prior, ``logp - log p_eps = log prior(z) - log p_T(z)``: the model's error.

    Over ``x ~ p_eps`` the end points ``z`` are samples of ``p_T``, so the mismatch's mean is
    ``-KL(p_T || prior)`` and its mean absolute value ``E_{p_T} |log prior - log p_T|``; both are
    predicted here by Monte Carlo on direct samples of ``p_T``.
    """
    sde = SDES[name]()
    n = 256
    x = perturbed(ring, sde, EPS, n, seed=2)
    logp = log_likelihood(sde, ring.score_fn(sde), x)
    mismatch = logp - ring.log_prob(x, EPS, sde)
    z = perturbed(ring, sde, sde.T, 20_000, seed=3)
    theory = sde.prior_logp(z) - ring.log_prob(z, sde.T, sde)
    print(
        f"{name}: prior mismatch mean {mismatch.mean():.2e} (theory -KL = {theory.mean():.2e}), "
        f"mean |.| {mismatch.abs().mean():.2e} (theory {theory.abs().mean():.2e}) nats"
    )
    # Loose: 4 standard errors of both Monte-Carlo means, plus 1e-4 nats for the solver's error.
    for measured, predicted in ((mismatch, theory), (mismatch.abs(), theory.abs())):
        se = math.hypot(
            measured.std().item() / math.sqrt(n), predicted.std().item() / math.sqrt(len(z))
        )
        assert abs(measured.mean().item() - predicted.mean().item()) <= 4 * se + 1e-4


def test_float32_matches_oracle(ring):
    sde = VPSDE()
    x = perturbed(ring, sde, EPS, 64, seed=4)
    logp = log_likelihood(ExactPriorSDE(sde, ring), ring.score_fn(sde), x.float())
    assert logp.dtype == torch.float32
    # Single precision adds ~1e-6 relative per step to the float64 error: the 1e-3 target holds.
    assert (logp.double() - ring.log_prob(x, EPS, sde)).abs().mean() <= 1e-3


def test_image_shaped_data():
    """A 9-dimensional mixture as (B, 1, 3, 3) images: the same code path as 2D points."""
    g = torch.Generator().manual_seed(5)
    oracle = GaussianMixture(
        torch.ones(3), 2 * torch.randn(3, 9, generator=g, dtype=torch.float64), 0.3
    )
    sde = VPSDE()
    x = perturbed(oracle, sde, EPS, 32, seed=6, shape=(1, 3, 3))
    info = log_likelihood(ExactPriorSDE(sde, oracle), oracle.score_fn(sde), x, return_info=True)
    assert info.logp.shape == (32,) and info.z.shape == x.shape
    # The target for the solver's error, as for 2D points.
    assert (info.logp - oracle.log_prob(x, EPS, sde)).abs().mean() <= 1e-3


@pytest.mark.parametrize("probe", ["gaussian", "rademacher"])
def test_hutchinson_is_unbiased(ring, probe):
    """500 copies of each point, each with its own probe: their mean is the exact-trace value."""
    sde = VPSDE()
    x = perturbed(ring, sde, EPS, 2, seed=7)
    copies = 500
    # Tight tolerances make the solver's bias (~1e-6 nats) negligible next to the standard error.
    tol = {"rtol": 1e-7, "atol": 1e-7}
    exact = log_likelihood(sde, ring.score_fn(sde), x, **tol)
    g = torch.Generator().manual_seed(8)
    estimates = log_likelihood(
        sde,
        ring.score_fn(sde),
        x.repeat_interleave(copies, 0),
        trace="hutchinson",
        probe=probe,
        generator=g,
        **tol,
    ).reshape(2, copies)
    se = estimates.std(1) / math.sqrt(copies)
    assert bool((se > 0).all())
    # Unbiasedness: within 4 standard errors of the Monte-Carlo mean over probes.
    assert bool(((estimates.mean(1) - exact).abs() <= 4 * se).all())


def test_hutchinson_probes_average(ring):
    """``n_probes = 4`` halves the standard deviation: the probes' terms are independent."""
    sde = VPSDE()
    x = perturbed(ring, sde, EPS, 1, seed=7).repeat_interleave(500, 0)
    g = torch.Generator().manual_seed(9)
    std = [
        log_likelihood(
            sde, ring.score_fn(sde), x, trace="hutchinson", n_probes=n, generator=g
        ).std()
        for n in (1, 4)
    ]
    # Expected ratio 1/2; the sample stds of 500 draws are each within a few percent.
    assert 0.4 <= (std[1] / std[0]).item() <= 0.6


@pytest.mark.parametrize(
    ("batch", "shape", "passes"),
    [
        (1, (5,), 1),  # every row in one batched product of 5 vectors
        (100, (3,), 2),  # 2 vectors: rows (0, 1), then (2, and a zero vector)
        (EXACT_TRACE_BATCH, (4,), 4),  # one row per product
        (4, (1, 8, 8), 1),  # the 64 rows of 4 images at once
        (50, (2, 3, 3), 4),  # 5 vectors: 20 rows for 18, the last two zero
    ],
)
def test_exact_divergence_in_blocks_of_rows_is_the_jacobian_trace(
    batch, shape, passes, monkeypatch
):
    # v(x) = tanh(W x + c) per sample, with a per-sample offset c so that every sample's trace
    # sum_i (1 - tanh^2)_i W_ii differs; the reference is torch.func's Jacobian of each sample.
    products = []  # (batched, number of vectors) of every vector-Jacobian product
    plain_grad = torch.autograd.grad

    def counted_grad(outputs, inputs, grad_outputs=None, **kwargs):
        batched = kwargs.get("is_grads_batched", False)
        products.append((batched, len(grad_outputs) if batched else 1))
        return plain_grad(outputs, inputs, grad_outputs, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counted_grad)
    g = torch.Generator().manual_seed(0)
    d = math.prod(shape)
    weight = torch.randn(d, d, generator=g, dtype=torch.float64)
    x = torch.randn(batch, *shape, generator=g, dtype=torch.float64)
    calls = []

    def sde(x, t):
        calls.append(x.shape[0])
        flat = torch.tanh(x.flatten(1) @ weight.T + t[:, None])
        return flat.view_as(x), torch.ones_like(t)

    t = torch.linspace(-1, 1, batch, dtype=torch.float64)
    drift, div = _drift_and_exact_divergence(sde, x, t)
    assert calls == [batch]  # one forward pass, on the samples themselves
    rows = math.ceil(d / passes)  # per pass: one batched product, a plain one for a single row
    assert products == [(rows > 1, rows)] * passes

    def one(xi, ti):
        return torch.tanh(weight @ xi.flatten() + ti)

    jacobians = torch.func.vmap(torch.func.jacrev(one))(x, t)  # (B, D, *shape)
    expected = torch.diagonal(jacobians.reshape(batch, d, d), dim1=1, dim2=2).sum(1)
    torch.testing.assert_close(div, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(drift, sde(x, t)[0], rtol=0, atol=0)


def test_exact_trace_falls_back_to_plain_products_where_the_batched_one_fails():
    # A score that differentiates a GroupNorm network (as classifier guidance does): the exact
    # trace then needs GroupNorm's double backward, which torch's batched product lacks.
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.GroupNorm(2, 4), torch.nn.SiLU()
    ).double()

    def guided(x, t):
        with torch.enable_grad():
            x_in = x if x.requires_grad else x.detach().requires_grad_(True)
            energy = net(x_in).square().sum()
            return -x - torch.autograd.grad(energy, x_in, create_graph=True)[0]

    x = torch.randn(2, 1, 3, 3, dtype=torch.float64)
    t = torch.full((2,), 0.5, dtype=torch.float64)
    sde = VPSDE().reverse(guided, probability_flow=True).sde
    with pytest.raises(RuntimeError):  # what the fallback is for
        xg = x.clone().requires_grad_(True)
        v = sde(xg, t)[0]
        units = torch.eye(9, dtype=torch.float64)[:, None].expand(9, 2, 9).reshape(9, *x.shape)
        torch.autograd.grad(v, xg, grad_outputs=units, is_grads_batched=True)
    _, div = _drift_and_exact_divergence(sde, x, t)
    xg = x.clone().requires_grad_(True)
    v = sde(xg, t)[0].flatten(1)
    rows = [torch.autograd.grad(v[:, i].sum(), xg, retain_graph=True)[0] for i in range(9)]
    expected = sum(row.flatten(1)[:, i] for i, row in enumerate(rows))
    torch.testing.assert_close(div, expected, rtol=1e-12, atol=1e-12)


def test_exact_trace_calls_the_score_on_the_batch_itself():
    # A score with one label per sample (a (B,) tensor, bound to the batch) works only if the
    # exact trace evaluates it on the batch as it is, not on copies of it.
    means = torch.tensor([[2.0, 0.0], [-2.0, 1.0], [0.0, -2.0]], dtype=torch.float64)

    def cond_score(x, t, y):
        return -(x - means[y]) * (1 + x[:, :1].tanh() ** 2)

    labels = torch.tensor([0, 1, 2, 1])
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grid = {"trace": "exact", "method": "euler", "num_steps": 8}
    batched = log_likelihood(VPSDE(), classifier_free(cond_score, labels, 0.0), x, **grid)
    alone = [
        log_likelihood(VPSDE(), classifier_free(cond_score, int(y), 0.0), x[b : b + 1], **grid)
        for b, y in enumerate(labels)
    ]
    torch.testing.assert_close(batched, torch.cat(alone), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("dim", "chosen"), [(EXACT_TRACE_MAX_DIM, "exact"), (EXACT_TRACE_MAX_DIM + 1, "hutchinson")]
)
def test_auto_trace_is_exact_up_to_the_threshold(dim, chosen):
    """``trace="auto"`` (the default) is the exact trace for ``D <= 16``, Hutchinson's above."""
    sde = VPSDE()
    oracle = GaussianMixture(torch.ones(1), torch.zeros(1, dim, dtype=torch.float64), 0.5)
    x = perturbed(oracle, sde, EPS, 4, seed=18, shape=(1, dim))  # image-shaped: D = prod(x[0])
    kwargs = {"method": "rk4", "num_steps": 2, "return_info": True}
    g = torch.Generator().manual_seed(19)
    auto = log_likelihood(sde, oracle.score_fn(sde), x, generator=g, **kwargs)
    same = log_likelihood(
        sde,
        oracle.score_fn(sde),
        x,
        trace=chosen,
        generator=torch.Generator().manual_seed(19),
        **kwargs,
    )
    assert auto.trace == same.trace == chosen
    torch.testing.assert_close(auto.logp, same.logp, rtol=0, atol=0)
    # Only Hutchinson's trace draws probes from the generator.
    untouched = torch.Generator().manual_seed(19).get_state()
    assert torch.equal(g.get_state(), untouched) == (chosen == "exact")


def test_numpy_integers_are_counts():
    sde = VPSDE()
    x = torch.zeros(4, 2, dtype=torch.float64)
    kwargs = {"method": "rk4", "trace": "hutchinson", "generator": torch.Generator().manual_seed(0)}
    info = log_likelihood(
        sde,
        lambda x, t: -x,
        x,
        num_steps=np.int64(3),
        n_probes=np.int64(2),
        return_info=True,
        **kwargs,
    )
    assert info.nfe == 4 * 3 and torch.isfinite(info.logp).all()
    k = torch.zeros(4, 2, dtype=torch.long)
    assert bits_per_dim(
        sde, lambda x, t: -x, k, num_bins=np.int64(256), num_steps=2, method="euler"
    ).shape == (4,)


class RecordingScore:
    """The oracle's score that records every call's times and counts the calls."""

    def __init__(self, oracle, sde):
        self.score_fn = oracle.score_fn(sde)
        self.times = []

    def __call__(self, x, t):
        assert t.shape == (x.shape[0],)
        self.times.append(t.detach().clone())
        return self.score_fn(x, t)


@pytest.mark.parametrize(
    ("name", "dtype", "options"),
    [
        ("ve", torch.float64, {}),  # torchdiffeq's start-up probe would evaluate at t = 10.8
        ("vp", torch.float64, {}),  # an unconstrained last step would end at t = 1.009
        ("vp", torch.float32, {"rtol": 1e-3, "atol": 1e-3}),
        ("subvp", torch.float64, {"method": "bosh3"}),
        ("user", torch.float64, {"method": "rk4", "num_steps": 7}),
    ],
)
def test_score_only_evaluated_in_eps_T(ring, name, dtype, options):
    sde = SDES[name]()
    score = RecordingScore(ring, sde)
    x = perturbed(ring, sde, EPS, 16, seed=10).to(dtype)
    info = log_likelihood(sde, score, x, return_info=True, **options)
    times = torch.cat(score.times)
    assert times.dtype == dtype
    # eps and T as the working precision represents them.
    assert times.min() >= torch.tensor(EPS, dtype=dtype)
    assert times.max() <= torch.tensor(sde.T, dtype=dtype)
    assert info.nfe == len(score.times)


@pytest.mark.parametrize(
    ("method", "stages"),
    [("euler", [0.0]), ("midpoint", [0.0, 0.5]), ("rk4", [0.0, 1 / 3, 2 / 3, 1.0])],
)
def test_fixed_step_methods_use_the_uniform_grid(ring, method, stages):
    sde = VPSDE()
    score = RecordingScore(ring, sde)
    x = perturbed(ring, sde, EPS, 8, seed=11)
    info = log_likelihood(sde, score, x, method=method, num_steps=10, return_info=True)
    # One score call per stage (the exact trace's vector-Jacobian products are not evaluations).
    assert info.nfe == len(score.times) == len(stages) * 10
    h = (sde.T - EPS) / 10
    expected = torch.tensor(
        [EPS + (i + c) * h for i in range(10) for c in stages], dtype=torch.float64
    )
    torch.testing.assert_close(
        torch.stack([t[0] for t in score.times]), expected, rtol=0, atol=1e-12
    )


def test_default_num_steps_is_sde_N(ring):
    sde = VPSDE(N=30)
    info = log_likelihood(
        sde,
        ring.score_fn(sde),
        perturbed(ring, sde, EPS, 4, seed=12),
        method="euler",
        return_info=True,
    )
    assert info.nfe == 30


def test_determinism_from_generator(ring):
    sde = VPSDE()
    x = perturbed(ring, sde, EPS, 8, seed=13)

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return log_likelihood(
            sde, ring.score_fn(sde), x, trace="hutchinson", n_probes=2, generator=g
        )

    torch.testing.assert_close(run(0), run(0), rtol=0, atol=0)
    assert not torch.equal(run(0), run(1))
    exact = [log_likelihood(sde, ring.score_fn(sde), x) for _ in range(2)]
    torch.testing.assert_close(exact[0], exact[1], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "leapfrog"}, "method must be one of"),
        ({"method": "scipy_solver"}, "method must be one of"),
        ({"trace": "approx"}, "trace must be one of"),
        ({"probe": "uniform"}, "probe must be one of"),
        ({"n_probes": 0}, "n_probes must be an integer >= 1"),
        ({"n_probes": 1.5}, "n_probes must be an integer >= 1"),
        ({"eps": 0.0}, r"eps must be a number in \(0, 1.0\); got 0.0"),
        ({"eps": 1.0}, r"eps must be a number in \(0, 1.0\)"),
        ({"eps": -1e-3}, r"eps must be a number in \(0, 1.0\)"),
        ({"rtol": 0.0}, "rtol must be a finite number >= 1.19"),
        ({"atol": -1e-5}, "atol must be a finite number >= 1.19"),
        ({"atol": float("nan")}, "atol must be a finite number >= 1.19"),
        ({"rtol": 1e-300}, "rtol must be a finite number >= 1.19.*; got 1e-300"),
        ({"method": "rk4", "times": torch.tensor([1.0, 0.5]), "num_steps": 4}, "do not also give"),
        ({"method": "rk4", "times": torch.tensor([0.5, 1.0])}, "times must be strictly decreasing"),
        ({"method": "rk4", "grid": "cubic"}, "kind must be one of"),
        ({"num_steps": 10}, "num_steps is for the fixed-step methods"),
        ({"method": "rk4", "num_steps": 0}, "num_steps must be an integer >= 1"),
    ],
)
def test_bad_arguments(ring, kwargs, match):
    sde = VPSDE()
    with pytest.raises(ValueError, match=match):
        log_likelihood(sde, ring.score_fn(sde), torch.zeros(4, 2), **kwargs)


@pytest.mark.parametrize(
    "x", [torch.zeros(4), torch.zeros(4, 2, dtype=torch.long), torch.zeros(0, 2)]
)
def test_bad_data(ring, x):
    sde = VPSDE()
    with pytest.raises(ValueError, match=r"x must be a floating-point tensor of shape \(B, \*D\)"):
        log_likelihood(sde, ring.score_fn(sde), x)


def test_score_of_the_wrong_shape_raises(ring):
    # A (B, 1) score would broadcast against (B, 2) data into a wrong but finite likelihood.
    sde = VPSDE()
    with pytest.raises(
        ValueError,
        match=r"score_fn must return a tensor of the input's shape "
        r"\(4, 2\); got \(4, 1\)",
    ):
        log_likelihood(sde, lambda x, t: -x[:, :1], torch.zeros(4, 2, dtype=torch.float64))


def test_score_without_gradient_is_reported(ring):
    sde = VESDE()

    def detached_score(x, t):
        return ring.score(x, t, sde).detach()

    with pytest.raises(RuntimeError, match="must be differentiable in x"):
        log_likelihood(sde, detached_score, torch.zeros(4, 2, dtype=torch.float64))


# -- bits per dimension ---------------------------------------------------------------------------
def test_bits_per_dim_offsets(ring):
    """For 8-bit data on [-1, 1], bpd = -log p(y) / (D ln 2) + 7 at the dequantised point y."""
    sde = VPSDE()
    k = torch.randint(0, 256, (16, 2), generator=torch.Generator().manual_seed(14))
    bpd = bits_per_dim(
        sde, ring.score_fn(sde), k, dtype=torch.float64, generator=torch.Generator().manual_seed(15)
    )
    u = torch.rand(k.shape, generator=torch.Generator().manual_seed(15), dtype=torch.float64)
    y = 2 * (k + u) / 256 - 1
    logp = log_likelihood(sde, ring.score_fn(sde), y)
    # The same computation on the same points: equal up to round-off.
    torch.testing.assert_close(bpd, -logp / (2 * math.log(2)) + 7, rtol=0, atol=1e-10)


def test_bits_per_dim_matches_discrete_probability(ring):
    """Mean bpd over dequantisations equals ``-log2 P(k) / D`` with ``P(k) = int_bin p_eps(y) dy``.

    ``P(k)`` comes from Gauss-Legendre quadrature of the oracle's density over the bin.
    """
    sde = VESDE()
    model = ExactPriorSDE(sde, ring)
    num_bins, lo, hi, copies = 1024, -8.0, 8.0, 200
    points = perturbed(ring, sde, EPS, 3, seed=16)
    k = ((points - lo) / (hi - lo) * num_bins).floor().long()
    g = torch.Generator().manual_seed(17)
    bpd = bits_per_dim(
        model,
        ring.score_fn(sde),
        k.repeat_interleave(copies, 0),
        num_bins=num_bins,
        data_range=(lo, hi),
        dtype=torch.float64,
        generator=g,
    ).reshape(3, copies)
    width = (hi - lo) / num_bins
    nodes, weights = (torch.as_tensor(a) for a in np.polynomial.legendre.leggauss(8))
    offsets = torch.cartesian_prod(nodes, nodes) * width / 2 + width / 2  # (64, 2) in one bin
    quad_weights = torch.outer(weights, weights).flatten() * (width / 2) ** 2
    corners = lo + k.double() * width  # (3, 2)
    y = (corners[:, None, :] + offsets).reshape(-1, 2)
    density = ring.log_prob(y, EPS, sde).exp().reshape(3, -1)
    discrete_bpd = -torch.log2((density * quad_weights).sum(1)) / 2
    se = bpd.std(1) / math.sqrt(copies)
    # Jensen's gap E_u[-log p] - (-log E_u[p]) is about Var_bin(log p) / 2 < 1e-3 bits for
    # bins of width 1/64 at these points; plus 4 Monte-Carlo standard errors.
    assert bool(((bpd.mean(1) - discrete_bpd).abs() <= 4 * se + 1e-3).all())


@pytest.mark.parametrize(
    ("x", "kwargs", "match"),
    [
        (torch.rand(4, 2), {}, "x must be an integer tensor of bin indices"),
        (torch.full((4, 2), 256), {}, r"x must hold bin indices in \[0, 255\]"),
        (torch.full((4, 2), -1), {}, r"x must hold bin indices in \[0, 255\]"),
        (torch.zeros(4, 2, dtype=torch.long), {"num_bins": 1}, "num_bins must be an integer >= 2"),
        (
            torch.zeros(4, 2, dtype=torch.long),
            {"data_range": (1.0, -1.0)},
            "data_range must be finite",
        ),
    ],
)
def test_bits_per_dim_bad_arguments(ring, x, kwargs, match):
    sde = VPSDE()
    with pytest.raises(ValueError, match=match):
        bits_per_dim(sde, ring.score_fn(sde), x, **kwargs)
