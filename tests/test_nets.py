"""Time embeddings, the MLP score network and the model registry."""

import math

import pytest
import torch
from torch import nn

from scoresde.nets import (
    MODELS,
    GaussianFourierEmbedding,
    MLPScoreNet,
    SinusoidalEmbedding,
    get_model,
    register_model,
)


def test_fourier_embedding_formula():
    emb = GaussianFourierEmbedding(16, scale=3.0, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.0, 0.25, 1.0])
    angle = 2 * math.pi * t[:, None] * emb.W
    torch.testing.assert_close(emb(t), torch.cat([angle.sin(), angle.cos()], 1))
    # sin^2 + cos^2 = 1 per frequency: every embedding has squared norm embed_dim / 2.
    torch.testing.assert_close(emb(t).pow(2).sum(1), torch.full((3,), 8.0))
    # W ~ N(0, scale^2) and is a buffer (saved, never trained).
    assert "W" in emb.state_dict() and not list(emb.parameters())
    many = GaussianFourierEmbedding(20_000, scale=3.0, generator=torch.Generator().manual_seed(1))
    assert abs(many.W.std().item() - 3.0) < 5 * 3.0 / math.sqrt(2 * 10_000)  # std of a std estimate


def test_sinusoidal_embedding_sees_integer_steps():
    """With time_scale = N - 1, t_i = i / (N - 1) is embedded as the integer step i (DDPM)."""
    N, dim = 1000, 32
    emb = SinusoidalEmbedding(dim, time_scale=N - 1)
    i = torch.tensor([0, 1, 17, 999])
    freqs = torch.exp(-math.log(10_000) * torch.arange(dim // 2) / (dim // 2))
    angle = i[:, None].double() * freqs.double()
    expected = torch.cat([angle.sin(), angle.cos()], 1).float()
    torch.testing.assert_close(
        emb(i / (N - 1)), expected, atol=1e-4, rtol=0
    )  # float32 angle up to 999
    assert torch.equal(emb(torch.zeros(1)), torch.cat([torch.zeros(1, 16), torch.ones(1, 16)], 1))


@pytest.mark.parametrize("embedding", ["fourier", "sinusoidal"])
def test_mlp_shapes_and_initial_zero_output(embedding):
    net = MLPScoreNet(4, hidden=32, depth=2, embedding=embedding, embed_dim=16)
    x, t = torch.randn(7, 1, 2, 2), torch.rand(7)  # (B, *D) with prod(D) = dim
    out = net(x, t)
    assert out.shape == x.shape
    assert torch.equal(out, torch.zeros_like(x))  # zero-initialised output layer
    with pytest.raises(ValueError, match="expected x of shape"):
        net(torch.randn(7, 3), t)
    with pytest.raises(ValueError, match="expected x of shape"):
        net(x, torch.rand(6))


def test_initialisation_is_a_function_of_the_generator():
    def build(seed):
        return MLPScoreNet(2, hidden=16, depth=2, generator=torch.Generator().manual_seed(seed))

    a, b, c = build(0).state_dict(), build(0).state_dict(), build(1).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["input.weight"], c["input.weight"])
    assert not torch.equal(a["embed.W"], c["embed.W"])


@pytest.mark.parametrize("embedding", ["fourier", "sinusoidal"])
def test_mlp_learns_a_time_dependent_target(embedding):
    """Regression on f(x, t) = x cos(6 t) + sin(3 t), t ~ U(0, 1): 300 Adam steps bring the MSE
    below 2% of the target's variance; blind to t, the best predictor E[f | x] leaves 99.6%."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    net = MLPScoreNet(
        2,
        hidden=64,
        depth=2,
        embedding=embedding,
        fourier_scale=2.0,
        time_scale=10.0,
        generator=gen,
    )
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)

    def target(x, t):
        return x * torch.cos(6 * t)[:, None] + torch.sin(3 * t)[:, None]

    for _ in range(300):
        x, t = torch.randn(256, 2, generator=gen), torch.rand(256, generator=gen)
        loss = (net(x, t) - target(x, t)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, t = torch.randn(4096, 2, generator=gen), torch.rand(4096, generator=gen)
    with torch.no_grad():
        mse = (net(x, t) - target(x, t)).pow(2).mean() / target(x, t).var()
    assert mse < 0.02


def test_registry():
    net = get_model("mlp", dim=3, hidden=8, depth=1)
    assert isinstance(net, MLPScoreNet) and net(torch.randn(2, 3), torch.rand(2)).shape == (2, 3)
    with pytest.raises(ValueError, match="model must be one of 'mlp', 'unet'; got 'resnet'"):
        get_model("resnet")
    with pytest.raises(ValueError, match="got unknown 'width'"):
        get_model("mlp", dim=2, width=3)
    with pytest.raises(ValueError, match="already registered"):
        register_model("mlp", MLPScoreNet)

    class Tiny(nn.Module):
        def __init__(self, dim: int):
            super().__init__()
            self.dim = dim

    register_model("tiny", Tiny)
    try:
        assert get_model("tiny", dim=5).dim == 5
    finally:
        del MODELS["tiny"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dim": 0}, "dim must be an integer >= 1"),
        ({"dim": 2, "hidden": 2.5}, "hidden must be an integer >= 1"),
        ({"dim": 2, "depth": 0}, "depth must be an integer >= 1"),
        (
            {"dim": 2, "embedding": "learned"},
            "embedding must be one of 'fourier', 'sinusoidal'; got 'learned'",
        ),
        ({"dim": 2, "embed_dim": 15}, "embed_dim must be an even integer >= 2"),
        ({"dim": 2, "fourier_scale": -1.0}, "scale must be a finite number > 0"),
        (
            {"dim": 2, "embedding": "sinusoidal", "time_scale": 0.0},
            "time_scale must be a finite number > 0",
        ),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MLPScoreNet(**kwargs)
