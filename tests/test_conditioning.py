"""Conditional generation from the config (scoresde.conditioning): labelled mixtures, the score a
run samples, masks, the class's own law, the measures against the oracle, and refusals.

The command line's one-line refusals of these settings run as processes in tests/test_cli.py
(BAD_INPUT); here they go through ``build`` and ``main`` in-process.
"""

import json
import math

import numpy as np
import pytest
import torch

from scoresde import inpainting, pipeline
from scoresde import run as cli
from scoresde.conditioning import (
    ClassSubset,
    _exact_measures,
    class_measures,
    inpaint_split,
    named_mask,
    target_of,
)
from scoresde.config import REPOSITORY_CONFIGS, ConfigError, load_config_file
from scoresde.datasets import ImageDataset, LabelledBatch
from scoresde.datasets.toy import MixtureDensity, get_dataset
from scoresde.nets import LabelEmbedding, MLPClassifier
from scoresde.score import get_cond_score_fn
from scoresde.sde import VPSDE

TINY = [
    "--config.training.n_iters=4",
    "--config.training.batch_size=16",
    "--config.training.checkpoint_every=2",
    "--config.model.hidden=8",
    "--config.model.depth=1",
    "--config.model.embed_dim=4",
    "--config.sampling.n_samples=12",
    "--config.sampling.num_steps=10",
    "--config.eval.n_eval=6",
    "--config.eval.density_grid=3",
    "--config.eval.rtol=1e-2",
    "--config.eval.atol=1e-2",
    "--config.eval.n_process_times=2",
]
CFG = ["--config.training.p_uncond=0.2", "--config.sampling.label=3"]


def _parts(*argv: str) -> pipeline.Parts:
    return pipeline.build(cli.resolve_config(*cli.parse_args([*TINY, *argv])))


# -- labelled mixtures --------------------------------------------------------------------------


def test_mixtures_are_labelled_by_component_with_the_same_points():
    data = get_dataset("8gaussians")
    assert isinstance(data, MixtureDensity) and data.num_classes == 8
    assert get_dataset("gmm").num_classes == 3 and get_dataset("checkerboard").num_classes is None
    plain = data.batches(4096)(torch.Generator().manual_seed(5))
    labelled = data.batches(4096, labels=True)(torch.Generator().manual_seed(5))
    assert isinstance(labelled, LabelledBatch) and torch.equal(plain, labelled.x)
    assert torch.equal(plain, data.sample(4096, torch.Generator().manual_seed(5)))
    # The label is the component that drew the point: on this ring (means 2.83 apart, std 0.35)
    # the nearest component is it for all but about 1e-4 of the points.
    nearest = data.mixture.responsibilities(labelled.x.double()).argmax(1)
    assert float((nearest == labelled.y).double().mean()) > 0.995
    split = data.split("test", 100, torch.Generator().manual_seed(1))
    assert split.y.shape == (100,) and split.y.dtype == torch.int64
    with pytest.raises(ValueError, match="labels must be False"):
        get_dataset("moons").batches(4, labels=True)


def test_the_class_target_is_the_exact_conditional_or_the_class_rows():
    data = get_dataset("gmm")
    target = target_of(data, 1)
    assert target.name == "gmm|y=1" and target.mixture.num_components == 1
    x = target.sample(5, torch.Generator().manual_seed(0)).double()
    # log p(x | y) = log p(x) + log p(y | x) - log p(y)
    joint = data.mixture.log_prob(x) + data.mixture.class_log_posterior(x)[:, 1]
    assert torch.allclose(target.log_prob(x), joint - math.log(0.3), atol=1e-9)

    levels = torch.arange(6 * 4).reshape(6, 1, 2, 2) % 17
    images = ImageDataset(
        "tiny",
        levels,
        levels.flip(0),
        num_levels=17,
        train_labels=torch.tensor([0, 1, 0, 2, 1, 0]),
        test_labels=torch.tensor([1, 1, 0, 2, 2, 0]),
    )
    subset = target_of(images, 1)
    assert isinstance(subset, ClassSubset) and subset.shape == (1, 2, 2)
    assert subset.num_classes is None and subset.data_range == images.data_range
    test = subset.split("test")
    assert torch.equal(test.x, images.split("test").x[:2]) and test.y is None
    assert torch.equal(test.levels, levels.flip(0)[:2])
    assert subset.split("train", 1, torch.Generator().manual_seed(0)).x.shape == (1, 1, 2, 2)
    assert subset.batches(2)(torch.Generator().manual_seed(0)).shape == (2, 1, 2, 2)


# -- the score a run samples --------------------------------------------------------------------


def _stub(x_in, t, y=None):
    """A conditional network whose outputs differ per label (and for no label)."""
    factor = torch.ones(x_in.shape[0]) if y is None else y.float() + 2
    return x_in * factor[:, None]


def _scores(parts, x, t):
    """The stub's conditional score at label 3 and unconditional score, by the library."""
    m = parts.config.model
    cond = get_cond_score_fn(parts.sde, _stub, m.parameterization, data_std=parts.data_std)
    return cond(x, t, torch.full((x.shape[0],), 3)), cond(x, t, None)


def test_the_run_samples_the_conditional_score_and_guides_on_the_gamma_scale():
    x, t = torch.randn(5, 2, generator=torch.Generator().manual_seed(0)), torch.full((5,), 0.3)
    conditional = _parts(*CFG)
    s_c, s_u = _scores(conditional, x, t)
    assert not torch.allclose(s_c, s_u)
    assert torch.allclose(conditional.score_fn(_stub)(x, t), s_c)  # a label: s(x, t, y)
    cfg = _parts(*CFG, "--config.sampling.guidance=cfg", "--config.sampling.guidance_scale=2.5")
    assert torch.allclose(cfg.score_fn(_stub)(x, t), 2.5 * s_c - 1.5 * s_u, atol=1e-5)
    unlabelled = _parts("--config.training.p_uncond=0.2")
    assert torch.allclose(unlabelled.score_fn(_stub)(x, t), s_u)  # the null label


def test_classifier_guidance_adds_gamma_times_the_classifiers_gradient():
    parts = _parts("--config.sampling.label=3", "--config.sampling.guidance=classifier")
    assert isinstance(parts.classifier, MLPClassifier) and parts.classifier.num_classes == 8
    assert parts.model.label is None  # the score network itself takes no label
    guided = _parts(
        "--config.sampling.label=3",
        "--config.sampling.guidance=classifier",
        "--config.sampling.guidance_scale=3",
    )
    W = torch.randn(2, 8, generator=torch.Generator().manual_seed(2))

    def classifier(x, t):
        return x @ W

    def model(x_in, t):
        return _stub(x_in, t)

    x, t = torch.randn(5, 2, generator=torch.Generator().manual_seed(0)), torch.full((5,), 0.3)
    s_u = _scores(parts, x, t)[1]
    grad = W[:, 3] - torch.softmax(x @ W, 1) @ W.T  # grad_x log softmax(x W)_3
    assert torch.allclose(guided.score_fn(model, classifier)(x, t), s_u + 3 * grad, atol=1e-5)
    assert torch.allclose(parts.score_fn(model, classifier)(x, t), s_u + grad, atol=1e-5)


def test_a_conditional_run_builds_a_labelled_network_and_loss():
    parts = _parts(*CFG)
    assert isinstance(parts.model.label, LabelEmbedding) and parts.model.label.num_classes == 8
    batch = parts.dataset.batches(16, labels=True)(torch.Generator().manual_seed(0))
    assert torch.isfinite(parts.loss_fn(parts.model, batch, torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match="LabelledBatch"):
        parts.loss_fn(parts.model, batch.x, torch.Generator())
    default = _parts()
    assert default.model.label is None and default.classifier is None
    assert default.conditioning.target is default.dataset


# -- masks --------------------------------------------------------------------------------------


def test_named_masks_hide_the_named_region_on_any_shape():
    assert named_mask("left_half", (2,)).tolist() == [False, True]  # x inpainted, y known
    assert named_mask("lower_half", (2,)).tolist() == [True, False]
    image = named_mask("lower_half", (3, 5, 4))
    assert image[:, :2].all() and not image[:, 2:].any()  # rows 2, 3, 4 of 5 inpainted
    image = named_mask("left_half", (1, 4, 5))
    assert not image[..., :2].any() and image[..., 2:].all()
    random = named_mask("random:0.3", (1, 4, 5), torch.Generator().manual_seed(0))
    assert int((~random).sum()) == 6  # round(0.3 * 20) entries, drawn from the generator
    again = named_mask("random:0.3", (1, 4, 5), torch.Generator().manual_seed(0))
    assert torch.equal(random, again)
    assert int((~named_mask("random:0.01", (2,))).sum()) == 1  # never nothing to inpaint
    assert int((~named_mask("random:0.99", (2,))).sum()) == 1  # never nothing known


@pytest.mark.parametrize(
    "spec, shape, expected",
    [
        ("upper_half", (2,), "must be 'none', 'lower_half', 'left_half', 'random:P'"),
        ("random:0", (2,), "'random:P' with 0 < P < 1; got 'random:0'"),
        ("random:1.5", (2,), "'random:P' with 0 < P < 1; got 'random:1.5'"),
        ("random:half", (2,), "got 'random:half'"),
        ("left_half", (1,), "leaves nothing to inpaint"),
    ],
)
def test_bad_named_masks_are_refused(spec, shape, expected):
    with pytest.raises(ConfigError, match="config.sampling.inpaint") as err:
        named_mask(spec, shape)
    assert expected in str(err.value)


def test_mask_files_are_the_libraries_masks_checked(tmp_path):
    path = tmp_path / "mask.npy"
    np.save(path, np.array([True, False]))
    assert named_mask(str(path), (2,)).tolist() == [True, False]  # True where known
    cases = {
        "shape.npy": (np.ones((1, 2, 2), bool), "boolean array of the samples' shape (2,)"),
        "float.npy": (np.ones(2), "got 'float64 of shape (2,)'"),
        "all.npy": (np.ones(2, bool), "it is all True"),
    }
    for name, (array, expected) in cases.items():
        np.save(tmp_path / name, array)
        with pytest.raises(ConfigError, match="config.sampling.inpaint") as err:
            named_mask(str(tmp_path / name), (2,))
        assert expected in str(err.value)
    (tmp_path / "garbage.npy").write_bytes(b"not an array")
    with pytest.raises(ConfigError, match="cannot read"):
        named_mask(str(tmp_path / "garbage.npy"), (2,))


# -- measures against the oracle ----------------------------------------------------------------


def test_exact_measures_of_inpainting_are_zero_gap_for_exact_draws():
    mixture = get_dataset("8gaussians").mixture
    truth = mixture.sample(800, torch.Generator().manual_seed(0))
    mask = torch.tensor([True, False])  # y inpainted given x: a 1-D mixture of up to 3 modes
    g = torch.Generator().manual_seed(1)
    exact = truth.clone()
    for b in range(len(truth)):
        exact[b, 1] = mixture.condition(truth[b], mask).sample(1, g)[0, 0]
    measured = _exact_measures(mixture, truth, exact, mask)
    # Exact draws: as far from the conditional mean as the law's own spread (2 standard errors of
    # a mean square over 800 draws: about 5 %), and a cross-entropy gap of 0 (its std / sqrt(800)
    # is about 0.05 nats).
    assert measured["rmse_to_exact_mean"] == pytest.approx(measured["exact_rmse_to_mean"], rel=0.06)
    assert abs(measured["nll_gap"]) < 0.12
    itself = _exact_measures(mixture, truth, truth, mask)
    assert itself["nll_gap"] == 0
    assert itself["rmse_to_exact_mean"] == pytest.approx(itself["exact_mean_rmse_to_truth"])
    # Draws of y from its marginal ignore x: as spread, but in the wrong places.
    off = truth.clone()
    off[:, 1] = mixture.sample(800, g)[:, 1]
    assert _exact_measures(mixture, truth, off, mask)["nll_gap"] > 1


@pytest.mark.parametrize("method", ["smc", "replacement"])
def test_inpainting_test_data_with_the_exact_score(method):
    data = get_dataset("8gaussians")
    argv = ["--config.sampling.inpaint=left_half", f"--config.sampling.inpaint_method={method}"]
    conditioning = _parts(*argv, "--config.sampling.particles=8").conditioning
    sde = VPSDE()
    truth = data.split("test", 120, torch.Generator().manual_seed(0)).x.double()
    samples, section = inpaint_split(
        conditioning,
        sde,
        data.mixture.score_fn(sde),
        truth,
        torch.Generator().manual_seed(1),
        {"sampler": "pc", "num_steps": 40, "predictor": "euler_maruyama", "corrector": "none"},
    )
    assert torch.equal(samples[:, 1], truth[:, 1])  # the known y
    assert section["method"] == method and section["known_fraction"] == 0.5
    # x given y on the ring: up to two modes. Measured: SMC's NLL gap to the exact conditional
    # -0.11 nats (0.05 with 200 points and 16 particles; its standard error is about 0.1 here),
    # replacement's 0.75 (0.68 to 0.77 over seeds and sizes): its bias, which more steps keep.
    if method == "smc":
        assert abs(section["nll_gap"]) < 0.35
        assert section["rmse_to_exact_mean"] == pytest.approx(
            section["exact_rmse_to_mean"], rel=0.1
        )
    else:
        assert section["nll_gap"] > 0.45


def test_class_measures_count_samples_in_the_requested_class():
    parts = _parts(*CFG)
    target = parts.conditioning.target
    g = torch.Generator().manual_seed(0)
    exact = class_measures(parts.conditioning, parts.dataset, target.sample(2000, g), g)
    assert exact["fraction_in_class"] == pytest.approx(exact["fraction_in_class_exact"], abs=0.01)
    assert exact["fraction_in_class"] > 0.99
    everything = class_measures(parts.conditioning, parts.dataset, parts.dataset.sample(2000, g), g)
    assert everything["fraction_in_class"] == pytest.approx(1 / 8, abs=0.03)  # 3 std
    assert class_measures(_parts().conditioning, parts.dataset, target.sample(5, g), g) == {}


# -- refusals before any work -------------------------------------------------------------------

BAD = [
    (["--config.sampling.label=8"], "config.sampling.label must be None or a class of dataset"),
    (["--config.sampling.label=-1"], "config.sampling.label must be None or an integer >= 0"),
    (
        ["--dataset", "checkerboard", "--config.sampling.label=0"],
        "config.sampling.label must be None for dataset 'checkerboard', which has no labels",
    ),
    (
        ["--dataset", "moons", "--config.training.p_uncond=0.1"],
        "config.training.p_uncond must be 0 for dataset 'moons'",
    ),
    (["--config.training.p_uncond=1"], "config.training.p_uncond must be a number in [0, 1)"),
    (["--config.sampling.label=2"], "a label needs a conditional network"),
    (["--config.sampling.guidance=cfg"], "guidance = 'cfg' needs a class"),
    (
        ["--config.sampling.guidance=cfg", "--config.sampling.label=2"],
        "guidance 'cfg' needs a conditional network (training.p_uncond > 0",
    ),
    (["--config.sampling.guidance=classifier"], "needs a class: set sampling.label"),
    (["--config.sampling.guidance=free"], "config.sampling.guidance must be one of 'none'"),
    (
        [*CFG, "--config.sampling.guidance=cfg", "--config.sampling.guidance_scale=-1"],
        "config.sampling.guidance_scale must be a number in [0, 1000]",
    ),
    (
        [*CFG, "--config.sampling.guidance=cfg", "--config.sampling.guidance_scale=nan"],
        "config.sampling.guidance_scale must be a number in [0, 1000]; got nan",
    ),
    (["--config.sampling.guidance_scale=2"], "guidance_scale must be 1 without guidance"),
    (["--config.sampling.inpaint=top"], "config.sampling.inpaint must be 'none', 'lower_half'"),
    (["--config.sampling.inpaint=random:2"], "'random:P' with 0 < P < 1; got 'random:2'"),
    (["--config.sampling.inpaint=missing.npy"], "cannot read 'missing.npy'"),
    (["--config.sampling.particles=0"], "config.sampling.particles must be an integer in"),
    (
        ["--config.sampling.inpaint=left_half", "--config.sampling.twist=True"],
        "config.sampling.twist must be False unless sampling.inpaint_method is 'smc'",
    ),
    (
        ["--config.sampling.inpaint_method=smc", "--config.sampling.twist=True"],
        "config.sampling.twist must be False unless sampling.inpaint_method is 'smc'",
    ),
    (
        ["--config.sampling.inpaint=left_half", "--config.sampling.inpaint_method=mcmc"],
        "config.sampling.inpaint_method must be one of 'replacement', 'smc'",
    ),
]


@pytest.mark.parametrize("argv, expected", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_conditioning_is_one_line_before_any_work(tmp_path, capsys, argv, expected):
    with pytest.raises(ConfigError) as err:
        _parts(*argv)
    assert expected in str(err.value) and "\n" not in str(err.value)
    status = cli.main([*TINY, *argv, "--workdir", str(tmp_path / "run")])
    out, errors = capsys.readouterr()
    assert status == 2 and out == "" and errors == f"scoresde: error: {err.value}\n"
    assert not (tmp_path / "run").exists()


# -- runs ---------------------------------------------------------------------------------------


def _recording(function, calls):
    """``function``, recording the keyword arguments of every call in ``calls``."""

    def recorded(*args, **kwargs):
        calls.append(kwargs)
        return function(*args, **kwargs)

    return recorded


def _metrics(workdir):
    return json.loads((workdir / "metrics.json").read_text())


def test_classifier_guidance_trains_its_classifier_beside_the_model(tmp_path, capsys):
    guide = ["--config.sampling.label=1", "--config.sampling.guidance=classifier"]
    guide += ["--config.classifier.n_iters=3", "--workdir", str(tmp_path)]
    assert cli.main([*TINY, "--mode", "train", "--workdir", str(tmp_path)]) == 0
    assert cli.main([*TINY, *guide, "--mode", "sample"]) == 2 - 1  # no classifier yet
    assert "no trained classifier" in capsys.readouterr().err
    assert cli.main([*TINY, *guide]) == 0
    out = capsys.readouterr().out
    assert "classifier    3 steps" in out and "of the samples in the class" in out
    metrics = _metrics(tmp_path)
    assert metrics["classifier"]["steps"] == 3 and metrics["training"]["steps_this_run"] == 0
    assert metrics["run"]["conditioning"] == "class 1, classifier guidance, gamma = 1"
    assert 0 <= metrics["samples"]["fraction_in_class"] <= 1
    assert (tmp_path / "classifier" / "checkpoints").is_dir()
    other = [*TINY, *guide, "--config.classifier.lr=0.01"]
    assert cli.main(other) == 1
    assert "holds a classifier with a different config" in capsys.readouterr().err
    assert cli.main([*other, "--overwrite"]) == 0


def test_an_inpainting_run_completes_test_data_and_measures_it(tmp_path, capsys, monkeypatch):
    argv = [*TINY, "--config.sampling.inpaint=lower_half", "--config.sampling.inpaint_method=smc"]
    argv += ["--config.sampling.particles=4", "--config.sampling.twist=True"]
    calls = []
    recorded = _recording(inpainting.inpaint_particles, calls)
    monkeypatch.setattr(inpainting, "inpaint_particles", recorded)
    assert cli.main([*argv, "--workdir", str(tmp_path)]) == 0
    assert "inpainting    lower_half of 12 test points, smc" in capsys.readouterr().out
    assert [(c["particles"], c["twist"]) for c in calls] == [(4, True), (4, True)]  # check, run
    section = _metrics(tmp_path)["sampling"]["inpainting"]
    assert section["mask"] == "lower_half" and section["particles"] == 4 and section["twist"]
    assert section["rmse_to_exact_mean"] > 0 and section["exact_rmse_to_mean"] > 0
    assert not (tmp_path / "process.png").exists() and (tmp_path / "samples.png").exists()
    assert np.load(tmp_path / "samples.npy").shape == (12, 2)


def test_classifier_free_guidance_of_a_trained_network_samples_the_class(tmp_path, capsys):
    # 400 updates of a 32-wide network with label dropout 0.2 (about 6 s), then sampling only:
    # measured 1.00 of the samples of class 3 in it at gamma = 3, 0.63 at gamma = 1 (the network
    # is short of training), and 0.12 at gamma = 0, the unconditional score (1/8 of a ring).
    train = ["--config.training.n_iters=400", "--config.training.checkpoint_every=400"]
    train += ["--config.model.hidden=32", "--config.model.depth=2"]
    train += ["--config.model.embed_dim=16", "--config.training.batch_size=128", *CFG]
    sample = ["--config.sampling.n_samples=400", "--config.sampling.num_steps=50"]
    fractions = {}
    for gamma in ("3", "1", "0"):
        guide = ["--config.sampling.guidance=cfg", f"--config.sampling.guidance_scale={gamma}"]
        assert cli.main([*TINY, *train, *sample, *guide, "--workdir", str(tmp_path)]) == 0
        fractions[gamma] = _metrics(tmp_path)["samples"]["fraction_in_class"]
    capsys.readouterr()
    assert fractions["3"] > 0.95 and 0.4 < fractions["1"] < fractions["3"]
    assert fractions["0"] < 0.25


def test_the_conditional_example_config_builds():
    config = load_config_file(REPOSITORY_CONFIGS / "toy" / "vp_cond.py")
    parts = pipeline.build(config)
    assert parts.conditioning.describe() == "class 3, cfg guidance, gamma = 2"
    assert parts.model.label is not None and parts.conditioning.target.name == "8gaussians|y=3"
