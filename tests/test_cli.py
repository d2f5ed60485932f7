"""The command line end to end with tiny settings: SDE x sampler, bad input, resume, refusals."""

import json
import subprocess
import sys

import numpy as np
import pytest

from scoresde import run as cli
from scoresde.checkpoint import list_checkpoints

# A few updates of a tiny network, a short chain and loose solver tolerances: seconds per run.
TINY = [
    "--config.training.n_iters=4",
    "--config.training.batch_size=16",
    "--config.training.checkpoint_every=2",
    "--config.model.hidden=8",
    "--config.model.depth=1",
    "--config.model.embed_dim=4",
    "--config.sde.N=25",  # the DDPM chain needs beta_max / N < 1
    "--config.sampling.n_samples=12",
    "--config.sampling.rtol=1e-2",
    "--config.sampling.atol=1e-2",
    "--config.eval.n_eval=6",
    "--config.eval.density_grid=3",
    "--config.eval.rtol=1e-2",
    "--config.eval.atol=1e-2",
    "--config.eval.n_process_times=2",
]
FILES = (*cli.OUTPUTS, cli.CONFIG_FILE, cli.CHECKPOINTS)


def _main(capsys, *argv):
    status = cli.main([*TINY, *argv])  # later overrides win: argv may change TINY
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("sampler", ["em", "pc", "ode"])
@pytest.mark.parametrize("sde", ["vp", "subvp", "ve"])
def test_every_sde_and_sampler_writes_the_whole_run_directory(tmp_path, capsys, sde, sampler):
    status, out, err = _main(capsys, "--sde", sde, "--sampler", sampler, "--workdir", str(tmp_path))
    assert status == 0, err
    assert all((tmp_path / name).exists() for name in FILES)
    samples = np.load(tmp_path / "samples.npy")
    assert samples.shape == (12, 2) and samples.dtype == np.float32
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["run"] == {**metrics["run"], "sde": sde, "dataset": "8gaussians", "mode": "all"}
    assert metrics["sampling"]["sampler"] == sampler and metrics["sampling"]["nfe"] > 0
    likelihood = metrics["likelihood"]
    for key in ("nll", "nll_stderr", "entropy", "nll_minus_entropy", "nfe", "wall_time_s"):
        assert key in likelihood
    assert likelihood["nll_median"] <= likelihood["nll_max"]
    assert likelihood["nll"] <= likelihood["nll_max"]
    for key in ("energy_distance", "sliced_wasserstein", "cross_entropy", "mode_weights"):
        assert key in metrics["samples"]
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored["sde"]["name"] == sde and stored["sampling"]["sampler"] == sampler
    assert "NLL - entropy" in out and str(tmp_path) in out


def test_checkerboard_reports_the_fraction_inside_the_squares(tmp_path, capsys):
    status, _, err = _main(capsys, "--dataset", "checkerboard", "--workdir", str(tmp_path))
    assert status == 0, err
    samples = json.loads((tmp_path / "metrics.json").read_text())["samples"]
    assert 0 <= samples["fraction_in_support"] <= 1 and "mode_weights" not in samples


def test_modes_resume_and_reuse_the_trained_model(tmp_path, capsys):
    workdir = str(tmp_path)
    status, _, err = _main(capsys, "--mode", "train", "--workdir", workdir)
    assert status == 0, err
    assert not (tmp_path / "samples.npy").exists()
    first = [p.name for p in list_checkpoints(tmp_path / cli.CHECKPOINTS)]
    # Training longer resumes from the last checkpoint (step 4) and runs only the new updates.
    longer = "--config.training.n_iters=6"
    status, _, err = _main(capsys, "--mode", "train", "--workdir", workdir, longer)
    assert status == 0, err
    training = json.loads((tmp_path / "metrics.json").read_text())["training"]
    assert training["steps"] == 6 and training["steps_this_run"] == 2
    assert first[-1] in [p.name for p in list_checkpoints(tmp_path / cli.CHECKPOINTS)]
    # Sampling and evaluation settings may change without retraining.
    status, _, err = _main(
        capsys, "--mode", "sample", "--sampler", "ode", "--workdir", workdir, longer
    )
    assert status == 0, err
    assert (tmp_path / "samples.npy").exists() and not (tmp_path / "density.png").exists()
    status, _, err = _main(capsys, "--mode", "eval", "--workdir", workdir, longer)
    assert status == 0, err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"training", "sampling", "likelihood", "samples"} <= metrics.keys()


def test_a_workdir_of_another_run_is_refused_unless_overwritten(tmp_path, capsys):
    workdir = str(tmp_path)
    assert _main(capsys, "--mode", "train", "--workdir", workdir)[0] == 0
    before = sorted(p.name for p in list_checkpoints(tmp_path / cli.CHECKPOINTS))
    other_lr = "--config.training.lr=0.01"
    status, _, err = _main(capsys, "--mode", "train", "--workdir", workdir, other_lr)
    assert status == 1
    assert err.count("\n") == 1 and "--overwrite" in err and "training.lr" in err
    assert sorted(p.name for p in list_checkpoints(tmp_path / cli.CHECKPOINTS)) == before
    status, _, err = _main(capsys, "--mode", "train", "--workdir", workdir, other_lr, "--overwrite")
    assert status == 0, err
    assert json.loads((tmp_path / "config.json").read_text())["training"]["lr"] == 0.01


def test_a_corrupt_checkpoint_is_reported_and_never_overwritten(tmp_path, capsys):
    workdir = str(tmp_path)
    assert _main(capsys, "--mode", "train", "--workdir", workdir)[0] == 0
    latest = list_checkpoints(tmp_path / cli.CHECKPOINTS)[-1]
    weights = latest / "ema.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7])
    damaged = {p.name: p.read_bytes() for p in latest.iterdir()}
    for mode in ("train", "sample"):
        status, _, err = _main(
            capsys, "--mode", mode, "--workdir", workdir, "--config.training.n_iters=8"
        )
        assert status == 1
        assert err.count("\n") == 1 and "ema.safetensors" in err and "Traceback" not in err
        assert {p.name: p.read_bytes() for p in latest.iterdir()} == damaged
        assert list_checkpoints(tmp_path / cli.CHECKPOINTS)[-1] == latest


def test_sample_mode_without_a_trained_model_is_refused(tmp_path, capsys):
    status, _, err = _main(capsys, "--mode", "sample", "--workdir", str(tmp_path / "new"))
    assert status == 1 and "--mode train" in err
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    "key, raw, value",
    [
        ("training.n_iters", "2000", 2000),
        ("training.lr", "3e-4", 3e-4),
        ("sampling.denoise", "false", False),
        ("sde.schedule", "cosine", "cosine"),
        ("sampling.num_steps", "50", 50),
        ("model.data_std", "1.5", 1.5),
    ],
)
def test_overrides_parse_to_the_type_of_the_field(key, raw, value):
    args, overrides = cli.parse_args(["--sde", "vp", f"--config.{key}", raw])
    assert overrides == [(key, raw)]
    config = cli.load_config_file(cli.REPOSITORY_CONFIGS / "toy" / "vp.py")
    cli.apply_override(config, key, raw)
    group, name = key.split(".")
    assert config[group][name] == value and type(config[group][name]) is type(value)


# (argv, what the one line must name)
BAD_INPUT = [
    (["--sde", "vesde"], "'vesde'"),
    (["--sampler", "nope"], "'nope'"),
    (["--dataset", "spiral"], "'spiral'"),
    (["--mode", "bake"], "'bake'"),
    (["--seed", "one"], "'one'"),
    (["--config.training.n_iter=5"], "n_iters"),
    (["--config.training.lr=-1"], "training.lr"),
    (["--config.training.lr=abc"], "training.lr"),
    (["--sde", "ve", "--config.sde.sigma_min=20"], "sigma_max must be > sigma_min = 20.0"),
    (["--config", "missing.py"], "missing.py"),
    (["--config.training.lr"], "needs a value"),
    (["--bogus"], "--bogus"),
]


@pytest.mark.parametrize("argv, expected", BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_prints_one_line_and_exits_non_zero(tmp_path, capsys, argv, expected):
    status = cli.main([*argv, "--workdir", str(tmp_path / "run")])
    out, err = capsys.readouterr()
    assert status == 2
    assert out == "" and err.startswith("scoresde: error: ") and err.count("\n") == 1
    assert expected in err
    assert not (tmp_path / "run").exists()


def test_bad_input_through_the_real_entry_point_leaves_no_traceback(tmp_path):
    # One subprocess per kind of error (argparse, config field, config value), started together:
    # their start-up is mostly importing torch.
    cases = [BAD_INPUT[0], BAD_INPUT[5], BAD_INPUT[9]]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "scoresde.run", *argv, "--workdir", str(tmp_path / "run")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv, _ in cases
    ]
    for proc, (_, expected) in zip(procs, cases, strict=True):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2
        assert out == "" and err.count("\n") == 1 and expected in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
