"""Config files, their fields, and the build step that tries their settings together."""

import pytest
import torch

from scoresde import pipeline
from scoresde.config import (
    FIELDS,
    REPOSITORY_CONFIGS,
    SDES,
    ConfigError,
    iter_fields,
    load_config_file,
    trained_fields,
    validate_config,
)
from scoresde.sde import VPSDE

SDE_NAMES = ("vp", "subvp", "ve")


def _config(sde: str = "vp"):
    return load_config_file(REPOSITORY_CONFIGS / "toy" / f"{sde}.py")


@pytest.mark.parametrize("sde", SDE_NAMES)
def test_the_toy_configs_set_every_field_and_build(sde):
    config = _config(sde)
    assert sorted(name for name, _ in iter_fields(config)) == sorted(FIELDS)
    assert config.sde.name == sde
    parts = pipeline.build(config)
    assert type(parts.sde) is SDES[sde]
    assert parts.sde.N == config.sde.N


def test_the_parts_train_and_score():
    config = _config("ve")
    config.model.hidden = 8
    parts = pipeline.build(config)
    x = torch.randn(4, 2)
    loss = parts.loss_fn(parts.model, x, torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert parts.score_fn(parts.model)(x, torch.full((4,), 0.5)).shape == x.shape
    # The estimated data std is the std of 10,000 points of 8gaussians: modes at radius
    # r = 4 / sqrt 2 give each coordinate variance r^2 / 2 = 4, the components 0.5^2 / 2, so
    # sqrt(4.125) = 2.031; the estimate's relative error is about 1 / sqrt(2 n) = 0.7%.
    assert parts.data_std == pytest.approx(4.125**0.5, rel=0.02)


@pytest.mark.parametrize(
    "ends", [{"eps": 0.01}, {"eps": None, "sigma_min": 0.03, "sigma_max": 20.0}]
)
def test_the_sample_stage_follows_the_grid_to_its_end(ends):
    """The process figure's times run from T to the grid's own end, given as a time or a noise
    level (``sigma_min``), and its last state is the samples before denoising."""
    config = _config()
    config.model.hidden = 8
    config.sampling.update(sampler="dpm_solver", num_steps=4, grid="log_snr", n_samples=16,
                           denoise=False, **ends)  # fmt: skip
    parts = pipeline.build(config)
    drawn = pipeline.sample(parts, parts.score_fn(parts.model))
    end = float(drawn.times[-1])
    if ends["eps"] is None:
        a, s = parts.sde.kernel_coefficients(torch.tensor([end], dtype=torch.float64))
        assert float(s / a) == pytest.approx(0.03, rel=1e-6)
    else:
        assert end == pytest.approx(0.01, rel=1e-12)
    torch.testing.assert_close(drawn.reverse[-1].float(), drawn.samples)


def test_the_model_and_the_streams_come_from_the_seed():
    first, second = pipeline.build(_config()), pipeline.build(_config())
    for a, b in zip(first.model.parameters(), second.model.parameters(), strict=True):
        assert a.equal(b)
    assert torch.equal(torch.rand(3, generator=first.generator("sample")),
                       torch.rand(3, generator=second.generator("sample")))  # fmt: skip
    draws = {name: torch.rand(3, generator=first.generator(name)) for name in pipeline.STREAMS}
    assert len({tuple(d.tolist()) for d in draws.values()}) == len(pipeline.STREAMS)
    other = _config()
    other.seed = 1
    assert not next(pipeline.build(other).model.parameters()).equal(next(first.model.parameters()))


def test_a_new_sde_is_one_registration():
    class SteeperVP(VPSDE):
        """A user's SDE with the VP fields (here VP itself, under another name)."""

    SDES.add("steeper_vp", SteeperVP)
    try:
        config = _config()
        config.sde.name = "steeper_vp"
        parts = pipeline.build(config)
        assert type(parts.sde) is SteeperVP and parts.sde.N == config.sde.N
    finally:
        del SDES["steeper_vp"]


# (sde, field, value, what the field accepts, as the message words it)
BAD_VALUES = [
    ("vp", "seed", -1, "an integer in [0, 18446744073709551615]"),
    ("vp", "data.name", "spiral", "one of '8gaussians'"),
    ("vp", "model.name", "convnet", "one of 'mlp', 'unet'"),
    ("vp", "model.ch_mult", (), "a non-empty tuple of integers >= 1"),
    ("vp", "model.ch_mult", (1, 0), "a non-empty tuple of integers >= 1"),
    ("vp", "model.attn_resolutions", (4, -1), "a tuple of integers >= 1"),
    ("vp", "model.dropout", 1.0, "a number in [0, 1)"),
    ("vp", "model.num_res_blocks", 0, "an integer >= 1"),
    ("vp", "data.path", "", "None or a path"),
    ("vp", "model.hidden", 0, "an integer >= 1"),
    ("vp", "model.embed_dim", 63, "an even integer >= 2"),
    ("vp", "model.parameterization", "noise", "one of 'score', 'epsilon'"),
    ("vp", "sde.name", "vpsde", "one of 'vp', 'subvp', 've'"),
    ("vp", "sde.beta_min", -1.0, "a number in (0, 1000]"),
    ("vp", "sde.beta_max", 1e308, "a number in (0, 1000]"),
    ("ve", "sde.sigma_max", 1e30, "a number in [1e-06, 10000.0]"),
    ("vp", "sde.N", 1, "an integer in [2, 100000]"),
    ("ve", "sde.schedule", "cosine", "'linear' for sde.name = 've' (it takes no schedule)"),
    ("vp", "training.batch_size", 0, "an integer >= 1"),
    ("vp", "training.n_iters", -5, "an integer >= 1"),
    ("vp", "training.lr", 0.0, "a number in (0, 1]"),
    ("vp", "training.lr", 1e308, "a number in (0, 1]"),
    ("vp", "training.ema_decay", 1.0, "a number in [0, 1)"),
    ("vp", "training.grad_clip", -1.0, "None or a finite number > 0"),
    ("vp", "training.weighting", "uniform", "one of 'score_sde', 'likelihood'"),
    ("vp", "sampling.sampler", "nope", "one of 'adaptive_sde'"),
    ("vp", "sampling.grid", "cubic", "None or one of 'uniform'"),
    ("vp", "sampling.predictor", "ddim", "None or one of 'euler_maruyama'"),
    ("vp", "sampling.predictor", "foo", "'reverse_diffusion'"),
    ("vp", "sampling.corrector", "foo", "'langevin'"),
    ("vp", "sampling.method", "rk45", "'dopri5'"),
    ("vp", "sampling.n_samples", 0, "an integer >= 2"),
    ("vp", "eval.trace", "approx", "'hutchinson'"),
    ("vp", "eval.atol", 1e-300, "a number in [1e-08, 1.0]"),
    ("vp", "eval.n_eval", 0, "an integer >= 2"),
]


def _set(config, field, value):
    group, _, name = field.rpartition(".")
    (config[group] if group else config)[name] = value


@pytest.mark.parametrize("sde, field, value, allowed", BAD_VALUES)
def test_a_bad_value_is_refused_naming_the_field_and_what_is_allowed(sde, field, value, allowed):
    config = _config(sde)
    _set(config, field, value)
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    message = str(err.value)
    assert err.value.field == field
    assert message.startswith(f"config.{field} must be ") and message.endswith(f"; got {value!r}")
    assert allowed in message and "\n" not in message


# Settings each valid alone that do not fit together: the part that refuses them (the SDE, the
# loss, the sampler, the likelihood) names the problem, in one line, before any work.
# (sde, {field: value}, the group named, text the message must contain)
BAD_COMBINATIONS = [
    ("vp", {"sde.beta_min": 30.0}, "sde", "beta_max must be > beta_min = 30.0"),
    ("ve", {"sde.sigma_min": 50.0}, "sde", "sigma_max must be > sigma_min = 50.0"),
    ("vp", {"training.eps": 1.5}, "training", "eps"),
    ("vp", {"training.loss": "smld"}, "training", "discrete_sigmas"),
    ("ve", {"training.loss": "ddpm"}, "training", "alphas_cumprod"),
    ("vp", {"training.weighting": "score_sde"}, "training", "importance_sampling"),
    ("vp", {"sampling.eps": 2.0}, "sampling", "eps"),
    ("vp", {"sampling.num_steps": 2000}, "sampling", "does not move"),
    ("vp", {"sampling.eps": 0.05}, "sampling", "does not move"),
    ("vp", {"sampling.predictor": "none", "sampling.corrector": "none"}, "sampling", "nothing"),
    ("vp", {"sde.N": 10}, "sde", "N must be an integer > beta_max = 20.0"),
    ("vp", {"eval.eps": 1.0}, "eval", "eps"),
    ("vp", {"sampling.snr": -0.1}, "sampling", "snr must be a finite number > 0; got -0.1"),
    ("vp", {"sampling.sampler": "ode", "sampling.rtol": 1e-300}, "sampling", "rtol must be"),
    ("vp", {"sampling.sampler": "ddim", "sampling.eta": -1.0}, "sampling", "eta must be"),
]


@pytest.mark.parametrize("sde, changes, group, text", BAD_COMBINATIONS)
def test_settings_that_do_not_fit_together_are_refused_before_any_work(sde, changes, group, text):
    config = _config(sde)
    # A valid start whose sampler follows the SDE's discrete chain.
    config.sampling.update(sampler="pc", predictor="reverse_diffusion", eps=None, num_steps=None)
    for field, value in changes.items():
        _set(config, field, value)
    with pytest.raises(ConfigError) as err:
        pipeline.build(config)
    message = str(err.value)
    assert err.value.field == group and message.startswith(f"config.{group}: ")
    assert text in message and "\n" not in message


# (field, value): each far beyond this machine's memory (the estimate is in check_memory).
TOO_LARGE = [
    ("eval.density_grid", 100_000),
    ("eval.n_eval", 10**12),
    ("sampling.n_samples", 2 * 10**12),
    ("model.hidden", 10**6),
    ("training.batch_size", 10**12),
]


@pytest.mark.parametrize("field, value", TOO_LARGE)
def test_sizes_that_cannot_fit_are_refused_naming_the_field(field, value):
    config = _config()
    _set(config, field, value)
    with pytest.raises(ConfigError) as err:
        pipeline.build(config)
    assert err.value.field == field
    assert str(err.value).startswith(f"config.{field} = {value} does not fit: ")


def test_the_exact_trace_check_counts_for_images_only():
    digits = load_config_file(REPOSITORY_CONFIGS / "digits" / "vp.py")
    digits.eval.n_check = 10**12
    with pytest.raises(ConfigError) as err:
        pipeline.build(digits)
    assert err.value.field == "eval.n_check" and "does not fit" in str(err.value)
    toy = _config()
    toy.eval.n_check = 10**12  # unused by a 2D run
    pipeline.build(toy)


def test_the_memory_estimate_scales_with_each_size():
    """At a small fictitious budget, each size alone crosses it where the formula says."""
    config = _config()
    parts = pipeline.build(config)
    params, act = pipeline._network_footprint(config, parts.sde, (2,))
    assert params == sum(p.numel() for p in parts.model.parameters())
    # batch * A * 4 bytes * 3: a budget just below and just above a batch of 1000, with every
    # other size small.
    config.eval.update(n_eval=2, density_grid=2)
    config.sampling.n_samples = 2
    config.training.batch_size = 1000
    need = 1000 * act * 4 * 3
    pipeline.check_memory(config, parts.sde, (2,), available=int(need * 1.01))
    with pytest.raises(ConfigError, match="training.batch_size"):
        pipeline.check_memory(config, parts.sde, (2,), available=int(need * 0.99))


def test_the_trained_fields_leave_out_bookkeeping():
    config = _config()
    fields = trained_fields(config)
    assert set(fields) == {"seed", "data", "model", "sde", "training"}
    assert "n_iters" not in fields["training"] and fields["training"]["lr"] == config.training.lr
    assert "sampling" not in fields and "eval" not in fields
    assert "lr_schedule" not in fields["training"]  # constant: as before the field existed
    config.training.lr_schedule = "cosine"  # every rate depends on n_iters
    cosine = trained_fields(config)["training"]
    assert cosine["lr_schedule"] == "cosine" and cosine["n_iters"] == config.training.n_iters


def test_an_unknown_or_missing_field_is_refused():
    config = _config()
    config.training.unlock()
    config.training.n_iter = 10
    expected = "config.training.n_iter is not a field; the fields of config.training are .*n_iters"
    with pytest.raises(ConfigError, match=expected):
        validate_config(config)
    config = _config()
    del config.sampling["snr"]
    with pytest.raises(ConfigError, match="config.sampling.snr is missing"):
        validate_config(config)


def test_a_config_file_must_exist_define_get_config_and_not_exit(tmp_path):
    with pytest.raises(ConfigError, match="existing Python file"):
        load_config_file(tmp_path / "nope.py")
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(ConfigError, match="get_config"):
        load_config_file(empty)
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config():\n    return 1 / 0\n")
    with pytest.raises(ConfigError, match="ZeroDivisionError"):
        load_config_file(broken)
    exits = tmp_path / "exits.py"
    exits.write_text("import sys\nsys.exit(3)\n")
    with pytest.raises(ConfigError, match=r"called sys.exit\(3\)"):
        load_config_file(exits)


@pytest.mark.parametrize("value", ["gpu", "cuda:x", "CPU", ""])
def test_a_bad_device_is_refused_naming_the_forms(value):
    config = _config()
    config.device = value
    with pytest.raises(ConfigError, match=r"config\.device must be 'auto', 'cpu', 'cuda' or"):
        pipeline.build(config)


def test_the_device_is_where_the_networks_live():
    config = _config()
    config.model.hidden = 8
    assert config.device == "cpu"  # the toy job stays on the CPU
    config.device = "auto"
    parts = pipeline.build(config)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert parts.device.type == expected
    assert next(parts.model.parameters()).device.type == expected
    digits = load_config_file(REPOSITORY_CONFIGS / "digits" / "vp.py")
    assert digits.device == "auto"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_a_cuda_device_the_machine_lacks_is_refused():
    config = _config()
    config.device = "cuda"
    with pytest.raises(ConfigError, match=r"config\.device must be 'cpu' or 'auto' on this "
                       r"machine \(no CUDA device is available\); got 'cuda'"):  # fmt: skip
        pipeline.build(config)


def test_a_cuda_index_beyond_the_machine_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    config = _config()
    config.device = "cuda:2"
    with pytest.raises(ConfigError, match=r"'cuda:N' with N < 2; got 'cuda:2'"):
        pipeline.run_device(config)
    config.device = "cuda:1"
    assert pipeline.run_device(config) == torch.device("cuda", 1)


def test_training_resumes_only_on_the_device_type_it_ran_on(tmp_path):
    from scoresde.checkpoint import Checkpoint
    from scoresde.rundir import RunDirectory, RunError, _check_resume_device

    trained_on_gpu = Checkpoint(
        step=1, model={}, ema={}, optimizer={}, rng={}, loop={"device": "cuda"}
    )
    with pytest.raises(RunError, match=r"trained on 'cuda' and this run's device is 'cpu'.*"
                       r"--config\.device=cuda"):  # fmt: skip
        _check_resume_device(trained_on_gpu, torch.device("cpu"), RunDirectory(tmp_path))
    _check_resume_device(trained_on_gpu, torch.device("cuda"), RunDirectory(tmp_path))
