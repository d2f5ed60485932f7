"""The U-Net: shapes and padding, the blocks' formulas, conditioning with a null label, gradients,
determinism, refusals; and the MLP's optional label."""

import math

import pytest
import torch
import torch.nn.functional as F

from scoresde.nets import MLPScoreNet, UNet, get_model
from scoresde.nets.embeddings import LabelEmbedding
from scoresde.nets.unet import Attention, ResBlock, group_count

TINY = {"ch": 8, "ch_mult": (1, 2), "num_res_blocks": 1}


def net(shape=(1, 8, 8), seed=0, **kwargs):
    return UNet(shape, **{**TINY, **kwargs}, generator=torch.Generator().manual_seed(seed))


def randomise_zero_layers(model, seed=1):
    """Give the zero-initialised layers random weights, so the output depends on everything."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize(
    "shape, ch_mult, attn",
    [
        ((1, 8, 8), (1, 2, 2), (4,)),
        ((1, 28, 28), (1, 2, 2), (7,)),
        ((3, 32, 32), (1, 2, 2, 2), (16,)),
        ((1, 9, 9), (1, 2, 2), (3,)),  # padded to 12x12: levels at 12, 6, 3
        ((2, 5, 7), (1, 2), ()),  # padded to 6x8
    ],
)
def test_shapes_and_the_zero_function_at_initialisation(shape, ch_mult, attn):
    model = net(shape, ch_mult=ch_mult, attn_resolutions=attn)
    x, t = torch.randn(3, *shape), torch.rand(3)
    out = model(x, t)
    assert out.shape == x.shape and torch.equal(out, torch.zeros_like(x))
    assert model.resolutions[0] == math.ceil(shape[1] / 2 ** (len(ch_mult) - 1)) * 2 ** (
        len(ch_mult) - 1
    )
    out = randomise_zero_layers(model)(x, t)
    assert out.shape == x.shape and out.abs().min() > 0


def test_odd_sizes_are_the_zero_padded_image_cropped():
    """A 9x9 input is run as the 12x12 image padded with zeros at the bottom and right; a 12x12
    network with the same seed has the same weights (none depends on the image size)."""
    odd, even = net((1, 9, 9), ch_mult=(1, 2, 2)), net((1, 12, 12), ch_mult=(1, 2, 2))
    randomise_zero_layers(odd), randomise_zero_layers(even)
    assert all(torch.equal(a, b) for a, b in zip(odd.parameters(), even.parameters(), strict=True))
    x, t = torch.randn(2, 1, 9, 9), torch.rand(2)
    with torch.no_grad():
        odd.eval(), even.eval()  # no dropout
        torch.testing.assert_close(odd(x, t), even(F.pad(x, (0, 3, 0, 3)), t)[:, :, :9, :9])


def test_attention_sits_at_the_chosen_resolutions():
    model = net((1, 8, 8), ch_mult=(1, 2, 2), attn_resolutions=(4,), num_res_blocks=2)
    per_level = [[s.attention is not None for s in stages] for stages in model.down]
    assert per_level == [[False, False], [True, True], [False, False]]
    up = [[s.attention is not None for s in stages] for stages in model.up]  # deepest level first
    assert up == [[False] * 3, [True] * 3, [False] * 3]
    assert model.middle[0].attention is not None  # DDPM++: the middle always attends
    assert sum(isinstance(m, Attention) for m in model.modules()) == 2 + 3 + 1


def test_residual_block_formula_scale_shift_and_skip_rescaling():
    torch.manual_seed(0)
    block = randomise_zero_layers(ResBlock(8, 16, 12, 0.0, torch.Generator().manual_seed(2)))
    h, e = torch.randn(2, 8, 4, 4), torch.randn(2, 12)
    u = block.conv1(F.silu(block.norm1(h)))
    s, b = block.emb(F.silu(e)).chunk(2, dim=1)
    u = block.norm2(u) * (1 + s[:, :, None, None]) + b[:, :, None, None]
    expected = (block.skip(h) + block.conv2(F.silu(u))) / math.sqrt(2)
    torch.testing.assert_close(block(h, e), expected)
    # At initialisation the block is its skip path scaled by 1 / sqrt 2 (identity skip: h / sqrt 2).
    fresh = ResBlock(8, 8, 12, 0.0, None)
    torch.testing.assert_close(fresh(h, e), h / math.sqrt(2))  # to float32 rounding
    attn = Attention(8, None)
    torch.testing.assert_close(attn(h), h / math.sqrt(2))


def test_attention_formula():
    attn = randomise_zero_layers(Attention(8, torch.Generator().manual_seed(0)))
    h = torch.randn(2, 8, 3, 3)
    q, k, v = attn.qkv(attn.norm(h)).flatten(2).chunk(3, dim=1)  # (B, C, N) each
    weights = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(8), dim=-1)  # (B, N, N)
    out = (v @ weights.transpose(1, 2)).reshape(2, 8, 3, 3)
    torch.testing.assert_close(attn(h), (h + attn.proj(out)) / math.sqrt(2))


def test_group_count():
    assert [group_count(c) for c in (1, 3, 8, 16, 64, 96, 128, 200, 512)] == [
        1, 1, 2, 4, 16, 24, 32, 25, 32,
    ]  # fmt: skip


def test_class_conditioning_and_the_null_label():
    model = randomise_zero_layers(net(num_classes=10)).eval()
    x, t = torch.randn(4, 1, 8, 8), torch.rand(4)
    none = model(x, t)
    torch.testing.assert_close(model(x, t, torch.full((4,), -1)), none, rtol=0, atol=0)
    y = torch.tensor([0, 3, -1, 9])
    mixed = model(x, t, y)
    torch.testing.assert_close(mixed[2], none[2], rtol=0, atol=0)  # per-sample null label
    assert not torch.allclose(mixed[0], none[0]) and not torch.allclose(mixed[1], none[1])
    # The label only changes what the network is told: the same image at another label differs.
    assert not torch.allclose(model(x, t, torch.tensor([1, 3, -1, 9]))[0], mixed[0])
    torch.testing.assert_close(model(x, t, torch.tensor([1, 3, -1, 9]))[1:], mixed[1:])


def test_every_parameter_gets_a_gradient():
    model = randomise_zero_layers(net(num_classes=3, attn_resolutions=(4,)))
    x, t = torch.randn(4, 1, 8, 8), torch.rand(4)
    model(x, t, torch.tensor([0, 1, 2, -1])).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []
    # At initialisation only the output layer learns at first (the network is the zero function).
    fresh = net()
    fresh(x, t).sub(x).square().mean().backward()
    moving = {n for n, p in fresh.named_parameters() if p.grad is not None and p.grad.any()}
    assert moving == {"output.2.weight", "output.2.bias"}


def test_initialisation_is_a_function_of_the_generator():
    a, b, c = (net(seed=s, num_classes=4).state_dict() for s in (0, 0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["input.weight"], c["input.weight"])
    assert not torch.equal(a["embed.W"], c["embed.W"])
    assert not torch.equal(a["label.weight"], c["label.weight"])
    # Glorot-uniform bound sqrt(6 / (fan_in + fan_out)) on the input conv: 1 -> 8 channels, 3x3.
    assert a["input.weight"].abs().max() <= math.sqrt(6 / (9 + 72))
    assert a["input.weight"].abs().max() > 0.9 * math.sqrt(6 / (9 + 72))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"shape": (1, 8)}, r"shape must be \(C, H, W\), three integers >= 1; got \(1, 8\)"),
        ({"ch": 0}, "ch must be an integer >= 1; got 0"),
        ({"ch_mult": ()}, r"ch_mult must be a non-empty sequence of integers >= 1; got \(\)"),
        ({"ch_mult": (1, 0)}, "ch_mult must be a non-empty sequence"),
        ({"num_res_blocks": 0}, "num_res_blocks must be an integer >= 1; got 0"),
        ({"dropout": 1.0}, r"dropout must be a number in \[0, 1\); got 1.0"),
        ({"attn_resolutions": (16,)}, r"resolutions \(8, 4\); got \(16,\)"),
        (
            {"embedding": "learned"},
            "embedding must be one of 'fourier', 'sinusoidal'; got 'learned'",
        ),
        ({"num_classes": 0}, "num_classes must be an integer >= 1; got 0"),
    ],
)
def test_bad_arguments(kwargs, message):
    kwargs = {"shape": (1, 8, 8), **kwargs}
    with pytest.raises(ValueError, match=message):
        UNet(**{**TINY, **kwargs})


def test_bad_inputs():
    plain, labelled = net(), net(num_classes=10)
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    with pytest.raises(
        ValueError, match=r"expected x of shape \(B, 1, 8, 8\) .* got x \(2, 1, 8, 9\)"
    ):
        plain(torch.randn(2, 1, 8, 9), t)
    with pytest.raises(ValueError, match=r"and t \(3,\)"):
        plain(x, torch.rand(3))
    with pytest.raises(ValueError, match="y must be None for a network without labels"):
        plain(x, t, torch.tensor([0, 1]))
    with pytest.raises(
        ValueError, match=r"^y must be labels in \[-1, 9\] \(-1: no label\); got 10$"
    ):
        labelled(x, t, torch.tensor([3, 10]))
    with pytest.raises(
        ValueError, match=r"^y must be labels in \[-1, 9\] \(-1: no label\); got -2$"
    ):
        labelled(x, t, torch.tensor([-2, 0]))
    with pytest.raises(ValueError, match=r"y must be integer labels of shape \(2,\) or None"):
        labelled(x, t, torch.tensor([0.0, 1.0]))


def test_registry_builds_the_unet():
    model = get_model("unet", shape=(1, 8, 8), ch=8, ch_mult=(1,), num_res_blocks=1)
    assert isinstance(model, UNet) and model(torch.randn(2, 1, 8, 8), torch.rand(2)).shape == (
        2,
        1,
        8,
        8,
    )


# -- the MLP's label ------------------------------------------------------------------------------


def test_mlp_label_with_a_null_label():
    g = torch.Generator().manual_seed(0)
    mlp = randomise_zero_layers(MLPScoreNet(4, hidden=16, depth=1, num_classes=3, generator=g))
    x, t = torch.randn(3, 4), torch.rand(3)
    none = mlp(x, t)
    torch.testing.assert_close(mlp(x, t, torch.full((3,), -1)), none, rtol=0, atol=0)
    y = torch.tensor([0, 2, -1])
    out = mlp(x, t, y)
    assert not torch.allclose(out[:2], none[:2]) and torch.equal(out[2], none[2])
    # e = act(W_e2 act(W_e1 gamma(t)) + E[y]): the label vector enters before the last activation.
    e = mlp.time_out(mlp.act(mlp.time_in(mlp.embed(t)))) + mlp.label.weight[[0, 2, 3]]
    h = mlp.input(x)
    for block in mlp.blocks:
        h = block(h, mlp.act(e))
    torch.testing.assert_close(out, mlp.output(mlp.act(h)))
    with pytest.raises(ValueError, match="y must be None for a network without labels"):
        MLPScoreNet(4, hidden=8, depth=1)(x, t, y)
    # Without num_classes the MLP and its weights are what they were (checkpoints still load).
    plain = MLPScoreNet(4, hidden=8, depth=1, generator=torch.Generator().manual_seed(0))
    assert not any(k.startswith("label") for k in plain.state_dict())


def test_label_embedding_rows():
    emb = LabelEmbedding(3, 5, torch.Generator().manual_seed(0))
    assert emb.weight.shape == (4, 5)
    torch.testing.assert_close(emb(None, 2), emb.weight[[3, 3]])
    torch.testing.assert_close(emb(torch.tensor([2, -1, 0]), 3), emb.weight[[2, 3, 0]])


# -- the pieces fit: the training loop on digits ---------------------------------------------------


def test_the_unet_trains_on_digits_with_the_training_loop():
    """30 updates of a tiny conditional U-Net on digits through scoresde.train with
    conditional_loss_fn, labels dropped to -1 at rate 0.2 (classifier-free training): the epsilon
    loss starts at E|z|^2 = 1 (the zero network) and its last 10 average below 0.6 (measured:
    0.30), and the EMA network runs with and without a label."""
    from scoresde.datasets import load_dataset
    from scoresde.losses import conditional_loss_fn
    from scoresde.sde import VPSDE
    from scoresde.training import train

    sde, data = VPSDE(), load_dataset("digits")
    model = net(num_classes=10, dropout=0.0)
    loss_fn = conditional_loss_fn(sde, p_uncond=0.2, eps=1e-3)
    result = train(model, loss_fn, data.batches(32, labels=True), n_iters=30, lr=3e-3, seed=0,
                   ema_decay=0.9, progress=False)  # fmt: skip
    assert result.losses[0] == pytest.approx(1.0, abs=0.1)
    assert sum(result.losses[-10:]) / 10 < 0.6
    x, t = torch.randn(2, 1, 8, 8), torch.full((2,), 0.5)
    with torch.no_grad():
        assert result.ema_model(x, t, torch.tensor([3, -1])).shape == x.shape
