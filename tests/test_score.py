"""Parameterisations: every target, given its exact (oracle) value, gives back the exact score."""

import math

import pytest
import torch
from user_sde import TimeVaryingOU

from scoresde import VESDE, VPSDE, GaussianMixture, SubVPSDE
from scoresde.score import PARAMETERIZATIONS, get_score_fn

SDES = {
    "vp": VPSDE(),
    "vp-cosine": VPSDE(schedule="cosine"),
    "subvp": SubVPSDE(),
    "ve": VESDE(),
    "user": TimeVaryingOU(),
}


def _oracle_network(mixture: GaussianMixture, sde, parameterization: str, c_in):
    """A "network" whose output is the exact target, computed from the oracle's score.

    With ``x_t = alpha x_0 + sigma eps``: ``eps_hat = -sigma s``, Tweedie's
    ``x0_hat = (x + sigma^2 s) / alpha``, ``v_hat = alpha eps_hat - sigma x0_hat``. The network sees
    ``c_in(t) x`` and undoes it with the documented ``c_in``.
    """

    def network(x_in, t):
        alpha, sigma = _coefficients(sde, t)
        x = x_in / c_in(alpha, sigma)
        score = mixture.score(x, t, sde)
        eps_hat = -sigma * score
        x0_hat = (x + sigma**2 * score) / alpha
        return {
            "score": score,
            "epsilon": eps_hat,
            "x0": x0_hat,
            "v": alpha * eps_hat - sigma * x0_hat,
        }[parameterization]

    return network


def _coefficients(sde, t):
    """``alpha``, ``sigma`` as ``(B, 1)`` from the kernel applied to x0 = 1."""
    mean, std = sde.marginal_prob(torch.ones(len(t), 1, dtype=torch.float64), t)
    return mean, std[:, None]


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("input_scaling", [False, True])
def test_oracle_target_gives_the_oracle_score(parameterization, sde_name, input_scaling):
    sde = SDES[sde_name]
    mixture = GaussianMixture.ring(k=5, radius=3.0, std=0.4)
    gen = torch.Generator().manual_seed(0)
    t = 1e-3 + (sde.T - 1e-3) * torch.rand(256, generator=gen, dtype=torch.float64)
    alpha, sigma = _coefficients(sde, t)
    x = alpha * mixture.sample(256, gen) + sigma * torch.randn(
        256, 2, generator=gen, dtype=torch.float64
    )
    data_std = 2.0

    def c_in(a, s):
        return 1 / torch.sqrt(a**2 * data_std**2 + s**2) if input_scaling else torch.ones_like(a)

    network = _oracle_network(mixture, sde, parameterization, c_in)
    score_fn = get_score_fn(
        sde, network, parameterization, input_scaling=input_scaling, data_std=data_std
    )
    # float64 throughout: the inversions lose at most a few digits to 1/sigma^2 ~ 1e6 at small t.
    torch.testing.assert_close(score_fn(x, t), mixture.score(x, t, sde), rtol=1e-7, atol=1e-7)


def test_image_shaped_inputs():
    """A (B, 1, 2, 2) batch takes the same path: coefficients broadcast as (B, 1, 1, 1)."""
    sde = VPSDE()
    mixture = GaussianMixture.ring(k=4, radius=2.0, std=0.3, dim=4)
    gen = torch.Generator().manual_seed(1)
    t = 0.05 + 0.9 * torch.rand(32, generator=gen, dtype=torch.float64)
    x = torch.randn(32, 1, 2, 2, generator=gen, dtype=torch.float64)
    network = _oracle_network(mixture, sde, "v", lambda a, s: 1.0)
    score_fn = get_score_fn(
        sde, lambda x_in, t: network(x_in.flatten(1), t).reshape(x_in.shape), "v"
    )
    torch.testing.assert_close(score_fn(x, t), mixture.score(x, t, sde), rtol=1e-9, atol=1e-9)


def test_input_scaling_gives_unit_variance_inputs_under_ve():
    """Data of std 2 through VE (sigma up to 50): the network's inputs have std 1 at every t
    (20,000 points: standard error of a std estimate ~ 1/sqrt(2n) = 0.005, 5 SE allowed)."""
    sde = VESDE(sigma_min=0.01, sigma_max=50.0)
    seen = []

    def network(x_in, t):
        seen.append(x_in)
        return torch.zeros_like(x_in)

    score_fn = get_score_fn(sde, network, "epsilon", data_std=2.0)
    gen = torch.Generator().manual_seed(2)
    for time in (0.0, 0.3, 0.6, 1.0):
        t = torch.full((20_000,), time, dtype=torch.float64)
        x0 = 2.0 * torch.randn(20_000, 2, generator=gen, dtype=torch.float64)
        mean, std = sde.marginal_prob(x0, t)
        score_fn(
            mean + std[:, None] * torch.randn(20_000, 2, generator=gen, dtype=torch.float64), t
        )
        assert abs(seen[-1].std().item() - 1) < 5 / math.sqrt(2 * 40_000)
    unscaled = get_score_fn(sde, network, "epsilon", input_scaling=False)
    unscaled(torch.ones(3, 2), torch.full((3,), 0.5))
    assert torch.equal(seen[-1], torch.ones(3, 2))


def test_bad_arguments():
    with pytest.raises(
        ValueError, match="parameterization must be one of 'score', 'epsilon', 'x0', 'v'; got 'eps'"
    ):
        get_score_fn(VPSDE(), lambda x, t: x, "eps")
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="data_std must be a finite number > 0"):
            get_score_fn(VPSDE(), lambda x, t: x, data_std=bad)
