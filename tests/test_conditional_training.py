"""Training the networks of guidance against exact truth: label dropout, the conditional loss and
score, the noise-conditional classifier and its loss.

The labelled mixture oracle knows ``log p_t(y | x)``, ``grad log p_t(x | y)`` and
``grad log p_t(x)`` in closed form, so a short training run can be held to them: the trained
classifier's posterior must be close to the exact one in KL at every ``t``, classifier guidance
with it must sample the class as often as exact guidance does, and one conditional MLP trained
with label dropout must give both the conditional and the unconditional score. The formulas
themselves (the dropout rate and the null label, which labels reach the network, the perturbation
``alpha x_0 + sigma z``, the times, the cross-entropy and the importance weights) are pinned by
exact checks with instrumented networks.
"""

import math
import re
from pathlib import Path

import pytest
import torch
from scipy import stats

from scoresde import VESDE, VPSDE, GaussianMixture, get_cond_score_fn, get_score_fn, sample, train
from scoresde.datasets import LabelledBatch
from scoresde.guidance import classifier_free, classifier_guidance, drop_labels
from scoresde.losses import classifier_loss_fn, conditional_loss_fn, get_loss_fn
from scoresde.nets import (
    CLASSIFIERS,
    NULL_LABEL,
    MLPClassifier,
    MLPScoreNet,
    UNetClassifier,
    get_classifier,
)
from scoresde.score import PARAMETERIZATIONS

F64 = torch.float64
# The 8-Gaussians ring (radius 2, std 0.5: neighbours 3 std apart) with 4 classes, component k in
# class k mod 4: each class is two opposite components, and neighbouring classes overlap.
RING = GaussianMixture(
    torch.ones(8), GaussianMixture.ring(radius=2.0).means, 0.5**2, labels=[k % 4 for k in range(8)]
)
SDE = VPSDE()
TIMES = (0.01, 0.1, 0.3, 0.6, 1.0)


def ring_batches(batch_size: int):
    def sample_batch(generator: torch.Generator) -> LabelledBatch:
        x, y = RING.sample(batch_size, generator, return_labels=True)
        return LabelledBatch(x.float(), y)

    return sample_batch


def perturbed(mixture: GaussianMixture, t: float, n: int, seed: int, label: int | None = None):
    """``n`` draws of ``x_t`` (float64) from ``p_t`` (or ``p_t(. | label)``) at time ``t``."""
    g = torch.Generator().manual_seed(seed)
    x0 = (mixture if label is None else mixture.given_label(label)).sample(n, g)
    times = torch.full((n,), t, dtype=F64)
    alpha, sigma = SDE.kernel_coefficients(times)
    return alpha[:, None] * x0 + sigma[:, None] * torch.randn(x0.shape, generator=g, dtype=F64)


def class_fraction(x: torch.Tensor, label: torch.Tensor | int) -> float:
    """The fraction of points whose most probable class under ``p_0`` is their ``label``."""
    return float((RING.class_log_posterior(x.double()).argmax(1) == label).double().mean())


# -- label dropout ---------------------------------------------------------------------------------


def test_drop_labels_draws_the_null_label_at_the_stated_rate():
    y = torch.arange(200_000) % 4
    for p in (0.1, 0.5):
        dropped = drop_labels(y, p, torch.Generator().manual_seed(0))
        null = dropped == NULL_LABEL
        assert dropped.dtype == y.dtype and torch.equal(dropped[~null], y[~null])
        # Two-sided binomial test of the count (a rate of 1 - p, or a fixed fraction, fails).
        assert stats.binomtest(int(null.sum()), len(y), p).pvalue > 1e-4
        # Independent of the class: each class's rate within 5 binomial standard errors.
        se = math.sqrt(p * (1 - p) / (len(y) / 4))
        assert all(abs(float(null[y == c].double().mean()) - p) < 5 * se for c in range(4))
    assert torch.equal(drop_labels(y, 0.0, torch.Generator().manual_seed(0)), y)
    # The same generator state gives the same labels.
    a, b = (drop_labels(y[:50], 0.3, torch.Generator().manual_seed(7)) for _ in range(2))
    assert torch.equal(a, b)


P_UNCOND_RULE = r"p_uncond must be a number in \[0, 1\); got "


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, math.nan, True, "0.1", None])
def test_bad_dropout_rates_are_refused(p):
    with pytest.raises(ValueError, match="^" + P_UNCOND_RULE + f"{p!r}$".replace(".", r"\.")):
        drop_labels(torch.tensor([0, 1]), p)
    with pytest.raises(ValueError, match="^" + P_UNCOND_RULE):
        conditional_loss_fn(SDE, p_uncond=p)


@pytest.mark.parametrize(
    "y",
    [torch.tensor([0.0, 1.0]), torch.tensor([[0, 1]]), torch.tensor([0, -1]), [0, 1], 3],
    ids=["float", "2-d", "null-label", "list", "int"],
)
def test_bad_labels_to_drop_are_refused(y):
    with pytest.raises(ValueError, match="^y must be a 1-D integer tensor of labels >= 0; got "):
        drop_labels(y, 0.1)


# -- the conditional score and loss ----------------------------------------------------------------


def exact_targets(parameterization: str):
    """A "conditional network" whose output is the exact target of ``p_t(x | y)`` (``p_t(x)`` for
    no label), for ``input_scaling=False``: ``eps = -sigma s``, ``x0 = (x + sigma^2 s) / alpha``,
    ``v = alpha eps - sigma x0``."""

    def network(x, t, y):
        alpha, sigma = (c[:, None] for c in SDE.kernel_coefficients(t))
        if y is None:
            score = RING.score(x, t, SDE)
        else:
            score = torch.cat([RING.given_label(int(c)).score(x[i : i + 1], t[i : i + 1], SDE)
                               for i, c in enumerate(y)])  # fmt: skip
        eps, x0 = -sigma * score, (x + sigma**2 * score) / alpha
        return {"score": score, "epsilon": eps, "x0": x0, "v": alpha * eps - sigma * x0}[
            parameterization
        ]

    return network


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_conditional_score_passes_the_label_through_the_parameterisation(parameterization):
    x, t = perturbed(RING, 0.3, 16, seed=0), torch.linspace(0.05, 0.9, 16, dtype=F64)
    y = torch.arange(16) % 4
    cond = get_cond_score_fn(SDE, exact_targets(parameterization), parameterization,
                             input_scaling=False)  # fmt: skip
    expected = torch.cat([RING.given_label(int(c)).score(x[i : i + 1], t[i : i + 1], SDE)
                          for i, c in enumerate(y)])  # fmt: skip
    # Each parameterisation's inversion in float64: rounding only.
    torch.testing.assert_close(cond(x, t, y), expected, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(cond(x, t, None), RING.score(x, t, SDE), rtol=1e-9, atol=1e-9)


def test_conditional_score_with_input_scaling_is_get_score_fn_of_the_bound_network():
    net = MLPScoreNet(
        2, hidden=16, depth=1, num_classes=4, generator=torch.Generator().manual_seed(0)
    )
    torch.nn.init.normal_(net.output.weight, generator=torch.Generator().manual_seed(1))
    x, t, y = torch.randn(8, 2), torch.rand(8) * 0.9 + 0.05, torch.tensor([0, 1, 2, 3, -1, 0, 1, 2])
    for parameterization in PARAMETERIZATIONS:
        settings = {"input_scaling": True, "data_std": 2.0}
        cond = get_cond_score_fn(SDE, net, parameterization, **settings)
        bound = get_score_fn(SDE, lambda x_in, t: net(x_in, t, y), parameterization, **settings)
        torch.testing.assert_close(cond(x, t, y), bound(x, t), rtol=0, atol=0)


def test_conditional_loss_drops_labels_then_takes_the_score_loss():
    """The loss is ``get_loss_fn``'s loss of ``s(., ., drop_labels(y))``, the labels dropped with
    the generator's first draws: recomputed by hand from the same generator state, equal."""
    net = MLPScoreNet(
        2, hidden=16, depth=1, num_classes=4, generator=torch.Generator().manual_seed(0)
    )
    torch.nn.init.normal_(net.output.weight, generator=torch.Generator().manual_seed(1))
    seen = []

    def spy(x, t, y):
        seen.append(y)
        return net(x, t, y)

    batch = ring_batches(64)(torch.Generator().manual_seed(2))
    options = {"weighting": "likelihood", "eps": 1e-3}
    loss_fn = conditional_loss_fn(SDE, p_uncond=0.5, parameterization="x0", data_std=2.0, **options)
    loss = loss_fn(spy, batch, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    y = drop_labels(batch.y, 0.5, g)
    cond = get_cond_score_fn(SDE, net, "x0", data_std=2.0)
    expected = get_loss_fn(SDE, **options)(lambda x, t: cond(x, t, y), batch.x, g)
    assert torch.equal(seen[0], y) and 10 < int((y == NULL_LABEL).sum()) < 54
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)


def test_conditional_loss_refuses_unlabelled_batches_and_labels_out_of_range():
    net = MLPScoreNet(2, hidden=8, depth=1, num_classes=4)
    loss_fn = conditional_loss_fn(SDE, p_uncond=0.0)
    with pytest.raises(
        ValueError, match=r"^batch must be a LabelledBatch \(x, y\), .*; got 'Tensor'"
    ):
        loss_fn(net, torch.randn(2, 2), None)
    batch = LabelledBatch(torch.randn(3, 2), torch.tensor([0, 7, 1]))
    with pytest.raises(
        ValueError, match=r"^y must be labels in \[-1, 3\] \(-1: no label\); got 7$"
    ):
        loss_fn(net, batch, None)
    with pytest.raises(ValueError, match="^parameterization must be one of"):
        conditional_loss_fn(SDE, parameterization="eps")
    with pytest.raises(ValueError, match="takes options .* got unknown p"):
        conditional_loss_fn(SDE, p=0.1)


@pytest.fixture(scope="module")
def conditional_mlp():
    """A conditional MLP trained with label dropout 0.2 on the ring: 600 updates (~2.5 s)."""
    net = MLPScoreNet(
        2, hidden=64, depth=2, num_classes=4, generator=torch.Generator().manual_seed(0)
    )
    loss_fn = conditional_loss_fn(SDE, p_uncond=0.2, eps=1e-3, data_std=2.0)
    result = train(net, loss_fn, ring_batches(256), n_iters=600, lr=5e-3, seed=0, ema_decay=0.9,
                   progress=False)  # fmt: skip
    return get_cond_score_fn(SDE, result.ema_model, data_std=2.0)


def epsilon_error(score_fn, exact_fn, t: float, label: int | None, n: int = 2000) -> float:
    """``E sigma^2 |s - s_exact|^2`` over ``x_t ~ p_t(. | label)`` (``p_t`` for ``None``)."""
    x = perturbed(RING, t, n, seed=1, label=label)
    times = torch.full((n,), t, dtype=F64)
    sigma = SDE.kernel_coefficients(times)[1]
    with torch.no_grad():
        est = score_fn(x.float(), times.float()).double()
    return float(((est - exact_fn(x, times)) ** 2).sum(1).mul(sigma**2).mean())


def test_one_network_learns_the_conditional_and_the_unconditional_score(conditional_mlp):
    # Measured after 600 updates (mean over the 4 classes): conditional 0.062 at t = 0.1 and 0.039
    # at t = 0.3, unconditional 0.060 and 0.018. A network that ignores its label would have at
    # least the class score's share, E sigma^2 |grad log p_t(y | x)|^2 = 0.31 and 0.45, and
    # training without dropout leaves the null label's score wrong: 0.54 and 0.14.
    for t in (0.1, 0.3):
        conditional, ignoring = [], []
        for label in range(4):
            exact = RING.given_label(label).score_fn(SDE)
            cond = classifier_free(conditional_mlp, label, 0.0)  # w = 0: s(x, t, label)
            conditional.append(epsilon_error(cond, exact, t, label))
            ignoring.append(epsilon_error(RING.score_fn(SDE), exact, t, label))
        assert sum(conditional) / 4 < sum(ignoring) / 4 / 3, (t, conditional, ignoring)
        unconditional = epsilon_error(lambda x, s: conditional_mlp(x, s, None), RING.score_fn(SDE),
                                      t, None)  # fmt: skip
        assert unconditional < 0.1, (t, unconditional)


def test_classifier_free_guidance_with_the_trained_network(conditional_mlp):
    x, t = perturbed(RING, 0.2, 64, seed=4).float(), torch.full((64,), 0.2)
    with torch.no_grad():
        # w = 0 is the conditional score, w = -1 the unconditional one (y = None: the null label).
        label, null = torch.full((64,), 2), torch.full((64,), NULL_LABEL)
        torch.testing.assert_close(
            classifier_free(conditional_mlp, 2, 0.0)(x, t), conditional_mlp(x, t, label)
        )
        torch.testing.assert_close(
            classifier_free(conditional_mlp, 2, -1.0)(x, t), conditional_mlp(x, t, null)
        )
    # Conditional samples fall in their class far more often than unconditional ones. One run of
    # 2000 (500 per class, rk4, 20 steps) measured 0.76 (w = 0), 0.25 (w = -1) and 0.98 (w = 1);
    # exact samples of p(x | y) are in class 87% of the time, and a quarter of unconditional ones.
    labels = torch.arange(2000) // 500
    fractions = {}
    for w in (0.0, -1.0):
        guided = classifier_free(conditional_mlp, labels, w)
        x = sample(SDE, guided, (2000, 2), sampler="ode", method="rk4", num_steps=20,
                   generator=torch.Generator().manual_seed(0))  # fmt: skip
        fractions[w] = class_fraction(x, labels)
    assert fractions[0.0] > 0.6 and abs(fractions[-1.0] - 0.25) < 0.06, fractions


# -- the noise-conditional classifier and its loss -------------------------------------------------


class Recorder(torch.nn.Module):
    """Logits ``x @ A + b t`` with known values, recording what the loss feeds in."""

    def __init__(self, classes: int = 4):
        super().__init__()
        self.A = torch.nn.Parameter(torch.linspace(-1, 1, 2 * classes).reshape(2, classes))
        self.b = torch.linspace(0.5, -0.5, classes)
        self.seen = []

    def forward(self, x, t):
        self.seen.append((x, t))
        return x.flatten(1) @ self.A + t[:, None] * self.b


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=["vp", "ve"])
def test_classifier_loss_perturbs_with_the_kernel_and_averages_the_cross_entropy(sde):
    n, eps, point = 20_000, 1e-3, torch.tensor([1.5, -0.5])
    batch = LabelledBatch(point.expand(n, 2), torch.arange(n) % 4)
    model = Recorder()
    loss = classifier_loss_fn(sde, eps=eps)(model, batch, torch.Generator().manual_seed(0))
    ((x, t),) = model.seen
    # t ~ U(eps, T): Kolmogorov-Smirnov against the uniform.
    assert float(t.min()) >= eps and float(t.max()) <= sde.T
    assert stats.kstest(t.numpy(), "uniform", args=(eps, sde.T - eps)).pvalue > 1e-4
    # x_t = alpha x_0 + sigma z with z ~ N(0, I): the standardised residual's mean within 5
    # standard errors (0.007) of 0 and its variance within 5 (0.01) of 1.
    alpha, sigma = sde.kernel_coefficients(t)
    z = (x - alpha[:, None] * point) / sigma[:, None]
    assert z.mean(0).abs().max() < 5 / math.sqrt(n) and (z.var(0) - 1).abs().max() < 5 * 0.01
    # The loss is the batch mean of -log softmax(logits)[y], from exactly those inputs.
    log_p = torch.log_softmax(model(x, t), dim=1)
    expected = -log_p.gather(1, batch.y[:, None]).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)


def test_importance_sampled_classifier_loss_has_the_same_expectation():
    """With the exact classifier, the expected loss is the mean conditional entropy of the class
    given ``x_t`` over ``t ~ U(eps, T)``: uniform times and importance-sampled, reweighted times
    must agree (means over 20 batches of 4096). Without the weights the importance-sampled mean
    leans to small t, where the class is better known: measured 0.93, against 1.168 +- 0.002
    (uniform) and 1.169 +- 0.003 (reweighted)."""
    exact = RING.classifier_fn(SDE)
    means = {}
    for importance_sampling in (False, True):
        loss_fn = classifier_loss_fn(SDE, eps=1e-3, importance_sampling=importance_sampling)
        g = torch.Generator().manual_seed(0)
        values = torch.stack([
            loss_fn(exact, LabelledBatch(*RING.sample(4096, g, return_labels=True)), g)
            for _ in range(20)
        ])  # fmt: skip
        means[importance_sampling] = (float(values.mean()), float(values.std()) / math.sqrt(20))
    (uniform, se_u), (weighted, se_w) = means[False], means[True]
    assert abs(uniform - weighted) < 4 * math.hypot(se_u, se_w), means


@pytest.fixture(scope="module")
def trained_classifier():
    """An MLP classifier trained on the labelled ring for 400 updates of 512 (~3 s)."""
    net = MLPClassifier(2, 4, hidden=64, depth=2, generator=torch.Generator().manual_seed(0))
    result = train(net, classifier_loss_fn(SDE, eps=1e-3), ring_batches(512), n_iters=400,
                   lr=2e-3, seed=0, ema_decay=0.95, progress=False)  # fmt: skip
    return result.ema_model


def posterior_kl(classifier, mixture, t: float, reshape=lambda x: x, n: int = 4000):
    """``E_{x_t ~ p_t} KL(p_t(. | x_t) || softmax(classifier(x_t, t)))`` and the same for the
    prior ``p(y)`` in place of the classifier (the information the classifier must find)."""
    x = perturbed(mixture, t, n, seed=1)
    times = torch.full((n,), t, dtype=F64)
    exact = mixture.class_log_posterior(x, times, SDE)
    with torch.no_grad():
        est = torch.log_softmax(classifier(reshape(x.float()), times.float()).double(), dim=1)
    prior = mixture.class_weights.log().expand_as(exact)
    kl = lambda q: float((exact.exp() * (exact - q)).sum(1).mean())  # noqa: E731
    return kl(est), kl(prior)


def test_trained_classifier_approaches_the_exact_noisy_posterior(trained_classifier):
    # Measured KL (nats): 0.008, 0.015, 0.005, 0.001, 0.004 at t = 0.01, 0.1, 0.3, 0.6, 1; the
    # prior alone is 1.06, 0.89, 0.21, 0.001, 0. The bound 0.03 is twice the largest measured and
    # 30 times below what there is to learn at small t.
    for t in TIMES:
        kl, prior_kl = posterior_kl(trained_classifier, RING, t)
        assert kl < 0.03, (t, kl, prior_kl)


def test_classifier_guidance_with_the_trained_classifier_samples_the_class(trained_classifier):
    # Exact score, trained classifier, scale 1: the samples fall in their requested class as often
    # as exact samples of p(x | y) do (0.875, from 20,000 per class). One run of 2000 (500 per
    # class) measured 0.871 (0.875 with the exact classifier); unguided sampling gives 0.25 and
    # exact guidance at scale 2 gives 1.00.
    # 0.04 is 5 binomial standard errors (0.0075) and covers the classifier's own error (its
    # per-class fractions are within 0.03 of the exact classifier's).
    labels = torch.arange(2000) // 500
    exact = sum(class_fraction(RING.given_label(c).sample(20_000, torch.Generator().manual_seed(c)),
                               c) for c in range(4)) / 4  # fmt: skip
    guided = classifier_guidance(RING.score_fn(SDE), trained_classifier, labels, scale=1.0)
    x = sample(SDE, guided, (2000, 2), sampler="ode", method="rk4", num_steps=20,
               generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert abs(class_fraction(x, labels) - exact) < 0.04, (class_fraction(x, labels), exact)


def test_unet_classifier_learns_the_noisy_posterior_of_images():
    """A tiny U-Net classifier on a 16-D two-class mixture seen as 1x4x4 images, 120 updates:
    measured KL 0.001, 0.008, 0.055, 0.001 at t = 0.05, 0.2, 0.5, 0.8, against 0.69, 0.69, 0.25,
    0.006 for the prior. (With 8 channels its time embedding has 4 frequencies: the default scale
    16 leaves none low enough to tell t = 0.8 from t = 0.3, whence ``fourier_scale=1``.)"""
    g = torch.Generator().manual_seed(0)
    mixture = GaussianMixture(torch.ones(4), torch.randn(4, 16, generator=g, dtype=F64), 0.25,
                              labels=[0, 1, 0, 1])  # fmt: skip

    def batches(generator):
        x, y = mixture.sample(64, generator, return_labels=True)
        return LabelledBatch(x.float().reshape(-1, 1, 4, 4), y)

    net = UNetClassifier((1, 4, 4), 2, ch=8, ch_mult=(1, 2), num_res_blocks=1, dropout=0.0,
                         fourier_scale=1.0, generator=torch.Generator().manual_seed(0))  # fmt: skip
    result = train(net, classifier_loss_fn(SDE, eps=1e-3), batches, n_iters=120, lr=3e-3, seed=0,
                   ema_decay=0.9, progress=False)  # fmt: skip
    images = lambda x: x.reshape(-1, 1, 4, 4)  # noqa: E731
    measured = [posterior_kl(result.ema_model, mixture, t, images) for t in (0.05, 0.2, 0.5, 0.8)]
    kls, priors = (list(column) for column in zip(*measured, strict=True))
    assert sum(kls) < 0.15 * sum(priors) and max(kls) < 0.1, (kls, priors)


# -- the classifiers' shapes and refusals ----------------------------------------------------------


def test_classifiers_map_points_and_images_to_logits_and_start_uniform():
    g = torch.Generator().manual_seed(0)
    mlp = get_classifier("mlp", dim=4, num_classes=3, hidden=16, depth=1, generator=g)
    unet = get_classifier("unet", shape=(1, 9, 9), num_classes=3, ch=8, ch_mult=(1, 2),
                          num_res_blocks=1, generator=g)  # fmt: skip
    assert set(CLASSIFIERS) == {"mlp", "unet"}
    assert isinstance(mlp, MLPClassifier) and isinstance(unet, UNetClassifier)
    for net, x in ((mlp, torch.randn(5, 2, 2)), (unet, torch.randn(5, 1, 9, 9))):
        t = torch.rand(5)
        assert torch.equal(net(x, t), torch.zeros(5, 3))  # zero head: the uniform posterior
        with torch.no_grad():  # every zero-initialised layer random: the output sees everything
            for p in net.parameters():
                if not p.any():
                    p.copy_(0.1 * torch.randn(p.shape, generator=g))
        logits = net(x, t)
        assert logits.shape == (5, 3) and not torch.allclose(logits, net(x, t.flip(0)))
        logits.sum().backward()
        assert all(p.grad is not None for p in net.parameters())


def test_classifier_refusals():
    with pytest.raises(ValueError, match="^num_classes must be an integer >= 2; got 1$"):
        MLPClassifier(2, 1)
    with pytest.raises(ValueError, match="^num_classes must be an integer >= 2; got 1$"):
        UNetClassifier((1, 8, 8), 1)
    with pytest.raises(ValueError, match="^classifier must be one of 'mlp', 'unet'; got 'cnn'$"):
        get_classifier("cnn")
    loss_fn = classifier_loss_fn(SDE)
    x = torch.randn(3, 2)
    for y, bad in ((torch.tensor([0, 4, 1]), 4), (torch.tensor([0, -1, 1]), -1)):
        with pytest.raises(ValueError, match=rf"^labels must be classes of the classifier's 4, "
                                             rf"in \[0, 3\]; got {bad}$"):  # fmt: skip
            loss_fn(Recorder(), LabelledBatch(x, y), None)
    with pytest.raises(
        ValueError, match=r"^model\(x, t\) must be logits of shape \(3, C\); got \(3,\)"
    ):
        loss_fn(lambda x, t: t, LabelledBatch(x, torch.tensor([0, 1, 2])), None)
    with pytest.raises(ValueError, match="^batch must be a LabelledBatch"):
        loss_fn(Recorder(), x, None)
    with pytest.raises(ValueError, match=r"^eps must be a number in \(0, 1.0\); got 0"):
        classifier_loss_fn(SDE, eps=0)
    with pytest.raises(ValueError, match="^importance_sampling must be True or False; got 1$"):
        classifier_loss_fn(SDE, importance_sampling=1)


# -- the documented example ------------------------------------------------------------------------


def test_the_documented_training_example_runs(capsys):
    page = Path(__file__).resolve().parents[1] / "docs" / "guidance.md"
    text = page.read_text()
    (code,) = re.findall(r"```python training\n(.*?)```", text, re.S)
    exec(compile(code, str(page), "exec"), {})
    printed = [
        float(re.search(r": (\d\.\d+)", line)[1]) for line in capsys.readouterr().out.splitlines()
    ]
    # The page quotes what it printed: the KL, classifier guidance's fraction, then w = -1, 0, 1.
    quoted = re.search(
        r"It prints `KL at t = 0.1: (\S+) nats`.*?`classifier guidance: (\S+) in class 2`.*?"
        r"`(\S+)`, `(\S+)`, `(\S+)` in class 2 at `w = -1, 0, 1`",
        text,
        re.S,
    )
    # Equal on this machine (deterministic seeds); the tolerances allow for other float kernels.
    assert printed[0] == pytest.approx(float(quoted[1]), abs=0.005)
    assert printed[1:] == pytest.approx([float(v) for v in quoted.groups()[1:]], abs=0.03)
