"""Images through the one build step and the command line: digits, Fashion-MNIST and .npz files.

Every run here is a tiny U-Net (8 channels, two levels) trained for a few updates, with short
chains and loose solver tolerances: seconds each. Fashion-MNIST and .npz data are tiny files the
tests write themselves.
"""

import dataclasses
import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from scoresde import bits_per_dim, image_eval, pipeline
from scoresde import run as cli
from scoresde.conditioning import ClassSubset
from scoresde.config import SDES
from scoresde.image_eval import label_accuracy
from scoresde.image_metrics import frechet_distance
from scoresde.nets import load_digits_classifier
from scoresde.rundir import RunDirectory
from scoresde.sampling import SAMPLERS

TINY = [
    "--config.model.ch=8",
    "--config.model.attn_resolutions=()",
    "--config.training.n_iters=3",
    "--config.training.warmup=1",  # the digits default's cosine schedule needs n_iters > warmup
    "--config.training.batch_size=16",
    "--config.training.checkpoint_every=2",
    "--config.sde.N=25",  # the DDPM chain needs beta_max / N < 1
    "--config.sampling.n_samples=12",
    "--config.sampling.num_steps=3",
    "--config.eval.n_eval=4",
    "--config.eval.n_check=2",
    "--config.eval.rtol=0.5",
    "--config.eval.atol=0.5",
    "--config.eval.n_process_times=2",
]


def _main(capsys, *argv: str) -> tuple[int, str, str]:
    status = cli.main([*TINY, *argv])
    out, err = capsys.readouterr()
    return status, out, err


def _parts(*argv: str) -> pipeline.Parts:
    return pipeline.build(cli.resolve_config(*cli.parse_args([*TINY, *argv])))


def test_the_digits_command_writes_the_run_directory(tmp_path, capsys):
    workdir = tmp_path / "run"
    status, out, err = _main(capsys, "--dataset", "digits", "--workdir", str(workdir))
    assert status == 0, err
    assert "bits/dim" in out and "FD" in out
    for name in ("samples.npy", "samples.png", "process.png", "loss.png", "neighbours.png"):
        assert (workdir / name).is_file(), name
    assert not (workdir / "density.png").exists()  # a density grid is for 2D points
    samples = np.load(workdir / "samples.npy")
    assert samples.shape == (12, 1, 8, 8) and samples.dtype == np.float32
    config = json.loads((workdir / "config.json").read_text())
    assert config["model"]["name"] == "unet" and config["data"]["name"] == "digits"
    m = json.loads((workdir / "metrics.json").read_text())
    lk = m["likelihood"]
    assert lk["n_eval"] == 4 and lk["num_levels"] == 17 and lk["method"] == "hutchinson, 2 probes"
    assert lk["bpd_stderr"] > 0 and lk["nfe"] > 0 and lk["check"]["n"] == 2
    # the baselines on the same 4 test images: uniform is log2 17 exactly
    assert m["baselines"]["uniform"] == pytest.approx(np.log2(17), abs=1e-12)
    q = m["samples"]
    assert q["n"] == 12 and len(q["class_fractions"]) == 10
    assert sum(q["class_fractions"]) == pytest.approx(1.0)
    assert {"fd", "fd_floor", "precision", "recall", "near_copy_fraction"} <= q.keys()
    assert m["sampling"]["nfe"] == 4 and m["sampling"]["n_samples"] == 12

    # samples.npy is in grey levels: --mode eval reads it back into model units, so its sample
    # measures are those of the run that drew them (a wrong unit conversion moves FD by far more)
    status, _, err = _main(
        capsys,
        "--dataset",
        "digits",
        "--workdir",
        str(workdir),
        "--mode",
        "eval",
        "--config.eval.n_check=0",
    )
    assert status == 0, err
    again = json.loads((workdir / "metrics.json").read_text())["samples"]
    assert again["fd"] == pytest.approx(q["fd"], rel=1e-5)
    assert again["class_fractions"] == q["class_fractions"]


def test_samples_are_in_grey_levels():
    parts = _parts("--dataset", "digits")
    x = parts.dataset.split("test", 5).x
    levels = parts.dataset.to_data(x)
    assert levels.min() >= 0 and levels.max() <= 16
    assert torch.allclose(levels, levels.round(), atol=1e-5)
    assert torch.allclose(parts.dataset.from_data(levels), x, atol=1e-6)


def test_a_resumed_run_continues_the_image_stream(tmp_path):
    """Training 4 updates at once, or 2 and then 4 resumed from the checkpoint, gives the same
    weights: the resumed run draws batches 2 and 3 of the epoch stream, not 0 and 1 again (at a
    constant rate: a cosine schedule's rates depend on n_iters)."""
    constant = ("--dataset", "digits", "--config.training.lr_schedule=constant")
    whole = pipeline.train(_parts(*constant, "--config.training.n_iters=4"))
    pipeline.train(_parts(*constant, "--config.training.n_iters=2"), tmp_path)
    resumed = pipeline.train(_parts(*constant, "--config.training.n_iters=4"), tmp_path)
    assert resumed.section["steps_this_run"] == 2
    for a, b in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("sde", tuple(SDES))
def test_every_sampler_draws_images(sde):
    """Each sampler with its default options on one built U-Net (the built config's other parts
    do not depend on the sampler; build's check of each sampler is tested on points)."""
    built = _parts("--dataset", "digits", "--sde", sde)
    score_fn = built.score_fn(built.model)
    tiny = [a for a in TINY if "num_steps" not in a]  # adaptive samplers choose their own
    for sampler in SAMPLERS:
        config = cli.resolve_config(
            *cli.parse_args([*tiny, "--dataset", "digits", "--sde", sde, "--sampler", sampler])
        )
        config.sampling.n_samples, config.sampling.num_steps = 3, 3
        parts = dataclasses.replace(built, config=config, sampling=pipeline.sampler_options(config))
        drawn = pipeline.sample(parts, score_fn)
        assert drawn.samples.shape == (3, 1, 8, 8), sampler
        assert torch.isfinite(drawn.samples).all(), sampler
        assert len(drawn.reverse) == len(drawn.times) == len(drawn.forward)


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def _fashion_files(directory: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("t10k", 8)):
        _write_idx(directory / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(directory / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return directory


def test_fashion_mnist_runs_through_the_same_path(tmp_path, capsys):
    data = _fashion_files(tmp_path)
    workdir = tmp_path / "run"
    status, out, err = _main(
        capsys,
        "--dataset",
        "fashion_mnist",
        f"--config.data.path={data}",
        "--config.eval.n_check=0",
        "--config.sampling.n_samples=6",
        "--workdir",
        str(workdir),
    )
    assert status == 0, err
    assert np.load(workdir / "samples.npy").shape == (6, 1, 28, 28)
    m = json.loads((workdir / "metrics.json").read_text())
    assert m["likelihood"]["num_levels"] == 256 and "check" not in m["likelihood"]
    assert m["baselines"]["uniform"] == pytest.approx(8.0)
    # no evaluation classifier for Fashion-MNIST: the pixel-space measures only
    assert "fd" not in m["samples"] and 0 <= m["samples"]["precision"] <= 1


def test_an_npz_of_images_builds_and_draws(tmp_path):
    path = tmp_path / "mine.npz"
    rng = np.random.default_rng(1)
    np.savez(path, images=rng.integers(0, 256, (40, 12, 12), dtype=np.uint8))
    parts = _parts("--dataset", "npz", f"--config.data.path={path}")
    assert parts.dataset.shape == (1, 12, 12) and parts.dataset.size == 36
    drawn = pipeline.sample(parts, parts.score_fn(parts.model))
    assert drawn.samples.shape == (12, 1, 12, 12)


def _bad_npz(tmp_path: Path) -> str:
    path = tmp_path / "floats.npz"
    np.savez(path, images=np.zeros((4, 8, 8), dtype=np.float32))
    return str(path)


# (arguments, what the one-line error says)
BAD = [
    (["--dataset", "mnist"], "config.data.path must be the path of the files of 'mnist'; got None"),
    (["--dataset", "mnist", "--config.data.path=/no/such/dir"], "/no/such/dir: no such directory"),
    (["--dataset", "8gaussians", "--config.data.path=x"], "config.data.path must be None"),
    (["--dataset", "digits", "--config.model.ch_mult=(1,1,1,1,1)"], "at most 4 levels for 8x8"),
    (["--dataset", "digits", "--config.model.name=mlp"], "model.name must be 'unet'"),
    (["--config.model.name=unet"], "model.name must be 'mlp' for points"),
    (["--dataset", "digits", "--config.model.attn_resolutions=(3,)"], "attn_resolutions must be"),
    (["--dataset", "digits", "--config.model.dropout=1.5"], "config.model.dropout must be"),
    (["--dataset", "digits", "--config.training.batch_size=1000000000"], "does not fit"),
    (["--dataset", "digits", "--config.model.ch=100000"], "config.model.ch = 100000 does not fit"),
    (
        ["--dataset", "digits", "--config.eval.n_eval=301"],
        "config.eval.n_eval must be an integer in [2, 300]",
    ),
    (
        ["--dataset", "digits", "--config.eval.n_check=1"],
        "config.eval.n_check must be 0 or an integer in [2, eval.n_eval = 4]; got 1",
    ),
    (
        ["--dataset", "digits", "--config.eval.n_eval=3", "--config.eval.n_check=4"],
        "config.eval.n_check must be 0 or an integer in [2, eval.n_eval = 3]; got 4",
    ),
    (
        ["--dataset", "digits", "--config.eval.n_curve=3"],
        "config.eval.n_curve must be 0 while training.eval_every = 0",
    ),
    (
        ["--dataset", "digits", "--config.eval.n_curve=301", "--config.training.eval_every=2"],
        "config.eval.n_curve must be an integer in [0, 300]",
    ),
]


@pytest.mark.parametrize(("argv", "message"), BAD)
def test_bad_image_inputs_get_one_line(argv, message, capsys):
    status, out, err = _main(capsys, *argv)
    assert status == 2 and out == ""
    assert err.startswith("scoresde: error: ") and err.count("\n") == 1, err
    assert message in err


def test_a_malformed_npz_is_named(tmp_path, capsys):
    path = _bad_npz(tmp_path)
    status, _, err = _main(capsys, "--dataset", "npz", f"--config.data.path={path}")
    assert status == 2 and err.count("\n") == 1
    assert path in err and "not uint8 images" in err


def test_a_labelled_digits_run_is_measured_against_its_class(tmp_path, capsys):
    """With a label the samples are compared with that class's images (FD and its floor) and
    ``label_accuracy`` is the share the evaluation classifier assigns to the label."""
    workdir = tmp_path / "run"
    status, _, err = _main(
        capsys, "--config", "configs/digits/vp_cond.py", "--workdir", str(workdir)
    )
    assert status == 0, err
    m = json.loads((workdir / "metrics.json").read_text())
    q = m["samples"]
    assert "max_class_error" not in q  # the shares of one class are not 10 % each
    parts = _parts("--config", "configs/digits/vp_cond.py")
    # bits/dim and the baselines are of the class's test images too
    digit = ClassSubset(parts.dataset, 3)
    levels = digit.split("test", 4, parts.generator("eval")).levels
    baselines = image_eval.baselines_section(digit, levels)
    assert m["baselines"]["categorical"] == pytest.approx(baselines["categorical"], rel=1e-9)
    samples = parts.dataset.from_data(torch.from_numpy(np.load(workdir / "samples.npy")))
    classifier = load_digits_classifier()
    predicted = classifier(samples).argmax(1)
    assert q["label_accuracy"] == pytest.approx(float((predicted == 3).double().mean()))
    features = classifier.features
    expected = frechet_distance(features(samples), features(digit.split("test").x))
    assert q["fd"] == pytest.approx(expected, rel=1e-4)


def test_a_classifier_guided_digits_run_checks_its_exact_trace(tmp_path, capsys):
    """The exact-trace check of a guided score differentiates the U-Net classifier twice
    (GroupNorm's double backward), which the batched vector-Jacobian product cannot do: the
    plain products take over and the run completes."""
    workdir = tmp_path / "run"
    guided = ["--config.sampling.label=1", "--config.sampling.guidance=classifier"]
    guided += ["--config.classifier.n_iters=3", "--config.classifier.lr=1e-3"]
    status, _, err = _main(capsys, "--dataset", "digits", *guided, "--workdir", str(workdir))
    assert status == 0, err
    check = json.loads((workdir / "metrics.json").read_text())["likelihood"]["check"]
    assert check["n"] == 2 and math.isfinite(check["hutchinson_minus_exact"])


def test_inpainted_digits_are_classified_against_their_true_class(tmp_path, capsys):
    workdir, inpaint = tmp_path / "run", "--config.sampling.inpaint=lower_half"
    status, out, err = _main(capsys, "--dataset", "digits", "--workdir", str(workdir), inpaint)
    assert status == 0, err
    sampling = json.loads((workdir / "metrics.json").read_text())["sampling"]
    assert sampling["nfe"] == 4  # 3 steps and the denoising step, as without inpainting
    section = sampling["inpainting"]
    # the completed test images against the classes of those test images (the first draws of
    # the run's "sample" stream pick them)
    parts = _parts("--dataset", "digits")
    truth = parts.dataset.split("test", 12, parts.generator("sample"))
    completed = parts.dataset.from_data(torch.from_numpy(np.load(workdir / "samples.npy")))
    torch.testing.assert_close(completed[:, :, :4], truth.x[:, :, :4])  # the known upper half
    expected = label_accuracy(parts.dataset, completed, truth.y)
    assert section["fraction_true_class"] == pytest.approx(expected)
    assert section["rmse_to_truth"] > 0
    # the same error in grey levels: model units [-1, 1] are levels [0, 16]
    assert section["rmse_to_truth_levels"] == pytest.approx(8 * section["rmse_to_truth"], rel=1e-5)
    assert "lower_half of 12 test images" in out and "grey levels" in out
    assert (workdir / "samples.png").is_file() and not (workdir / "process.png").exists()


def test_label_accuracy_of_the_test_images_is_the_classifiers_accuracy():
    parts = _parts("--dataset", "digits")
    test = parts.dataset.split("test")
    assert label_accuracy(parts.dataset, test.x, test.y) == pytest.approx(299 / 300)
    assert label_accuracy(parts.dataset, test.x, (test.y + 1) % 10) < 0.01


def test_the_bits_per_dim_curve_is_the_ema_models_on_the_first_test_images(tmp_path, capsys):
    """``eval.n_curve`` records, every ``eval_every`` updates, the EMA model's bits/dim of the
    first test images (the same noise at every point), and ``loss.png`` draws it."""
    curve = [
        "--config.training.n_iters=4",
        "--config.training.eval_every=2",
        "--config.eval.n_curve=3",
    ]
    workdir = tmp_path / "run"
    argv = ["--dataset", "digits", "--workdir", str(workdir), "--mode", "train", *curve]
    status, _, err = _main(capsys, *argv)
    assert status == 0, err
    evals = json.loads((workdir / "metrics.json").read_text())["training"]["evals"]
    assert [e["step"] for e in evals] == [2, 4] and (workdir / "loss.png").is_file()
    parts = _parts("--dataset", "digits", *curve)
    ema = pipeline.load_trained(parts, RunDirectory(workdir).latest_checkpoint()).ema_model
    bpd = bits_per_dim(
        parts.sde,
        parts.score_fn(ema),
        parts.dataset.split("test").levels[:3],
        num_bins=17,
        data_range=(-1.0, 1.0),
        generator=torch.Generator().manual_seed(parts.generator("curve").initial_seed()),
        **parts.likelihood,
    )
    assert evals[-1]["test_bpd"] == pytest.approx(float(bpd.mean()), rel=1e-6)
    assert evals[0]["test_bpd"] != evals[-1]["test_bpd"]
