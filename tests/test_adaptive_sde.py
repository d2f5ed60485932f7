"""The adaptive reverse-SDE solver: every attempt re-derived from the paper's formulas, rejected
steps kept on their Brownian path (and the bridge's law), samples of the right distribution that
get better as the tolerances tighten, exact landing on grid times, no time outside [eps, T],
exact score-evaluation counts, per-sample reproducibility, float32, and every bad option."""

import itertools
import math

import pytest
import torch

import scoresde
from scoresde import VESDE, VPSDE, GaussianMixture, SubVPSDE
from scoresde.sampling.adaptive_sde import EXPONENT, SAFETY, BrownianStack

F64 = torch.float64
RING = GaussianMixture.ring()
RING_ENTROPY, RING_ENTROPY_SE = RING.entropy(200_000, torch.Generator().manual_seed(0))


class Recording:
    """A score function that records every call: its x, t and answer."""

    def __init__(self, score_fn):
        self.score_fn, self.calls = score_fn, []

    def __call__(self, x, t):
        score = self.score_fn(x, t)
        self.calls.append((x.clone(), t.clone(), score.clone()))
        return score


def gap(sde, n: int, seed: int, **options) -> tuple[float, float, int]:
    """The cross-entropy gap of n samples, its standard error and the number of evaluations."""
    result = scoresde.sample(
        sde,
        RING.score_fn(sde),
        (n, 2),
        sampler="adaptive_sde",
        dtype=F64,
        generator=torch.Generator().manual_seed(seed),
        return_info=True,
        **options,
    )
    logp = RING.log_prob(result.samples)
    se = math.hypot(float(logp.std()) / math.sqrt(n), RING_ENTROPY_SE)
    return float(-logp.mean()) - RING_ENTROPY, se, result.nfe


def test_every_attempt_follows_the_paper_and_keeps_its_brownian_path():
    """One sample on VP with the ring's score, re-derived attempt by attempt from the recorded
    evaluations (to 1e-9): the Euler proposal x' = x - h b(x, t) + g(t) dW gives dW; the improved
    Euler x'' = x + (k1 + k2) / 2 with the same dW; E = rms((x' - x'') / delta), delta = max(atol,
    rtol max(|x'|, |x'_prev|)); the next attempt starts from x'' at t - h if E <= 1 and from x at
    t otherwise, with the step min(0.9 h E^-0.9, t - eps), shortened to the next stored segment of
    the path. A retry over a rejected segment takes part of its increment: the accepted pieces
    that cover a rejected segment add up to its increment exactly, and no segment is left over."""
    sde = VPSDE()
    rtol, atol = 0.003, 0.003  # tight enough to reject about a third of the attempts
    score = Recording(RING.score_fn(sde))
    out = scoresde.sample(
        sde,
        score,
        (1, 2),
        sampler="adaptive_sde",
        rtol=rtol,
        atol=atol,
        dtype=F64,
        denoise=False,
        generator=torch.Generator().manual_seed(7),
    )
    end = sde.sampling_eps
    x_prev = score.calls[0][0]
    proposed = None
    pending: list[tuple[float, torch.Tensor]] = []  # the stored segments, nearest last
    rejections = 0
    state = None
    for (x, t, s1), (p, s, s2) in zip(score.calls[0::2], score.calls[1::2], strict=True):
        t, s = t.item(), s.item()
        if state is not None:  # the attempt starts where the last one left it
            torch.testing.assert_close(x, state[0], rtol=1e-12, atol=1e-12)
            assert t == pytest.approx(state[1], rel=1e-14)
        h = t - s
        if proposed is not None:
            limit = min(proposed, pending[-1][0]) if pending else proposed
            assert h == pytest.approx(limit, rel=1e-9)
        f1, g1 = sde.sde(x, torch.tensor([t], dtype=F64))
        f2, g2 = sde.sde(p, torch.tensor([s], dtype=F64))
        k1 = p - x
        dw = (k1 + h * (f1 - g1**2 * s1)) / g1
        k2 = -h * (f2 - g2**2 * s2) + g2 * dw
        improved = x + 0.5 * (k1 + k2)
        delta = (rtol * torch.maximum(p.abs(), x_prev.abs())).clamp(min=atol)
        error = ((p - improved) / delta).pow(2).mean().sqrt().item()
        if pending:  # the path's next stored segment: taken whole or split
            length, increment = pending.pop()
            if h < length * (1 - 1e-12):
                pending.append((length - h, increment - dw))
            else:
                torch.testing.assert_close(dw, increment, rtol=1e-9, atol=1e-12)
        if error <= 1:
            state, x_prev = (improved, s), p
        else:
            state = (x, t)
            pending.append((h, dw))
            rejections += 1
        proposed = min(SAFETY * h * error ** (-EXPONENT), state[1] - end)
    assert state[1] == end and not pending and rejections >= 3
    torch.testing.assert_close(out, state[0], rtol=1e-12, atol=1e-12)


def test_the_brownian_bridge_splits_a_segment_into_independent_increments():
    """A stored segment W ~ N(0, L I) split at u = 0.3 L: the part taken, dW, and the rest W - dW
    are independent with variances u and L - u (Brownian increments), measured on 200,000 draws
    to a standard error of 0.3% (tolerance 1.5%); a whole-segment step takes W itself."""
    n, length, u = 200_000, 0.5, 0.15
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(n, 1, dtype=F64)
    stack = BrownianStack(x)
    w = torch.randn(n, 1, generator=g, dtype=F64) * math.sqrt(length)
    stack.put_back(torch.ones(n, dtype=torch.bool), torch.full((n,), length, dtype=F64), w)
    step, dw = stack.take(torch.full((n,), u, dtype=F64), torch.randn(n, 1, generator=g, dtype=F64))
    assert bool((step == u).all())
    rest = w - dw
    assert dw.var().item() == pytest.approx(u, rel=0.015)
    assert rest.var().item() == pytest.approx(length - u, rel=0.015)
    assert abs(torch.corrcoef(torch.cat([dw, rest], 1).T)[0, 1].item()) < 0.01
    step, last = stack.take(torch.full((n,), 1.0, dtype=F64), torch.zeros(n, 1, dtype=F64))
    torch.testing.assert_close(step, torch.full((n,), length - u, dtype=F64))
    torch.testing.assert_close(last, rest, rtol=0, atol=1e-15)
    step, fresh = stack.take(torch.full((n,), 0.2, dtype=F64), torch.ones(n, 1, dtype=F64))
    torch.testing.assert_close(fresh, torch.full((n, 1), math.sqrt(0.2), dtype=F64))


# (SDE, tolerance, measured bias of the gap in nats: the mean over seeds 1-6 of 3000 samples)
DISTRIBUTION_CASES = {
    "vp": (VPSDE, 0.02, 0.001),
    "subvp": (SubVPSDE, 0.02, -0.001),
    "ve": (VESDE, 0.05, -0.029),
}


@pytest.mark.parametrize("kind", DISTRIBUTION_CASES)
def test_samples_have_the_data_distribution(kind):
    """With the exact score (rtol = atol = 0.02; 0.05 for VE, which needs twice the evaluations
    at equal tolerance), the cross-entropy gap is within 4 Monte-Carlo standard errors (0.07
    nats at 3000 samples) of its measured bias. Redrawing the noise of rejected steps, as the
    paper does, biases VP by +0.12 nats and fails."""
    make, tol, bias = DISTRIBUTION_CASES[kind]
    gap_, se, _ = gap(make(), 3000, seed=1, rtol=tol, atol=tol)
    assert abs(gap_ - bias) < 4 * se, (gap_, se)


def test_the_error_falls_as_the_tolerances_tighten():
    """VP at rtol = atol = 0.5, 0.2, 0.05: the gaps measure 1.6, 0.32 and 0.02 nats (each within
    0.07 at 2000 samples) with 51, 83 and 175 evaluations: each tighter tolerance costs more
    evaluations and lowers the gap by more than 4 standard errors."""
    sde = VPSDE()
    runs = [gap(sde, 2000, seed=2, rtol=tol, atol=tol) for tol in (0.5, 0.2, 0.05)]
    for (loose, se_loose, nfe_loose), (tight, se_tight, nfe_tight) in itertools.pairwise(runs):
        assert nfe_tight > nfe_loose
        assert loose - tight > 4 * math.hypot(se_loose, se_tight), runs


def test_it_lands_on_every_grid_time_and_evaluates_only_inside_eps_T():
    """On the grid [T, 0.6, 0.3, 0.05, eps] every attempt lies inside one grid interval for all
    samples, every sample stands exactly at each interior grid time before any goes on, and every
    evaluated time lies in [eps, T]. Evaluations: all recorded, an even number (2 per attempt),
    plus 1 for the denoising."""
    sde = VESDE()
    times = torch.tensor([1.0, 0.6, 0.3, 0.05, sde.sampling_eps], dtype=F64)
    score = Recording(RING.score_fn(sde))
    result = scoresde.sample(
        sde,
        score,
        (16, 2),
        sampler="adaptive_sde",
        times=times,
        rtol=0.05,
        atol=0.05,
        dtype=F64,
        generator=torch.Generator().manual_seed(3),
        return_info=True,
    )
    assert result.nfe == len(score.calls) and (result.nfe - 1) % 2 == 0
    seen = torch.stack([t for _, t, _ in score.calls])
    assert bool((seen >= times[-1]).all() & (seen <= times[0]).all())
    for (_, t, _), (_, s, _) in zip(score.calls[0:-1:2], score.calls[1::2], strict=True):
        i = int((times[1:] >= t.max()).sum())  # the interval [t_{i+1}, t_i] it starts in
        assert bool(((t <= times[i]) & (t >= times[i + 1]) & (s >= times[i + 1])).all())
    starts = [t for _, t, _ in score.calls[0:-1:2]]
    for grid_time in times[1:-1]:
        assert any(bool((t == grid_time).all()) for t in starts), grid_time.item()


def test_a_sample_does_not_depend_on_its_batch():
    """With one generator per sample, each sample's steps, noise and result are its own: samples
    drawn in a batch of 5 equal those drawn alone (to round-off, 1e-12)."""
    sde = SubVPSDE()
    seeds = range(10, 15)

    def draw(chosen):
        return scoresde.sample(
            sde,
            RING.score_fn(sde),
            (len(chosen), 2),
            sampler="adaptive_sde",
            rtol=0.02,
            atol=0.02,
            dtype=F64,
            generator=[torch.Generator().manual_seed(s) for s in chosen],
        )

    batch = draw(list(seeds))
    alone = torch.cat([draw([s]) for s in seeds])
    torch.testing.assert_close(batch, alone, rtol=1e-12, atol=1e-12)


def test_float32_samples_and_image_shapes():
    """float32 runs with float32 tolerances; the same numbers as (B, 16) and (B, 1, 4, 4) give
    the same samples (the error norm is over each sample's numbers, whatever their shape)."""
    sde = VPSDE()
    x = scoresde.sample(
        sde, RING.score_fn(sde), (256, 2), sampler="adaptive_sde", dtype=torch.float32
    )
    assert x.dtype == torch.float32 and bool(x.isfinite().all())
    mixture = GaussianMixture(torch.ones(2), torch.stack([torch.ones(16), -torch.ones(16)]), 0.25)
    flat, image = (
        scoresde.sample(
            sde,
            mixture.score_fn(sde),
            shape,
            sampler="adaptive_sde",
            rtol=0.05,
            atol=0.05,
            dtype=F64,
            generator=torch.Generator().manual_seed(0),
        )
        for shape in ((8, 16), (8, 1, 4, 4))
    )
    torch.testing.assert_close(image.reshape(8, 16), flat, rtol=1e-12, atol=1e-12)


def test_a_score_too_rough_for_the_tolerances_stops_with_a_clear_error():
    sde = VPSDE()

    def rough(x, t):
        return 1e20 * torch.sin(1e20 * x)

    with pytest.raises(ValueError, match="adaptive_sde's step size fell to .* below the resolu"):
        scoresde.sample(sde, rough, (4, 2), sampler="adaptive_sde", dtype=F64)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rtol": 0.0}, "rtol must be a finite number >= 1.19"),
        ({"atol": -1.0}, "atol must be a finite number >= 1.19"),
        ({"rtol": 1e-9}, "rtol must be a finite number >= 1.19"),  # below float32 resolution
        ({"h_init": 0.0}, "h_init must be a finite number > 0; got 0.0"),
        ({"num_steps": 10}, "num_steps is for fixed-step samplers"),
        ({"eta": 1.0}, "sampler 'adaptive_sde' does not use 'eta'"),
    ],
)
def test_bad_options_are_refused_by_name(options, message):
    sde = VPSDE()
    with pytest.raises(ValueError, match=message):
        scoresde.sample(sde, RING.score_fn(sde), (2, 2), sampler="adaptive_sde", **options)
