"""The command line: values it writes, every string choice reachable, every bad input one line.

In-process tests call ``scoresde.run.main`` (the console script's function); the tests of exit
status, stderr, signals, locks and config files that exit run ``python -m scoresde.run`` as a user
would, several processes at a time (each start-up is mostly importing torch).
"""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from scoresde import pipeline, rundir
from scoresde import run as cli
from scoresde.checkpoint import list_checkpoints, load_checkpoint
from scoresde.config import FIELDS, field_rule
from scoresde.datasets.gmm import GaussianMixture
from scoresde.likelihood import log_likelihood
from scoresde.sampling import SAMPLERS

REPO = Path(__file__).resolve().parents[1]

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
    "--config.eval.n_eval=6",
    "--config.eval.density_grid=3",
    "--config.eval.rtol=1e-2",
    "--config.eval.atol=1e-2",
    "--config.eval.n_process_times=2",
]
# every output of a run on 2D points (neighbours.png is drawn for finite datasets, images)
FILES = (
    *(name for name in rundir.OUTPUTS if name != "neighbours.png"),
    rundir.CONFIG_FILE,
    rundir.CHECKPOINTS,
)


def _main(capsys, *argv):
    status = cli.main([*TINY, *argv])  # later overrides win: argv may change TINY
    out, err = capsys.readouterr()
    return status, out, err


def _metrics(workdir: Path) -> dict:
    return json.loads((workdir / "metrics.json").read_text())


def _parts(*argv: str) -> pipeline.Parts:
    """The parts the command line builds for ``TINY + argv``."""
    return pipeline.build(cli.resolve_config(*cli.parse_args([*TINY, *argv])))


def snapshot(directory: Path) -> dict[str, bytes] | None:
    """Every file under ``directory`` with its bytes (``None`` if it does not exist), but the
    lock file, which holds the number of the last process that worked there."""
    if not directory.exists():
        return None
    if directory.is_file():
        return {"": directory.read_bytes()}
    files = (p for p in directory.rglob("*") if p.is_file() and p.name != rundir.LOCK_FILE)
    return {str(p.relative_to(directory)): p.read_bytes() for p in files}


# -- a run's files and values -------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["em", "pc", "ode"])
@pytest.mark.parametrize("sde", ["vp", "subvp", "ve"])
def test_every_sde_and_sampler_writes_the_whole_run_directory(tmp_path, capsys, sde, sampler):
    # The ode sampler's own options, loose (set for another sampler they would be refused).
    loose = (
        ["--config.sampling.rtol=1e-2", "--config.sampling.atol=1e-2"] if sampler == "ode" else []
    )
    status, out, err = _main(
        capsys, "--sde", sde, "--sampler", sampler, "--workdir", str(tmp_path), *loose
    )
    assert status == 0, err
    assert all((tmp_path / name).exists() for name in FILES)
    samples = np.load(tmp_path / "samples.npy")
    assert samples.shape == (12, 2) and samples.dtype == np.float32
    metrics = _metrics(tmp_path)
    assert metrics["run"] == {**metrics["run"], "sde": sde, "dataset": "8gaussians", "mode": "all"}
    assert metrics["sampling"]["sampler"] == sampler and metrics["sampling"]["nfe"] > 0
    assert metrics["likelihood"]["n_eval"] == 6 and metrics["density_grid"]["points"] == 9
    assert metrics["samples"]["n"] == 12
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored["sde"]["name"] == sde and stored["sampling"]["sampler"] == sampler
    assert "NLL - entropy" in out and str(tmp_path) in out


def test_mode_all_gives_bitwise_the_samples_of_train_then_sample(tmp_path, capsys):
    assert _main(capsys, "--workdir", str(tmp_path / "all"))[0] == 0
    assert _main(capsys, "--mode", "train", "--workdir", str(tmp_path / "two"))[0] == 0
    assert not (tmp_path / "two" / "samples.npy").exists()
    assert _main(capsys, "--mode", "sample", "--workdir", str(tmp_path / "two"))[0] == 0
    together = (tmp_path / "all" / "samples.npy").read_bytes()
    assert together == (tmp_path / "two" / "samples.npy").read_bytes()


def test_sampling_uses_the_ema_weights(tmp_path, capsys):
    # 40 updates at a high rate with a slow average: the EMA and the raw weights differ a lot.
    argv = ["--config.training.n_iters=40", "--config.training.lr=0.05"]
    argv += ["--config.training.ema_decay=0.9", "--workdir", str(tmp_path)]
    for mode in ("train", "sample"):
        assert _main(capsys, *argv, "--mode", mode)[0] == 0
    parts = _parts(*argv)
    latest = load_checkpoint(list_checkpoints(tmp_path / "checkpoints")[-1])
    trained = pipeline.load_trained(parts, latest)
    written = torch.from_numpy(np.load(tmp_path / "samples.npy"))
    with_ema = pipeline.sample(parts, parts.score_fn(trained.ema_model)).samples
    with_raw = pipeline.sample(parts, parts.score_fn(trained.model)).samples
    assert torch.equal(written, with_ema)
    assert (written - with_raw).abs().max() > 1e-3


def test_nll_minus_entropy_is_the_kl_of_the_data_to_the_model(capsys):
    """The exact score has KL ~ 0; a wider mixture's score has KL > 0 (not < 0)."""
    parts = _parts("--config.eval.n_eval=400", "--config.eval.rtol=1e-5", "--config.eval.atol=1e-5")
    data = parts.dataset.mixture
    exact = pipeline.evaluate(parts, data.score_fn(parts.sde)).likelihood
    # The same 8 modes with std 0.8 / sqrt 2 instead of 0.5 / sqrt 2: per mode
    # KL = 2 [log(1.6) + 1 / (2 * 1.6^2) - 1/2] = 0.33 nats in 2D (the modes barely overlap).
    wide = GaussianMixture.ring(k=8, radius=4 / math.sqrt(2), std=0.8 / math.sqrt(2))
    wider = pipeline.evaluate(parts, wide.score_fn(parts.sde)).likelihood
    # Exact score: only the solver's error and the prior mismatch (1e-4 nats) remain, and the
    # paired estimate's standard error is below 1e-3.
    assert abs(exact["nll_minus_entropy"]) < 5e-3
    assert wider["nll_minus_entropy"] == pytest.approx(0.33, abs=0.03)
    # NLL - entropy from the two means agrees within their standard errors (0.05 nats here).
    unpaired = wider["nll"] - wider["entropy"]
    assert unpaired == pytest.approx(wider["nll_minus_entropy"], abs=4 * wider["nll_stderr"])


def test_the_summary_shows_only_measures_that_discriminate(tmp_path, capsys):
    status, out, err = _main(capsys, "--dataset", "checkerboard", "--workdir", str(tmp_path / "c"))
    assert status == 0, err
    assert "in support" in out and "cross-entropy" not in out
    assert "fraction_in_support" in _metrics(tmp_path / "c")["samples"]
    status, out, err = _main(capsys, "--workdir", str(tmp_path / "g"))
    assert status == 0, err
    assert "in support" not in out and "cross-entropy - entropy" in out
    assert "fraction_in_support" not in _metrics(tmp_path / "g")["samples"]


# A short run of a small network: 300 updates (about 2 s) with the config's EMA warm-up.
SHORT = [
    "--config.training.n_iters=300",
    "--config.training.batch_size=256",
    "--config.training.checkpoint_every=300",
    "--config.model.hidden=32",
    "--config.sampling.num_steps=100",
    "--config.sampling.n_samples=500",
    "--config.eval.n_eval=50",
]


def test_a_short_run_samples_on_the_data_and_an_untrained_average_is_called_out(tmp_path, capsys):
    status, out, err = _main(capsys, *SHORT, "--workdir", str(tmp_path / "warm"))
    assert status == 0, err
    samples = _metrics(tmp_path / "warm")["samples"]
    # 8gaussians lies within radius ~3.5; an untrained average samples at radius ~50 or more.
    radius = np.linalg.norm(np.load(tmp_path / "warm" / "samples.npy"), axis=1)
    assert np.median(radius) < 4 and samples["fraction_outside_data"] < 0.05
    assert "WARNING" not in out
    # Without the warm-up, decay 0.999 keeps 74% of the initial network after 300 updates.
    cold = "--config.training.ema_warmup=false"
    status, out, err = _main(capsys, *SHORT, cold, "--workdir", str(tmp_path / "cold"))
    assert status == 0, err
    samples = _metrics(tmp_path / "cold")["samples"]
    assert samples["far_from_data"] and samples["fraction_outside_data"] > 0.5
    assert "WARNING: the samples are far from the data" in out


LOSS_CHOICES = [
    (loss, parameterization, sde)
    for loss in ("dsm", "smld", "ddpm")
    for parameterization in ("score", "epsilon", "x0", "v")
    for sde in ("vp", "subvp", "ve")
]
# The discrete losses follow an SDE's discrete chain: SMLD's noise levels (VE) or DDPM's (VP).
CANNOT_TRAIN = {("smld", "vp"), ("smld", "subvp"), ("ddpm", "subvp"), ("ddpm", "ve")}


@pytest.mark.parametrize("loss, parameterization, sde", LOSS_CHOICES)
def test_every_loss_parameterisation_and_sde_trains_or_is_refused_before_work(
    tmp_path, capsys, loss, parameterization, sde
):
    argv = ["--sde", sde, f"--config.training.loss={loss}", "--mode", "train"]
    argv += [f"--config.model.parameterization={parameterization}", "--workdir", str(tmp_path)]
    argv += ["--config.training.n_iters=6"]
    status, _, err = _main(capsys, *argv)
    if (loss, sde) in CANNOT_TRAIN:
        assert status == 2 and err.startswith("scoresde: error: config.training: ")
        assert not tmp_path.exists() or not any(tmp_path.iterdir())
        return
    assert status == 0, err
    losses = load_checkpoint(list_checkpoints(tmp_path / "checkpoints")[-1]).losses
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses)


def test_modes_resume_and_reuse_the_trained_model(tmp_path, capsys):
    workdir = str(tmp_path)
    status, _, err = _main(capsys, "--mode", "train", "--workdir", workdir)
    assert status == 0, err
    assert not (tmp_path / "samples.npy").exists()
    first = [p.name for p in list_checkpoints(tmp_path / rundir.CHECKPOINTS)]
    # Training longer resumes from the last checkpoint (step 4) and runs only the new updates.
    longer = "--config.training.n_iters=6"
    status, _, err = _main(capsys, "--mode", "train", "--workdir", workdir, longer)
    assert status == 0, err
    training = _metrics(tmp_path)["training"]
    assert training["steps"] == 6 and training["steps_this_run"] == 2
    assert first[-1] in [p.name for p in list_checkpoints(tmp_path / rundir.CHECKPOINTS)]
    # Sampling and evaluation settings may change without retraining.
    status, _, err = _main(
        capsys, "--mode", "sample", "--sampler", "ode", "--workdir", workdir, longer
    )
    assert status == 0, err
    assert (tmp_path / "samples.npy").exists() and not (tmp_path / "density.png").exists()
    status, _, err = _main(capsys, "--mode", "eval", "--workdir", workdir, longer)
    assert status == 0, err
    metrics = _metrics(tmp_path)
    assert {"training", "sampling", "likelihood", "samples"} <= metrics.keys()
    # Training further changes the model: what described the old one goes.
    longer = "--config.training.n_iters=8"
    status, _, err = _main(capsys, "--mode", "train", "--workdir", workdir, longer)
    assert status == 0, err
    assert not {"sampling", "likelihood", "samples"} & _metrics(tmp_path).keys()
    assert not (tmp_path / "samples.npy").exists()
    # Evaluating without samples measures the likelihood alone.
    status, _, err = _main(capsys, "--mode", "eval", "--workdir", workdir, longer)
    assert status == 0, err
    assert "likelihood" in _metrics(tmp_path) and "samples" not in _metrics(tmp_path)


def test_a_workdir_of_another_run_is_refused_unless_overwritten(tmp_path, capsys):
    workdir = str(tmp_path)
    assert _main(capsys, "--mode", "train", "--workdir", workdir)[0] == 0
    before = snapshot(tmp_path)
    other_lr = "--config.training.lr=0.01"
    status, _, err = _main(capsys, "--mode", "train", "--workdir", workdir, other_lr)
    assert status == 1
    assert err.count("\n") == 1 and "--overwrite" in err and "training.lr" in err
    assert snapshot(tmp_path) == before
    status, _, err = _main(capsys, "--mode", "train", "--workdir", workdir, other_lr, "--overwrite")
    assert status == 0, err
    assert json.loads((tmp_path / "config.json").read_text())["training"]["lr"] == 0.01


def test_a_cosine_run_is_refused_another_length_and_a_schedule_without_updates(tmp_path, capsys):
    cosine = ["--config.training.lr_schedule=cosine", "--config.training.warmup=2"]
    workdir = str(tmp_path)
    assert _main(capsys, "--mode", "train", "--workdir", workdir, *cosine)[0] == 0
    before = snapshot(tmp_path)
    longer = "--config.training.n_iters=6"  # its rates were those of a 4-update run
    status, _, err = _main(capsys, "--mode", "train", "--workdir", workdir, *cosine, longer)
    assert status == 1
    assert err.count("\n") == 1 and "training.n_iters: 4 in the checkpoint, now 6" in err
    assert snapshot(tmp_path) == before
    short = ["--config.training.n_iters=2", "--workdir", str(tmp_path / "b")]
    status, _, err = _main(capsys, "--mode", "train", *cosine, *short)
    assert status == 2 and not (tmp_path / "b").exists()
    assert err == (
        "scoresde: error: config.training.n_iters must be an integer above training.warmup = 2 "
        "(the cosine schedule decays over the updates after the warm-up); got 2\n"
    )
    guided = ["--config.sampling.label=1", "--config.sampling.guidance=classifier"]
    guided += ["--config.classifier.n_iters=2", "--workdir", str(tmp_path / "c")]
    status, _, err = _main(capsys, *cosine, *guided)
    assert status == 2 and not (tmp_path / "c").exists()
    assert err.startswith("scoresde: error: config.classifier.n_iters must be an integer above")
    # The classifier's rates depend on classifier.n_iters: another length is refused up front.
    guided[-3:] = ["--config.classifier.n_iters=3", "--workdir", str(tmp_path / "d")]
    assert _main(capsys, *cosine, *guided)[0] == 0
    before = snapshot(tmp_path / "d")
    guided[-3] = "--config.classifier.n_iters=5"
    status, _, err = _main(capsys, *cosine, *guided)
    assert status == 1 and err.count("\n") == 1
    assert "classifier.n_iters: 3 in the checkpoint, now 5" in err
    assert snapshot(tmp_path / "d") == before


def test_a_constant_schedule_is_recorded_as_before_the_field_existed(tmp_path, capsys):
    # Run directories written before training.lr_schedule existed hold neither the field nor
    # the loop's lr_schedule / lr_decay_end, and must still resume, sample and evaluate.
    assert _main(capsys, "--mode", "train", "--workdir", str(tmp_path))[0] == 0
    checkpoint = load_checkpoint(list_checkpoints(tmp_path / rundir.CHECKPOINTS)[-1])
    assert "lr_schedule" not in checkpoint.config["training"]
    assert not {"lr_schedule", "lr_decay_end"} & checkpoint.loop["settings"].keys()


def test_a_corrupt_checkpoint_is_reported_and_never_overwritten(tmp_path, capsys):
    workdir = str(tmp_path)
    assert _main(capsys, "--mode", "train", "--workdir", workdir)[0] == 0
    latest = list_checkpoints(tmp_path / rundir.CHECKPOINTS)[-1]
    weights = latest / "ema.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7])
    before = snapshot(tmp_path)
    for mode in ("train", "sample"):
        status, _, err = _main(
            capsys, "--mode", mode, "--workdir", workdir, "--config.training.n_iters=8"
        )
        assert status == 1
        assert err.count("\n") == 1 and "ema.safetensors" in err and "Traceback" not in err
        assert snapshot(tmp_path) == before


def test_eval_refuses_non_finite_samples_before_any_work(tmp_path, capsys):
    assert _main(capsys, "--mode", "train", "--workdir", str(tmp_path))[0] == 0
    samples = np.zeros((12, 2), dtype=np.float32)
    samples[3, 1] = np.nan
    np.save(tmp_path / "samples.npy", samples)
    before = snapshot(tmp_path)
    status, _, err = _main(capsys, "--mode", "eval", "--workdir", str(tmp_path))
    assert status == 1 and "holds 1 non-finite samples; run --mode sample" in err
    assert snapshot(tmp_path) == before


def test_a_users_own_temporary_directory_in_checkpoints_is_kept(tmp_path, capsys):
    mine = tmp_path / "checkpoints" / ".tmp-mine"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    assert _main(capsys, "--mode", "train", "--workdir", str(tmp_path))[0] == 0
    assert (mine / "notes.txt").read_text() == "keep me"
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")][-1] == "step_00000004"


@pytest.mark.parametrize(
    "key, raw, value",
    [
        ("training.n_iters", "2000", 2000),
        ("training.lr", "3e-4", 3e-4),
        ("sampling.denoise", "false", False),
        ("sampling.corrector", "none", "none"),
        ("sde.schedule", "cosine", "cosine"),
        ("sampling.num_steps", "50", 50),
        ("sampling.eps", "none", None),
        ("model.data_std", "1.5", 1.5),
    ],
)
def test_overrides_parse_to_the_type_of_the_field(key, raw, value):
    args, overrides = cli.parse_args(["--sde", "vp", f"--config.{key}", raw])
    assert overrides == [(key, raw)]
    config = cli.resolve_config(args, overrides)
    group, name = key.split(".")
    assert config[group][name] == value and type(config[group][name]) is type(value)


# -- through the real entry point ---------------------------------------------------------------


def _command(*argv: str) -> list[str]:
    return [sys.executable, "-m", "scoresde.run", *argv]


def _run(command: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def _run_all(commands: list[list[str]]) -> list[subprocess.CompletedProcess]:
    """Run the commands three at a time (start-up is mostly importing torch)."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        return list(pool.map(_run, commands))


def _string_choice_cases() -> list[tuple[str, str, list[str]]]:
    """``(field, choice, other overrides it needs)`` for every choice of every string field."""
    context = {
        ("sde.schedule", "cosine"): ["--config.sde.name=vp"],
        ("training.loss", "smld"): ["--config.sde.name=ve"],
        ("training.loss", "ddpm"): ["--config.sde.name=vp"],
        ("training.weighting", "score_sde"): ["--config.training.importance_sampling=false"],
        ("sampling.predictor", "reverse_diffusion"): [
            "--config.sampling.eps=none",
            "--config.sampling.num_steps=none",
            "--config.sde.name=vp",
        ],
        ("sampling.corrector", "ald"): ["--config.sde.name=vp"],
        ("sampling.predictor", "ancestral_sampling"): [
            "--config.sampling.eps=none",
            "--config.sampling.num_steps=none",
            "--config.sde.name=vp",
        ],
        ("sampling.predictor", "none"): ["--config.sampling.corrector=langevin"],
        ("sampling.guidance", "classifier"): [
            "--config.data.name=8gaussians",
            "--config.sampling.label=1",
        ],
        ("sampling.guidance", "cfg"): [
            "--config.data.name=8gaussians",
            "--config.sampling.label=1",
            "--config.training.p_uncond=0.1",
        ],
        ("sampling.inpaint_method", "smc"): ["--config.sampling.inpaint=left_half"],
        ("data.name", "digits"): ["--config.model.name=unet", "--config.eval.n_eval=10"],
        ("model.name", "unet"): ["--config.data.name=digits", "--config.eval.n_eval=10"],
    }
    # datasets read from files need them: tests/test_images_run.py writes tiny ones
    needs_files = {("data.name", name) for name in ("mnist", "fashion_mnist", "npz")}
    # A sampler's options are set with that sampler (set for another, they are refused).
    owner = {option: name for name, spec in SAMPLERS.items() for option in spec.choices}
    cases = []
    for field in FIELDS:
        choices = field_rule(field).allowed.removeprefix("None or ")
        if not choices.startswith("one of "):
            continue
        option = field.removeprefix("sampling.")
        sampler = [f"--config.sampling.sampler={owner[option]}"] if option in owner else []
        for choice in [c.strip().strip("'") for c in choices[len("one of ") :].split(",")]:
            if (field, choice) in needs_files:
                continue
            cases.append((field, choice, [*sampler, *context.get((field, choice), [])]))
    return cases


def _groups_of_compatible_cases(cases):
    """Pack the cases into few command lines: each field once per line, contexts compatible."""
    groups: list[dict[str, str]] = []
    for field, choice, needs in cases:
        wanted = {field: choice}
        for item in needs:
            key, value = item[len("--config.") :].split("=")
            wanted[key] = value
        for group in groups:
            if all(group.get(k, v) == v for k, v in wanted.items()):
                group.update(wanted)
                break
        else:
            groups.append(dict(wanted))
    return groups


def test_every_choice_of_every_string_field_is_reachable_from_the_command_line(tmp_path):
    cases = _string_choice_cases()
    assert len(cases) > 40  # every field with choices: datasets, SDEs, losses, samplers, ...
    groups = _groups_of_compatible_cases(cases)
    commands = [
        _command("--dry-run", "--workdir", str(tmp_path / "never"))
        + [f"--config.{k}={v}" for k, v in group.items()]
        for group in groups
    ]
    results = _run_all(commands)
    for group, done in zip(groups, results, strict=True):
        assert done.returncode == 0, (group, done.stderr)
        config = json.loads(done.stdout)
        for key, value in group.items():
            *path, name = key.split(".")
            node = config
            for part in path:
                node = node[part]
            shown = "none" if node[name] is None else str(node[name]).lower()
            assert shown == value.lower(), (key, value, shown)
    assert not (tmp_path / "never").exists()


def _tiny_trained_run(root: Path) -> Path:
    """A trained tiny run (in-process), to copy for the cases that need one."""
    template = root / "template"
    if not template.exists():
        assert cli.main([*TINY, "--workdir", str(template)]) == 0
    return template


def _copy_of_trained(root: Path, name: str) -> Path:
    target = root / name
    shutil.copytree(_tiny_trained_run(root), target)
    return target


def _edit_losses(workdir: Path) -> None:
    state = list_checkpoints(workdir / "checkpoints")[-1] / "state.json"
    content = json.loads(state.read_text())
    content["losses"][0] = 0.0
    state.write_text(json.dumps(content))


def _edit_types(workdir: Path) -> None:
    state = list_checkpoints(workdir / "checkpoints")[-1] / "state.json"
    content = json.loads(state.read_text())
    content["step"] = "4"
    state.write_text(json.dumps(content))


def _garbage_samples(workdir: Path) -> None:
    (workdir / "samples.npy").write_bytes(b"\x93NUMPY garbage")


def _pickled_samples(workdir: Path) -> None:
    np.save(workdir / "samples.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)


def _misshapen_samples(workdir: Path) -> None:
    np.save(workdir / "samples.npy", np.zeros((12, 3), dtype=np.float32))


def _read_only(path: Path) -> None:
    path.mkdir()
    path.chmod(0o555)
    if os.access(path, os.W_OK):  # root: make it immutable instead, or give up
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
            pytest.skip("cannot make a directory read-only for this user")


def _undo_read_only(path: Path) -> None:
    subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    path.chmod(0o755)


SYS_EXIT_CONFIG = "import sys\nsys.exit(0)\n"
EVAL = ["--mode", "eval", *TINY]

# Bad input of the kinds the command line always refused (argparse, fields, combinations): the
# same one line in-process, through main().
GENERIC_BAD_INPUT = [
    (["--sde", "vesde"], "'vesde'"),
    (["--sampler", "nope"], "'nope'"),
    (["--dataset", "spiral"], "'spiral'"),
    (["--mode", "bake"], "'bake'"),
    (["--seed", "one"], "'one'"),
    (["--config.training.n_iter=5"], "n_iters"),
    (["--config.training.lr=-1"], "config.training.lr must be"),
    (["--config.training.lr"], "needs a value"),
    (["--bogus"], "--bogus"),
    (["--sde", "ve", "--config.sde.sigma_min=20"], "sigma_min"),
    (["--config", "missing.py"], "missing.py"),
]


@pytest.mark.parametrize(
    "argv, expected", GENERIC_BAD_INPUT, ids=[" ".join(a) for a, _ in GENERIC_BAD_INPUT]
)
def test_bad_input_prints_one_line_and_exits_with_status_2(tmp_path, capsys, argv, expected):
    status = cli.main([*argv, "--workdir", str(tmp_path / "run")])
    out, err = capsys.readouterr()
    assert status == 2
    assert out == "" and err.startswith("scoresde: error: ") and err.count("\n") == 1
    assert expected in err
    assert not (tmp_path / "run").exists()


# Every bad input of issue 10, each as its own process, as a user meets it:
# (id, argv, text the one line must contain, setup(workdir) or None). ``{workdir}`` in argv is
# the case's own directory; a setup prepares it (and returns nothing).
BAD_INPUT = [
    ("lr not a number", ["--config.training.lr=abc"], "config.training.lr must be a number", None),
    ("workdir is a file", ["--workdir", "{workdir}"], "is a file", lambda w: w.write_text("x")),
    (
        "workdir under a file",
        ["--workdir", "{workdir}/run"],
        "which is a file",
        lambda w: w.write_text("x"),
    ),
    ("workdir read-only", ["--workdir", "{workdir}/run"], "cannot be written", _read_only),
    ("workdir unwritable", ["--workdir", "/proc/scoresde-test-run"], "cannot be written", None),
    (
        "checkpoints is a file",
        ["--workdir", "{workdir}"],
        "checkpoints is a file",
        lambda w: (w.mkdir(), (w / "checkpoints").write_text("x")),
    ),
    (
        "seed 2^64",
        ["--seed", str(2**64)],
        "--seed must be an integer in [0, 18446744073709551615]",
        None,
    ),
    ("config seed 2^64", [f"--config.seed={2**64}"], "config.seed must be an integer", None),
    (
        "lr 1e308",
        ["--config.training.lr=1e308"],
        "config.training.lr must be a number in (0, 1]",
        None,
    ),
    ("beta_max 1e308", ["--config.sde.beta_max=1e308"], "config.sde.beta_max must be", None),
    (
        "huge sigma_max",
        ["--sde", "ve", "--config.sde.sigma_max=1e30"],
        "config.sde.sigma_max must be",
        None,
    ),
    ("rtol 1e-300", ["--config.eval.rtol=1e-300"], "config.eval.rtol must be", None),
    ("atol 1e-300", ["--sampler", "ode", "--config.sampling.atol=1e-300"], "atol must be", None),
    (
        "density grid 100000",
        ["--config.eval.density_grid=100000"],
        "config.eval.density_grid = 100000 does not fit",
        None,
    ),
    (
        "n_samples 2e9",
        ["--config.sampling.n_samples=2e9"],
        "config.sampling.n_samples must be an integer; got '2e9'",
        None,
    ),
    (
        "n_samples 2 billion",
        ["--config.sampling.n_samples=2000000000"],
        "config.sampling.n_samples = 2000000000 does not fit",
        None,
    ),
    (
        "hidden 1e6",
        ["--config.model.hidden=1000000"],
        "config.model.hidden = 1000000 does not fit",
        None,
    ),
    (
        "batch 1e9",
        ["--config.training.batch_size=1000000000"],
        "config.training.batch_size = 1000000000 does not fit",
        None,
    ),
    (
        "num_steps 1e9",
        ["--config.sampling.num_steps=1000000000"],
        "config.sampling.num_steps must be None or an integer in [1, 100000]",
        None,
    ),
    ("edited loss history", ["--workdir", "{workdir}", *TINY], "state.json", _edit_losses),
    ("edited types", ["--workdir", "{workdir}", *TINY], "state.json", _edit_types),
    (
        "garbage samples",
        ["--workdir", "{workdir}", *EVAL],
        "samples.npy is not a readable",
        _garbage_samples,
    ),
    (
        "pickled samples",
        ["--workdir", "{workdir}", *EVAL],
        "samples.npy is not a readable",
        _pickled_samples,
    ),
    (
        "misshapen samples",
        ["--workdir", "{workdir}", *EVAL],
        "shape (n >= 2, 2); got (12, 3)",
        _misshapen_samples,
    ),
    ("empty workdir", ["--workdir", ""], "--workdir must be a path; got ''", None),
    ("empty config", ["--config", ""], "--config must be a path; got ''", None),
    ("a group set", ["--config.training=1"], "config.training is a group", None),
    ("config calls sys.exit", ["--config", "{workdir}.py"], "called sys.exit(0)", None),
    # conditional generation (tests/test_conditioning.py has every refusal in-process)
    ("label 8 of 8", ["--config.sampling.label=8"], "in [0, 7]; got 8", None),
    (
        "label without labels",
        ["--dataset", "checkerboard", "--config.sampling.label=0"],
        "config.sampling.label must be None for dataset 'checkerboard'",
        None,
    ),
    ("cfg without a class", ["--config.sampling.guidance=cfg"], "needs a class", None),
    (
        "cfg without a conditional network",
        ["--config.sampling.guidance=cfg", "--config.sampling.label=1"],
        "needs a conditional network",
        None,
    ),
    (
        "negative guidance scale",
        [
            "--config.sampling.guidance=classifier",
            "--config.sampling.label=1",
            "--config.sampling.guidance_scale=-2",
        ],
        "config.sampling.guidance_scale must be a number in [0, 1000]",
        None,
    ),
    ("unknown mask", ["--config.sampling.inpaint=upper"], "sampling.inpaint must be 'none'", None),
    ("random mask 1.5", ["--config.sampling.inpaint=random:1.5"], "0 < P < 1", None),
    (
        "mask file of another shape",
        ["--config.sampling.inpaint={workdir}.npy"],
        "boolean array of the samples' shape (2,)",
        lambda w: np.save(f"{w}.npy", np.ones((4, 4), bool)),
    ),
    (
        "unreadable mask file",
        ["--config.sampling.inpaint={workdir}.npy"],
        "cannot read",
        lambda w: Path(f"{w}.npy").write_text("x"),
    ),
]
TRAINED = {_edit_losses, _edit_types, _garbage_samples, _pickled_samples, _misshapen_samples}


@pytest.fixture(scope="module")
def bad_input_results(tmp_path_factory):
    """Every BAD_INPUT case run as its own process (three at a time), with the snapshot of its
    directory before and after."""
    root = tmp_path_factory.mktemp("bad-input")
    commands, workdirs, before = [], [], []
    for name, argv, _, setup in BAD_INPUT:
        workdir = root / name.replace(" ", "-")
        if setup in TRAINED:
            shutil.copytree(_tiny_trained_run(root), workdir)
        if setup is not None:
            try:
                setup(workdir)
            except pytest.skip.Exception:  # the test of this case skips too
                workdir = None
        if name == "config calls sys.exit":
            (root / f"{workdir.name}.py").write_text(SYS_EXIT_CONFIG)
        args = [a.replace("{workdir}", str(workdir)) for a in argv]
        if "--workdir" not in args:
            args += ["--workdir", str(root / f"{name.replace(' ', '-')}-new")]
        commands.append(_command(*args) if workdir is not None else [sys.executable, "-c", ""])
        workdirs.append(workdir)
        before.append(None if workdir is None else snapshot(workdir))
    results = _run_all(commands)
    after = [None if w is None else snapshot(w) for w in workdirs]
    for name, _, _, setup in BAD_INPUT:
        if setup is _read_only:
            _undo_read_only(root / name.replace(" ", "-"))
    return {
        name: (done, b, a, workdir, root)
        for (name, *_), done, b, a, workdir in zip(
            BAD_INPUT, results, before, after, workdirs, strict=True
        )
    }


@pytest.mark.parametrize("name, argv, expected, setup", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_prints_one_line_exits_non_zero_and_writes_nothing(
    bad_input_results, name, argv, expected, setup
):
    done, before, after, workdir, root = bad_input_results[name]
    if setup is _read_only and workdir is None:
        pytest.skip("cannot make a directory read-only for this user")
    assert done.returncode in (1, 2), done.stderr
    assert done.stdout == "" and done.stderr.startswith("scoresde: error: ")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert expected in done.stderr, done.stderr
    assert after == before  # nothing written into, or created at, the case's directory
    assert not (root / f"{name.replace(' ', '-')}-new").exists()


def test_ctrl_c_keeps_the_last_update_and_a_second_process_is_locked_out(tmp_path, capsys):
    argv = [*TINY, "--mode", "train", "--workdir", str(tmp_path)]
    argv += ["--config.training.n_iters=1000000", "--config.training.checkpoint_every=100"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        _command(*argv),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not list_checkpoints(tmp_path / "checkpoints") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list_checkpoints(tmp_path / "checkpoints"), "the first run never checkpointed"
        second = _run(_command(*argv))
        assert second.returncode == 1 and second.stderr.count("\n") == 1
        assert f"in use by another scoresde run (process {first.pid})" in second.stderr
        first.send_signal(signal.SIGINT)
        out, err = first.communicate(timeout=60)
    finally:
        first.kill()
    assert first.returncode == 130 and out == ""
    assert err.startswith("scoresde: error: training interrupted after step ")
    assert err.count("\n") == 1 and err.rstrip().endswith("run the same command to resume")
    step = int(err.split("after step ")[1].split(";")[0])
    assert list_checkpoints(tmp_path / "checkpoints")[-1].name == f"step_{step:08d}"
    # The same command resumes there (here with an end in sight).
    status, _, err = _main(capsys, *argv[len(TINY) :], f"--config.training.n_iters={step + 3}")
    assert status == 0, err
    assert _metrics(tmp_path)["training"]["steps_this_run"] == 3


def test_the_likelihood_curve_of_points_is_the_ema_models_nll(tmp_path, capsys):
    """For points ``eval.n_curve`` records ``test_nll``: the EMA model's mean NLL (nats) of the
    first held-out points, with the run's likelihood settings."""
    curve = ["--config.training.eval_every=2", "--config.eval.n_curve=5"]
    workdir = tmp_path / "run"
    status, _, err = _main(capsys, "--workdir", str(workdir), "--mode", "train", *curve)
    assert status == 0, err
    evals = json.loads((workdir / "metrics.json").read_text())["training"]["evals"]
    assert [e["step"] for e in evals] == [2, 4]
    parts = _parts(*curve)
    ema = pipeline.load_trained(parts, rundir.RunDirectory(workdir).latest_checkpoint()).ema_model
    held_out = parts.dataset.split("test", 16, parts.generator("eval")).x[:5]
    seed = parts.generator("curve").initial_seed()
    logp = log_likelihood(
        parts.sde,
        parts.score_fn(ema),
        held_out,
        generator=torch.Generator().manual_seed(seed),
        **parts.likelihood,
    )
    assert evals[-1]["test_nll"] == pytest.approx(-float(logp.mean()), rel=1e-6)
