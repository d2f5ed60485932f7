"""scoresde.sample against closed-form truth: the Gaussian-mixture oracle's exact score and density.

Every sampler x predictor x corrector x SDE (VP, sub-VP, VE and the user-defined
``TimeVaryingOU``) starts from the prior and, with the oracle's exact score, must reproduce an
8-mode ring: the cross-entropy gap ``mean(-log p_data(samples)) - H(p_data)`` must be small and
every mode must hold its weight 1/8. Then: exact score-evaluation counts, determinism, no time
outside ``[eps, T]`` ever reaching the score or the SDE, Tweedie denoising against the closed-form
posterior mean, trajectories, shapes, dtypes and every bad argument.
"""

from __future__ import annotations

import math

import pytest
import torch
from user_sde import TimeVaryingOU

from scoresde import SDE, VESDE, VPSDE, GaussianMixture, SubVPSDE
from scoresde.sampling import CORRECTORS, PREDICTORS, sample

RING = GaussianMixture.ring(8)  # radius 4, std 0.5: neighbouring modes 3.06 = 6.1 std apart
N_SAMPLES = 3000

# Grid sizes. The stochastic samplers' bias is first order in the step: 100 steps keep VP, sub-VP
# and VE within 0.11 nats; the user's OU process is stiffer (g(t)^2 = 8 theta(t) reaches 64, VP's
# beta(t) only 20) and needs 400 for the same.
SDES = {
    "vp": lambda N=100: VPSDE(N=N),
    "subvp": lambda N=100: SubVPSDE(N=N),
    "ve": lambda N=100: VESDE(N=N),
    "user": lambda N=400: TimeVaryingOU(N=N),
}
# The OU's kernel std at the default eps = 1e-3 is 0.13, so Tweedie's posterior mean there is
# visibly narrower than the data (variance shrunk by 6%, a gap of -0.06 nats, which is right: it is
# E[x_0 | x_eps], not a sample of p_0). At eps = 1e-4 the std is 0.04 and the shrinkage (0.6%) is
# below the Monte-Carlo error.
EPS = {"vp": None, "subvp": None, "ve": None, "user": 1e-4}
HAS_CHAIN = {"vp": True, "subvp": False, "ve": True, "user": False}

PC = [(p, c) for p in sorted(PREDICTORS) for c in sorted(CORRECTORS) if (p, c) != ("none", "none")]

# Tolerances. Monte Carlo with 3000 samples: the gap has standard error std(log p) / sqrt(3000)
# ~ 1.0 / 55 = 0.018 nats, a mode weight sqrt(1/8 * 7/8 / 3000) = 0.006. Each tolerance is the
# discretisation bias measured at these step counts (mean over 4 seeds) plus about 3 standard
# errors.
WEIGHT_TOL = 0.03  # 5 standard errors; no combination shows a bias in the weights (max seen 0.02)
# Predictor-driven samplers and the ODE: bias <= 0.06 (VP, sub-VP, ODE dopri5 / rk4 <= 0.01),
# largest for VE reverse diffusion (+0.10), VE Euler ODE at 100 steps (-0.11) and the OU (+0.10).
GAP_TOL = 0.17
# Corrector-only sampling (predictor 'none') has no transport step: it needs several MCMC steps per
# time and keeps the unadjusted-Langevin bias of its step size. Measured at 50 times x 10 steps:
# Langevin (snr 0.3) 0.08-0.18, ALD (snr 0.5) 0.05-0.20 ...
CORRECTOR_ONLY = {"langevin": {"snr": 0.3, "n_steps": 10}, "ald": {"snr": 0.5, "n_steps": 10}}
CORRECTOR_ONLY_N = 50
CORRECTOR_ONLY_GAP_TOL = 0.3
# ... except ALD on the OU process (1.30): its step 2 (snr sigma(t))^2 shrinks with the kernel std,
# so at small t it cannot follow the OU's growing data scale 1/alpha(t) (alpha(0.1) = 0.78). The
# modes are found (weights within tolerance) but sit too close to the centre.
ALD_ON_OU_GAP_TOL = 1.5


@pytest.fixture(scope="module")
def ring_entropy() -> float:
    # 200k samples: standard error 2e-3 nats, negligible against the tolerances.
    entropy, _ = RING.entropy(200_000, torch.Generator().manual_seed(0))
    return entropy


def check_mixture(x: torch.Tensor, entropy: float, gap_tol: float) -> None:
    assert x.shape == (N_SAMPLES, 2) and torch.isfinite(x).all()
    gap = float(-RING.log_prob(x).mean()) - entropy
    weight_error = float((RING.mode_weights(x) - 1 / RING.num_components).abs().max())
    assert abs(gap) <= gap_tol, f"cross-entropy gap {gap:.4f} > {gap_tol}"
    assert weight_error <= WEIGHT_TOL, f"mode weight error {weight_error:.4f} > {WEIGHT_TOL}"


# -- every combination recovers the mixture -----------------------------------------------------
@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("predictor,corrector", PC)
def test_pc_recovers_mixture(sde_name, predictor, corrector, ring_entropy):
    kwargs = dict(predictor=predictor, corrector=corrector, eps=EPS[sde_name])
    tol = GAP_TOL
    if predictor == "none":
        sde = SDES[sde_name](CORRECTOR_ONLY_N)
        kwargs.update(CORRECTOR_ONLY[corrector])
        tol = CORRECTOR_ONLY_GAP_TOL
        if (sde_name, corrector) == ("user", "ald"):
            tol = ALD_ON_OU_GAP_TOL
    else:
        sde = SDES[sde_name]()
    if predictor == "ancestral_sampling" and not HAS_CHAIN[sde_name]:
        with pytest.raises(ValueError, match="ancestral sampling needs a discrete Markov chain"):
            sample(sde, RING.score_fn(sde), (N_SAMPLES, 2), **kwargs)
        return
    g = torch.Generator().manual_seed(1)
    x = sample(sde, RING.score_fn(sde), (N_SAMPLES, 2), generator=g, **kwargs)
    check_mixture(x, ring_entropy, tol)


ODE_CASES = {
    "em": {"sampler": "em"},
    "ode-dopri5": {"sampler": "ode"},
    "ode-rk4-20": {"sampler": "ode", "method": "rk4", "num_steps": 20},
    "ode-euler": {"sampler": "ode", "method": "euler"},  # num_steps = sde.N, as the SDEs above
}


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("case", list(ODE_CASES))
def test_em_and_ode_recover_mixture(sde_name, case, ring_entropy):
    sde = SDES[sde_name]()
    g = torch.Generator().manual_seed(2)
    kwargs = ODE_CASES[case]
    x = sample(sde, RING.score_fn(sde), (N_SAMPLES, 2), generator=g, eps=EPS[sde_name], **kwargs)
    check_mixture(x, ring_entropy, GAP_TOL)


def test_ancestral_error_comes_before_any_work():
    calls = []
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    for sde in (SubVPSDE(N=10), TimeVaryingOU(N=10)):
        with pytest.raises(ValueError, match="predictor='ancestral_sampling' is not available"):
            sample(sde, lambda x, t: calls.append(t) or -x, (4, 2), predictor="ancestral_sampling",
                   generator=g)
    assert calls == [] and torch.equal(g.get_state(), state)


# -- cost, randomness, time range ------------------------------------------------------------------
class CountingScore:
    """The oracle's score, counting calls and recording every t it sees."""

    def __init__(self, sde: SDE):
        self.score_fn = RING.score_fn(sde)
        self.times: list[torch.Tensor] = []

    def __call__(self, x, t):
        assert t.shape == (x.shape[0],)
        self.times.append(t.clone())
        return self.score_fn(x, t)


STAGES = {"euler": 1, "midpoint": 2, "heun2": 2, "heun3": 3, "rk4": 4}


@pytest.mark.parametrize("denoise", [True, False])
@pytest.mark.parametrize(
    "kwargs,expected",
    [
        ({"sampler": "em"}, lambda n: n - 1),
        ({"predictor": "reverse_diffusion", "corrector": "langevin"}, lambda n: (n - 1) + n),
        ({"predictor": "ancestral_sampling", "corrector": "ald", "n_steps": 3},
         lambda n: (n - 1) + 3 * n),
        ({"predictor": "euler_maruyama", "corrector": "none"}, lambda n: n - 1),
        ({"predictor": "none", "corrector": "langevin", "n_steps": 2}, lambda n: 2 * n),
        ({"predictor": "reverse_diffusion", "corrector": "langevin", "n_steps": 0},
         lambda n: n - 1),
    ]
    + [({"sampler": "ode", "method": m}, lambda n, s=s: s * (n - 1)) for m, s in STAGES.items()],
)
def test_nfe_is_exact(kwargs, expected, denoise):
    n = 30
    sde = VPSDE(N=n)
    score = CountingScore(sde)
    result = sample(sde, score, (50, 2), num_steps=n, denoise=denoise, return_info=True,
                    generator=torch.Generator().manual_seed(0), **kwargs)
    assert result.nfe == len(score.times) == expected(n) + denoise


def test_nfe_of_adaptive_ode_counts_every_call():
    sde = VPSDE()
    score = CountingScore(sde)
    result = sample(sde, score, (50, 2), sampler="ode", return_info=True,
                    generator=torch.Generator().manual_seed(0))
    assert result.nfe == len(score.times) > 20


@pytest.mark.parametrize(
    "kwargs",
    [{"sampler": "em"}, {"sampler": "pc"}, {"predictor": "ancestral_sampling", "corrector": "ald"},
     {"sampler": "ode"}],
    ids=["em", "pc", "ancestral-ald", "ode"],
)
def test_same_generator_state_gives_same_samples(kwargs):
    sde = VESDE(N=20)

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return sample(sde, RING.score_fn(sde), (100, 2), generator=g, **kwargs)

    first, again, other = run(3), run(3), run(4)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


class RecordingSDE(SDE):
    """Delegates to another SDE, recording every t any of its methods sees."""

    def __init__(self, inner: SDE):
        super().__init__(inner.N)
        self.inner, self.sampling_eps, self.times = inner, inner.sampling_eps, []

    @property
    def T(self):
        return self.inner.T

    def _seen(self, t):
        self.times.append(t.clone())
        return t

    def sde(self, x, t):
        return self.inner.sde(x, self._seen(t))

    def marginal_prob(self, x, t):
        return self.inner.marginal_prob(x, self._seen(t))

    def discretize(self, x, t):
        return self.inner.discretize(x, self._seen(t))

    def ancestral_step(self, x, t, score):
        return self.inner.ancestral_step(x, self._seen(t), score)

    def prior_sampling(self, shape, generator=None, *, dtype=None, device=None):
        return self.inner.prior_sampling(shape, generator, dtype=dtype, device=device)

    def prior_logp(self, z):
        return self.inner.prior_logp(z)


@pytest.mark.parametrize("inner", [VPSDE(N=50), VESDE(N=50)], ids=["vp", "ve"])
@pytest.mark.parametrize(
    "kwargs",
    [{"sampler": "em"}, {"predictor": "reverse_diffusion", "corrector": "langevin"},
     {"predictor": "ancestral_sampling", "corrector": "ald"},
     {"predictor": "euler_maruyama", "corrector": "none"}]
    + [{"sampler": "ode", "method": m} for m in ("dopri5", "bosh3", "adaptive_heun", "rk4")],
    ids=lambda kw: "-".join(str(v) for v in kw.values()),
)
def test_no_time_outside_eps_T(inner, kwargs):
    # torchdiffeq's adaptive solvers step past the final time and probe far beyond it when
    # choosing their first step; a VP std at t < 0 is NaN. Nothing outside [eps, T] may leak.
    sde = RecordingSDE(inner)
    score = CountingScore(inner)
    eps = torch.tensor(sde.sampling_eps, dtype=torch.float32)  # eps as the float32 grid holds it
    x = sample(sde, score, (200, 2), generator=torch.Generator().manual_seed(0),
               trajectory_times=[0.5], **kwargs)
    assert torch.isfinite(x).all()
    for times in (score.times, sde.times):
        seen = torch.cat([t.flatten() for t in times])
        assert seen.min() >= eps and seen.max() <= sde.T


@pytest.mark.parametrize("sde", [VPSDE(N=30), VESDE(N=30)], ids=["vp", "ve"])
@pytest.mark.parametrize("predictor,corrector", PC)
def test_pc_loop_never_reads_tensors_on_the_host(sde, predictor, corrector, monkeypatch):
    # A read of a tensor's value on the host (bool, item, float, ...) would synchronise an
    # accelerator at every step. Inside the loop every such read raises.
    import scoresde.sampling.sampler as sampler_module

    def forbidden(*args, **kwargs):
        raise AssertionError("host read of a tensor inside the sampling loop")

    real_loop = sampler_module.pc_loop

    def guarded_loop(*args, **kwargs):
        with monkeypatch.context() as patch:
            for name in ("__bool__", "item", "tolist", "__float__", "__int__", "__index__"):
                patch.setattr(torch.Tensor, name, forbidden)
            return real_loop(*args, **kwargs)

    monkeypatch.setattr(sampler_module, "pc_loop", guarded_loop)
    x = sample(sde, RING.score_fn(sde), (16, 2), predictor=predictor, corrector=corrector)
    assert torch.isfinite(x).all()


# -- denoising, trajectories ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "sde,eps",
    [(VPSDE(N=10), None), (VESDE(N=10), 0.3), (SubVPSDE(N=10), 0.2), (TimeVaryingOU(N=10), 0.05)],
    ids=["vp", "ve", "subvp", "user"],
)
def test_denoising_is_the_posterior_mean(sde, eps):
    # Data N(m, diag(v)) and kernel N(alpha x0, sigma^2 I) give the closed form
    # E[x0 | x_t] = m + alpha v / (alpha^2 v + sigma^2) (x_t - alpha m), at any noise level (the
    # user's OU has sigma = 0.88 at t = 0.05).
    m = torch.tensor([1.0, -2.0], dtype=torch.float64)
    v = torch.tensor([0.3, 0.7], dtype=torch.float64)
    gauss = GaussianMixture([1.0], m[None], v[None])
    result = sample(sde, gauss.score_fn(sde), (100, 2), sampler="em", eps=eps, dtype=torch.float64,
                    trajectory_times=[eps or sde.sampling_eps], return_info=True,
                    generator=torch.Generator().manual_seed(0))
    (x_t,) = result.trajectory
    t = torch.full((1,), result.times[0].item(), dtype=torch.float64)
    alpha, sigma = sde.marginal_prob(torch.ones(1, 1, dtype=torch.float64), t)
    posterior_mean = m + alpha * v / (alpha**2 * v + sigma**2) * (x_t - alpha * m)
    torch.testing.assert_close(result.samples, posterior_mean, rtol=1e-10, atol=1e-10)


def test_pc_trajectory_at_nearest_grid_times():
    sde = VPSDE(N=101)  # grid 1.0, 0.99001, ..., 0.001 (step 0.00999)
    g = torch.Generator().manual_seed(0)
    prior = sde.prior_sampling((64, 2), torch.Generator().manual_seed(0))
    kwargs = dict(sampler="em", generator=g, return_info=True)
    result = sample(sde, RING.score_fn(sde), (64, 2), trajectory_times=[0.5, 1.0, 0.001, 0.502],
                    **kwargs)
    noisy = sample(sde, RING.score_fn(sde), (64, 2), sampler="em", denoise=False,
                   generator=torch.Generator().manual_seed(0))
    # 0.5 and 0.502 both snap to grid time 0.5005; kept once, in sampling order.
    torch.testing.assert_close(result.times, torch.tensor([1.0, 1 - 50 * 0.00999, 0.001]))
    assert result.trajectory.shape == (3, 64, 2)
    torch.testing.assert_close(result.trajectory[0], prior)  # em has no corrector at T
    torch.testing.assert_close(result.trajectory[-1], noisy)
    assert sample(sde, RING.score_fn(sde), (64, 2), return_info=True).trajectory is None


def test_ode_trajectory_carries_the_marginals():
    # The probability-flow ODE keeps the marginals p_t: the kept states at t = 0.5 and 0.2 match
    # p_t's entropy (estimated from 20k exact samples alpha x0 + sigma z) within Monte Carlo error
    # (3000 samples, std(log p_t) < 1.3: standard error 0.025) and dopri5's tolerance.
    sde = VPSDE()
    result = sample(sde, RING.score_fn(sde), (N_SAMPLES, 2), sampler="ode", return_info=True,
                    trajectory_times=torch.tensor([0.2, 0.5]),
                    generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(result.times, torch.tensor([0.5, 0.2], dtype=torch.float64))
    g = torch.Generator().manual_seed(1)
    for t, x_t in zip(result.times.tolist(), result.trajectory, strict=True):
        alpha, sigma = (c.item() for c in sde.marginal_prob(torch.ones(1, 1), torch.tensor([t])))
        exact = alpha * RING.sample(20_000, g) + sigma * torch.randn(20_000, 2, generator=g,
                                                                     dtype=torch.float64)
        entropy = float(-RING.log_prob(exact, t, sde).mean())
        assert abs(float(-RING.log_prob(x_t, t, sde).mean()) - entropy) < 0.1


# -- shapes, dtypes, autograd ---------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [{"sampler": "pc"}, {"sampler": "ode", "method": "rk4"}],
                         ids=["pc", "ode"])
def test_image_shaped_data_follow_the_same_path(kwargs):
    # The same generator draws the same numbers for (B, 1, 4, 4) as for (B, 16), and every
    # operation acts per sample, so the two runs agree to rounding.
    sde = VPSDE(N=20)
    mixture = GaussianMixture.ring(8, dim=16)
    flat, image = (
        sample(sde, mixture.score_fn(sde), shape, dtype=torch.float64,
               generator=torch.Generator().manual_seed(0), **kwargs)
        for shape in ((32, 16), (32, 1, 4, 4))
    )
    assert image.shape == (32, 1, 4, 4)
    torch.testing.assert_close(image.reshape(32, 16), flat, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_is_kept_and_results_are_plain_tensors(dtype, ring_entropy):
    sde = VPSDE(N=100)
    x = sample(sde, RING.score_fn(sde), (N_SAMPLES, 2), dtype=dtype,
               generator=torch.Generator().manual_seed(5))
    assert x.dtype == dtype and not x.is_inference()
    x.requires_grad_()  # usable with autograd (inference tensors are not)
    check_mixture(x.detach(), ring_entropy, GAP_TOL)


def test_score_that_needs_autograd():
    sde = VPSDE(N=20)

    def energy_gradient(x, t):
        with torch.enable_grad():
            x = x.detach().requires_grad_()
            return torch.autograd.grad(RING.log_prob(x, t, sde).sum(), x)[0]

    kwargs = dict(shape=(64, 2), dtype=torch.float64)
    x = sample(sde, energy_gradient, score_needs_grad=True,
               generator=torch.Generator().manual_seed(0), **kwargs)
    g = torch.Generator().manual_seed(0)
    reference = sample(sde, RING.score_fn(sde), generator=g, **kwargs)
    torch.testing.assert_close(x, reference, rtol=1e-9, atol=1e-9)
    with pytest.raises(RuntimeError):  # inference mode forbids it unless asked
        sample(sde, energy_gradient, **kwargs)


# -- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"sampler": "heun"}, "sampler must be one of 'em', 'ode', 'pc'; got 'heun'"),
        ({"predictor": "ddim"}, "predictor must be one of .*'reverse_diffusion'.*got 'ddim'"),
        ({"corrector": "mala"}, "corrector must be one of 'ald', 'langevin', 'none'; got 'mala'"),
        ({"method": "rk45"}, "method must be one of .*'dopri5'.*got 'rk45'"),
        ({"eps": 0.0}, r"eps must be a number in \(0, T\) = \(0, 1.0\), got 0.0"),
        ({"eps": -1e-3}, "eps must be a number in"),
        ({"eps": 1.0}, "eps must be a number in"),
        ({"eps": "1e-3"}, "eps must be a number in"),
        ({"eps": math.nan}, "eps must be a number in"),
        ({"num_steps": 0}, "num_steps must be an integer >= 2, got 0"),
        ({"num_steps": 1}, "num_steps must be an integer >= 2, got 1"),
        ({"num_steps": 10.0}, "num_steps must be an integer >= 2, got 10.0"),
        ({"snr": 0.0}, "snr must be a finite number > 0, got 0.0"),
        ({"snr": -0.1}, "snr must be a finite number > 0"),
        ({"snr": math.inf}, "snr must be a finite number > 0"),
        ({"n_steps": -1}, "n_steps must be an integer >= 0, got -1"),
        ({"n_steps": 1.5}, "n_steps must be an integer >= 0"),
        ({"rtol": 0}, "rtol must be a finite number > 0"),
        ({"atol": -1e-5}, "atol must be a finite number > 0"),
        ({"shape": ()}, "shape must be a non-empty sequence of positive ints"),
        ({"shape": (0, 2)}, "shape must be a non-empty sequence of positive ints"),
        ({"shape": (-4, 2)}, "shape must be a non-empty sequence of positive ints"),
        ({"shape": (4.0, 2)}, "shape must be a non-empty sequence of positive ints"),
        ({"shape": 4}, "shape must be a non-empty sequence of positive ints"),
        ({"trajectory_times": [1.5]}, r"trajectory_times must be numbers in \[eps, T\]"),
        ({"trajectory_times": [1e-4]}, r"trajectory_times must be numbers in \[eps, T\]"),
        ({"predictor": "none", "corrector": "none"}, "does nothing"),
        ({"num_steps": 5}, "predictor='reverse_diffusion' follows the SDE's 30-step discrete"),
        ({"predictor": "ancestral_sampling", "num_steps": 5}, "build the SDE with N=5"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    sde = VPSDE(N=30)
    kwargs = {"shape": (4, 2), **kwargs}
    with pytest.raises(ValueError, match=match):
        sample(sde, RING.score_fn(sde), **kwargs)


@pytest.mark.parametrize("predictor", ["reverse_diffusion", "ancestral_sampling"])
def test_degenerate_chain_raises(predictor):
    # DDPM with N = 10 steps has beta_i = beta(t) / 10 up to 2: its steps are not real numbers.
    sde = VPSDE(N=10)
    with pytest.raises(ValueError, match=r"discrete chain of VPSDE.*N=10.* is not finite at t=1"):
        sample(sde, RING.score_fn(sde), (4, 2), predictor=predictor)


@pytest.mark.parametrize("sampler", ["em", "pc", "ode"])
def test_score_of_the_wrong_shape_raises(sampler):
    sde = VPSDE(N=30)
    with pytest.raises(ValueError, match=r"score_fn must return a tensor of the input's shape "
                                         r"\(4, 2\), got \(4, 1\)"):
        sample(sde, lambda x, t: -x[:, :1], (4, 2), sampler=sampler)
