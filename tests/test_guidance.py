"""Guided score functions against exact truth: the class-labelled Gaussian-mixture oracle.

The oracle knows the noisy class posterior ``p_t(y | x)`` and the class-conditional mixture
``p_t(x | y)`` in closed form, so Bayes' rule can be checked exactly: classifier guidance at scale 1
with the oracle's own classifier, added to its unconditional score, must be its conditional score
(pointwise, float64) and must sample the conditional mixture; classifier-free guidance at ``w = 0``
must be the conditional score, and at any ``w`` classifier guidance at ``1 + w``; larger scales
must concentrate the samples on the class. Hand-made classifiers and score functions pin the
formulas (log-softmax inside, the sign and size of each term, the guidance interval's ends).
"""

import math
import re
from pathlib import Path

import pytest
import torch
from user_sde import TimeVaryingOU

from scoresde import VESDE, VPSDE, GaussianMixture, LinearSDE, SubVPSDE, log_likelihood, sample
from scoresde.guidance import classifier_free, classifier_guidance, unconditional

F64 = torch.float64

# Four overlapping components on a circle of radius 1 (std 0.6), alternating between two classes:
# the classes overlap enough that guidance visibly sharpens them. Class 1 has prior 0.4.
ANGLES = torch.arange(4, dtype=F64) * math.pi / 2
MIXTURE = GaussianMixture(
    [0.3, 0.2, 0.3, 0.2], torch.stack([ANGLES.cos(), ANGLES.sin()], 1), 0.6**2, labels=[0, 1, 0, 1]
)
LABEL = 1
# A 3-D mixture with full covariances for the pointwise identities.
MIXTURE_3D = GaussianMixture(
    [0.5, 0.2, 0.3],
    [[0.0, 0.0, 0.0], [3.0, -1.0, 0.5], [-2.0, 2.5, -1.0]],
    [
        [[1.0, 0.6, 0.2], [0.6, 0.8, -0.1], [0.2, -0.1, 0.5]],
        [[0.3, -0.1, 0.05], [-0.1, 0.5, 0.2], [0.05, 0.2, 0.9]],
        [[2.0, 0.0, 0.3], [0.0, 0.2, 0.0], [0.3, 0.0, 0.4]],
    ],
    labels=[0, 1, 0],
)
SDES = {
    "vp": VPSDE(),
    "subvp": SubVPSDE(),
    "ve": VESDE(),
    "linear-fg": LinearSDE(
        lambda t: torch.full_like(t, -1.3), lambda t: torch.full_like(t, 0.9), initial_std=0.2
    ),
    "user-ou": TimeVaryingOU(),
}
N_SAMPLES = 2000


def points(n: int = 64, d: int = 3, seed: int = 0) -> torch.Tensor:
    return 2.5 * torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


def times(n: int = 64, seed: int = 0) -> torch.Tensor:
    return 0.02 + 0.96 * torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=F64)


def class_fraction(x: torch.Tensor, label: int = LABEL) -> float:
    """The fraction of points whose most probable class under ``p_0`` is ``label``."""
    return float((MIXTURE.class_log_posterior(x).argmax(1) == label).double().mean())


# The fraction of exact samples of p_0(x | y = 1) that p_0 assigns to class 1: 0.6994 (200k
# samples, seed 2; binomial standard error 0.001).
EXACT_FRACTION = 0.6994


# -- pointwise identities --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SDES)
def test_exact_classifier_guidance_is_the_conditional_score(kind):
    sde = SDES[kind]
    x, t = points(), times()
    score, classifier = MIXTURE_3D.score_fn(sde), MIXTURE_3D.classifier_fn(sde)
    per_sample = torch.arange(64) % 2
    with torch.no_grad():  # as inside scoresde.sample
        for label in (0, 1):
            guided = classifier_guidance(score, classifier, label)(x, t)
            # Autograd through the float64 posterior against the separate class mixture's closed
            # form: the same number by two routes, equal to rounding (~1e-14).
            exact = MIXTURE_3D.given_label(label).score(x, t, sde)
            torch.testing.assert_close(guided, exact, rtol=1e-9, atol=1e-10)
            assert not guided.requires_grad
        guided = classifier_guidance(score, classifier, per_sample)(x, t)
    for label in (0, 1):
        rows = per_sample == label
        exact = MIXTURE_3D.given_label(label).score(x[rows], t[rows], sde)
        torch.testing.assert_close(guided[rows], exact, rtol=1e-9, atol=1e-10)


def test_classifier_guidance_adds_scale_times_the_log_softmax_gradient():
    sde = VPSDE()
    x, t = points(), times()
    for scale in (0.0, 0.5, 3.0):
        guided = classifier_guidance(
            MIXTURE_3D.score_fn(sde), MIXTURE_3D.classifier_fn(sde), 1, scale
        )(x, t)
        expected = MIXTURE_3D.score(x, t, sde) + scale * MIXTURE_3D.class_score(x, 1, t, sde)
        torch.testing.assert_close(guided, expected, rtol=1e-9, atol=1e-10)
    # Unnormalised logits x A + b: grad log softmax_y = A[:, y] - sum_c softmax_c A[:, c], not
    # A[:, y] (the log-softmax is taken inside), and a zero score leaves that term alone.
    A = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.0, -1.0], [2.0, 1.0, 1.0]], dtype=F64)
    b = torch.tensor([0.2, -0.1, 3.0], dtype=F64)
    guided = classifier_guidance(lambda x, t: torch.zeros_like(x), lambda x, t: x @ A + b, 2, 1.5)
    expected = 1.5 * (A[:, 2] - torch.softmax(x @ A + b, dim=1) @ A.T)
    torch.testing.assert_close(guided(x, t), expected, rtol=1e-12, atol=1e-12)


def test_classifier_free_combines_the_two_terms():
    x, t = points(n=6, d=2), times(n=6)
    seen = []

    def cond_score_fn(x, t, y):
        seen.append(y)
        if y is None:
            return torch.full_like(x, -1.0)
        return (y.to(x.dtype) + 2.0)[:, None] * torch.ones_like(x)

    label = torch.tensor([0, 1, 2, 0, 1, 2])
    for w in (0.0, 2.0, -1.0):
        seen.clear()
        guided = classifier_free(cond_score_fn, label, w)(x, t)
        expected = (1 + w) * (label.to(F64) + 2.0)[:, None] - w * -1.0
        torch.testing.assert_close(guided, expected.expand(6, 2), rtol=0, atol=0)
        y, *rest = seen  # at w = 0 the unconditional term is not evaluated
        assert rest == ([] if w == 0 else [None])
        assert y.dtype == torch.int64 and torch.equal(y, label)
    guided = classifier_free(cond_score_fn, 1, 0.5)(x, t)  # an int: one label for the batch
    torch.testing.assert_close(guided, torch.full_like(x, 1.5 * 3.0 + 0.5))


@pytest.mark.parametrize("kind", ["vp", "ve", "user-ou"])
def test_classifier_free_is_classifier_guidance_at_one_plus_w(kind):
    sde = SDES[kind]
    x, t = points(seed=1), times(seed=1)
    cond_score_fn = MIXTURE_3D.cond_score_fn(sde)
    # w = 0 is the conditional score (score + class score vs the class mixture: rounding only).
    torch.testing.assert_close(
        classifier_free(cond_score_fn, 1, 0.0)(x, t),
        MIXTURE_3D.given_label(1).score(x, t, sde),
        rtol=1e-9,
        atol=1e-10,
    )
    for w in (0.0, 1.5, 4.0):
        cfg = classifier_free(cond_score_fn, 1, w)(x, t)
        cg = classifier_guidance(MIXTURE_3D.score_fn(sde), MIXTURE_3D.classifier_fn(sde), 1, 1 + w)
        torch.testing.assert_close(cfg, cg(x, t), rtol=1e-9, atol=1e-9)


def test_guidance_interval_guides_only_inside_and_skips_the_unconditional_term():
    calls = []

    def cond_score_fn(x, t, y):
        calls.append(y)
        return torch.full_like(x, -1.0) if y is None else torch.full_like(x, 2.0)

    guided = classifier_free(cond_score_fn, 0, 3.0, interval=(0.2, 0.6))
    x = torch.zeros(5, 2, dtype=F64)
    # (t_lo, t_hi]: t_lo itself is outside, t_hi inside.
    t = torch.tensor([0.1, 0.2, 0.2001, 0.6, 0.6001], dtype=F64)
    inside = torch.tensor([False, False, True, True, False])
    out = guided(x, t)
    guided_value = (1 + 3.0) * 2.0 - 3.0 * -1.0
    assert (out[inside] == guided_value).all() and (out[~inside] == 2.0).all()
    calls.clear()
    assert (guided(x, torch.full((5,), 0.9, dtype=F64)) == 2.0).all()
    assert len(calls) == 1 and calls[0] is not None  # no unconditional evaluation outside


# -- sampling --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def class_entropy() -> float:
    # 200k samples: standard error 0.002 nats, negligible against the tolerance below.
    entropy, _ = MIXTURE.given_label(LABEL).entropy(200_000, torch.Generator().manual_seed(0))
    return entropy


def test_exact_classifier_guidance_samples_the_conditional_mixture(class_entropy):
    sde = VPSDE()
    guided = classifier_guidance(MIXTURE.score_fn(sde), MIXTURE.classifier_fn(sde), LABEL)
    kwargs = {"sampler": "ode", "dtype": F64, "shape": (N_SAMPLES, 2)}
    x = sample(sde, guided, generator=torch.Generator().manual_seed(1), **kwargs)
    # The probability-flow ODE is deterministic given the prior draw: with the same draw, the
    # guided score and the exact conditional score give the same samples (dopri5 takes the same
    # steps; measured difference 2e-13).
    exact = sample(
        sde,
        MIXTURE.given_label(LABEL).score_fn(sde),
        generator=torch.Generator().manual_seed(1),
        **kwargs,
    )
    torch.testing.assert_close(x, exact, rtol=0, atol=1e-9)
    # And they are samples of p_0(x | y): the cross-entropy gap mean(-log p(x | y)) - H(p(. | y))
    # of dopri5 (rtol = atol = 1e-5) with an exact score is -0.001 +- 0.006 (10 seeds of 2000),
    # i.e. no bias; a run must be within 4 standard errors (std(log p) / sqrt(n) ~ 0.021) of 0.
    log_p = MIXTURE.given_label(LABEL).log_prob(x)
    gap, se = float(-log_p.mean()) - class_entropy, float(log_p.std()) / math.sqrt(N_SAMPLES)
    assert abs(gap) <= 4 * se, f"gap {gap:.4f} +- {se:.4f}"
    # The class is right as often as for exact samples of p(x | y): 4 binomial standard errors
    # (sqrt(0.7 * 0.3 / 2000) = 0.010). Unguided sampling gives 0.35, scale 0.5 about 0.55.
    fraction_se = math.sqrt(EXACT_FRACTION * (1 - EXACT_FRACTION) / N_SAMPLES)
    assert abs(class_fraction(x) - EXACT_FRACTION) <= 4 * fraction_se


def test_larger_scales_concentrate_the_class():
    # The same prior draw for every scale, rk4 with 20 steps: the fractions measured are 0.35,
    # 0.71, 0.91, 0.99 at scales 0, 1, 2, 4; each step up must gain more than 3 binomial standard
    # errors of one run (<= 0.011), far less than the gains seen (0.35, 0.20, 0.08).
    sde = VPSDE()
    fractions = []
    for scale in (0.0, 1.0, 2.0, 4.0):
        guided = classifier_guidance(
            MIXTURE.score_fn(sde), MIXTURE.classifier_fn(sde), LABEL, scale
        )
        x = sample(
            sde,
            guided,
            (N_SAMPLES, 2),
            sampler="ode",
            method="rk4",
            num_steps=20,
            dtype=F64,
            generator=torch.Generator().manual_seed(1),
        )
        fractions.append(class_fraction(x))
    gains = [b - a for a, b in zip(fractions[:-1], fractions[1:], strict=True)]
    assert all(gain >= 0.033 for gain in gains), fractions
    # Unguided: the class's own share of p_0's assignments, near its prior 0.4.
    assert abs(fractions[0] - 0.35) <= 0.05, fractions


def test_classifier_free_samples_equal_classifier_guided_samples():
    # CFG needs no gradient, so it runs under inference mode; at w = 1 it is guidance at scale 2.
    sde = VPSDE()
    kwargs = {"sampler": "ode", "method": "rk4", "num_steps": 20, "dtype": F64}
    cfg = classifier_free(MIXTURE.cond_score_fn(sde), LABEL, 1.0)
    cg = classifier_guidance(MIXTURE.score_fn(sde), MIXTURE.classifier_fn(sde), LABEL, 2.0)
    x = sample(sde, cfg, (500, 2), generator=torch.Generator().manual_seed(3), **kwargs)
    y = sample(
        sde,
        cg,
        (500, 2),
        generator=torch.Generator().manual_seed(3),
        **kwargs,
    )
    torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "kwargs",
    [{"sampler": "em"}, {"sampler": "pc"}, {"sampler": "ode", "method": "rk4", "num_steps": 20}],
    ids=["em", "pc", "ode"],
)
def test_guided_score_works_with_every_sampler_and_shape(kwargs):
    # Samples of shape (B, 2, 1): the oracle and the combinator flatten nothing themselves.
    # Class fractions at scale 1 (100 steps, seed 1): em 0.683, pc 0.694, ode 0.700, against
    # 0.699 exact; 0.05 is 5 binomial standard errors and covers the samplers' small bias.
    sde = VPSDE(N=100)
    guided = classifier_guidance(MIXTURE.score_fn(sde), MIXTURE.classifier_fn(sde), LABEL)
    x = sample(
        sde,
        guided,
        (N_SAMPLES, 2, 1),
        dtype=F64,
        generator=torch.Generator().manual_seed(1),
        **kwargs,
    )
    assert x.shape == (N_SAMPLES, 2, 1) and torch.isfinite(x).all()
    assert abs(class_fraction(x.flatten(1)) - EXACT_FRACTION) <= 0.05


def test_guided_score_is_differentiable_for_the_likelihood():
    # log_likelihood differentiates the score in x (exact trace): the classifier's gradient keeps
    # its graph there, and the guided model's density is the class mixture's. The two runs solve
    # the same ODE with scores equal to rounding: equal far below the solver's own error.
    sde = VPSDE()
    x = MIXTURE.given_label(LABEL).sample(64, torch.Generator().manual_seed(4))
    guided = classifier_guidance(MIXTURE.score_fn(sde), MIXTURE.classifier_fn(sde), LABEL)
    logp = log_likelihood(sde, guided, x)
    exact = log_likelihood(sde, MIXTURE.given_label(LABEL).score_fn(sde), x)
    torch.testing.assert_close(logp, exact, rtol=1e-7, atol=1e-7)


def test_the_documented_example_runs(capsys):
    page = Path(__file__).resolve().parents[1] / "docs" / "guidance.md"
    (code,) = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    namespace: dict = {}
    exec(compile(code, str(page), "exec"), namespace)
    assert namespace["x"].shape == namespace["x_cfg"].shape == (2000, 2)
    gap, fraction, fraction_cfg = capsys.readouterr().out.splitlines()
    # The numbers the page quotes (deterministic given the seeds).
    assert gap == "gap -0.009 nats" and fraction == "class 1: 0.71" and fraction_cfg == "0.91"


# -- bad input -------------------------------------------------------------------------------------

LABEL_RULE = "label must be an integer >= 0 or a 1-D integer tensor of labels >= 0; got "


@pytest.mark.parametrize(
    "label",
    [
        -1,
        1.0,
        True,
        "1",
        None,
        torch.tensor([0.0, 1.0]),
        torch.tensor([[0, 1]]),
        torch.tensor([0, -1]),
        torch.tensor(1),
        torch.tensor([], dtype=torch.int64),
    ],
    ids=[
        "negative",
        "float",
        "bool",
        "str",
        "none",
        "float-tensor",
        "2-d",
        "negative-entry",
        "0-d",
        "empty",
    ],
)
def test_bad_labels_are_refused_at_once(label):
    sde = VPSDE()
    with pytest.raises(ValueError, match="^" + LABEL_RULE):
        classifier_guidance(MIXTURE.score_fn(sde), MIXTURE.classifier_fn(sde), label)
    with pytest.raises(ValueError, match="^" + LABEL_RULE):
        classifier_free(MIXTURE.cond_score_fn(sde), label, 1.0)


@pytest.mark.parametrize("value", [math.nan, math.inf, "2", True, None])
def test_bad_scales_and_weights_are_refused(value):
    sde = VPSDE()
    with pytest.raises(ValueError, match=f"^scale must be a finite number; got {value!r}"):
        classifier_guidance(MIXTURE.score_fn(sde), MIXTURE.classifier_fn(sde), 0, value)
    with pytest.raises(ValueError, match=f"^w must be a finite number; got {value!r}"):
        classifier_free(MIXTURE.cond_score_fn(sde), 0, value)


@pytest.mark.parametrize(
    "interval",
    [
        (0.5, 0.2),
        (0.3, 0.3),
        (-0.1, 0.5),
        (0.1,),
        (0.1, 0.2, 0.3),
        "ab",
        (0.0, math.nan),
        (0.0, math.inf),
        (False, 0.5),
        0.5,
    ],
)
def test_bad_intervals_are_refused(interval):
    with pytest.raises(
        ValueError,
        match=r"^interval must be None or a pair \(t_lo, t_hi\) with "
        r"0 <= t_lo < t_hi; got ",
    ):
        classifier_free(MIXTURE.cond_score_fn(VPSDE()), 0, 1.0, interval=interval)


def test_bad_calls_raise():
    sde = VPSDE()
    x, t = points(n=4, d=2), times(n=4)
    score, classifier = MIXTURE.score_fn(sde), MIXTURE.classifier_fn(sde)
    with pytest.raises(
        ValueError,
        match=r"^label's shape must be \(4,\), one label per sample; "
        r"got \(3,\)",
    ):
        classifier_guidance(score, classifier, torch.tensor([0, 1, 1]))(x, t)
    with pytest.raises(ValueError, match=r"^label's shape must be \(4,\)"):
        classifier_free(MIXTURE.cond_score_fn(sde), torch.tensor([0, 1, 1]), 1.0)(x, t)
    with pytest.raises(
        ValueError,
        match=r"^label must be a class of the classifier's 2, < 2; "
        r"got 2",
    ):
        classifier_guidance(score, classifier, torch.tensor([0, 2, 1, 0]))(x, t)
    for bad in (lambda x, t: x.sum(1), lambda x, t: x[:2], lambda x, t: x[..., None]):
        with pytest.raises(
            ValueError,
            match=r"^classifier\(x, t\) must be logits of shape "
            r"\(4, C\); got ",
        ):
            classifier_guidance(score, bad, 0)(x, t)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="forbids: call it under"):
        classifier_guidance(score, classifier, 0)(x, t)


def test_unconditional_is_the_conditional_score_without_a_label():
    seen = []

    def cond(x, t, y):
        seen.append(y)
        return x * t[:, None] + (0.0 if y is None else 1.0)

    x, t = torch.randn(3, 2), torch.rand(3)
    torch.testing.assert_close(unconditional(cond)(x, t), x * t[:, None], rtol=0, atol=0)
    assert seen == [None]


def test_classifier_free_at_w_0_is_the_conditional_score_in_one_call():
    """At ``w = 0`` the unconditional term has no weight, so it is not evaluated (a sampler pays
    one network evaluation per step for the conditional law, not two)."""
    seen = []

    def cond(x, t, y):
        seen.append(y)
        return -x + (0.0 if y is None else y[:, None].to(x.dtype))

    x, t = torch.randn(4, 2), torch.rand(4)
    labels = torch.tensor([0, 1, 2, 3])
    torch.testing.assert_close(classifier_free(cond, labels, 0.0)(x, t), cond(x, t, labels))
    assert [y is None for y in seen] == [False, False]
    seen.clear()
    classifier_free(cond, labels, 1.0)(x, t)
    assert [y is None for y in seen] == [False, True]
