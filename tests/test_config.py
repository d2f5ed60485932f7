"""Config files and their validation: every field known, every bad value named."""

import pytest

from scoresde.config import (
    FIELDS,
    REPOSITORY_CONFIGS,
    ConfigError,
    build_loss,
    build_model,
    build_score_fn,
    build_sde,
    iter_fields,
    load_config_file,
    validate_config,
)

SDE_NAMES = ("vp", "subvp", "ve")


def _config(sde: str = "vp"):
    return load_config_file(REPOSITORY_CONFIGS / "toy" / f"{sde}.py")


@pytest.mark.parametrize("sde", SDE_NAMES)
def test_the_toy_configs_set_every_field_and_validate(sde):
    config = _config(sde)
    assert sorted(name for name, _ in iter_fields(config)) == sorted(FIELDS)
    assert config.sde.name == sde
    validate_config(config)
    built = build_sde(config)
    assert type(built).__name__ == {"vp": "VPSDE", "subvp": "SubVPSDE", "ve": "VESDE"}[sde]


def test_a_config_builds_a_model_whose_loss_and_score_run():
    import torch

    config = _config("ve")
    config.model.hidden = 8
    sde = build_sde(config)
    model = build_model(config)
    x = torch.randn(4, 2)
    loss = build_loss(config, sde)(model, x, torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert build_score_fn(config, sde, model)(x, torch.full((4,), 0.5)).shape == x.shape


def test_the_model_is_initialised_from_the_seed():
    first, second = build_model(_config()), build_model(_config())
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert a.equal(b)
    other = _config()
    other.seed = 1
    assert not next(build_model(other).parameters()).equal(next(first.parameters()))


# (sde, field, value, text the message must contain besides the field name and the value)
BAD_VALUES = [
    ("vp", "seed", -1, "integer >= 0"),
    ("vp", "data.name", "spiral", "'8gaussians'"),
    ("vp", "model.name", "resnet", "'mlp'"),
    ("vp", "model.hidden", 0, "integer >= 1"),
    ("vp", "model.embed_dim", 63, "even integer"),
    ("vp", "model.parameterization", "noise", "'epsilon'"),
    ("vp", "sde.name", "vpsde", "'subvp'"),
    ("vp", "sde.beta_min", -1.0, "> 0"),
    ("vp", "sde.N", 1, "integer >= 2"),
    ("ve", "sde.schedule", "cosine", "'linear' for sde.name = 've'"),
    ("vp", "training.batch_size", 0, "integer >= 1"),
    ("vp", "training.n_iters", -5, "integer >= 1"),
    ("vp", "training.lr", 0.0, "> 0"),
    ("vp", "training.ema_decay", 1.0, "[0, 1)"),
    ("vp", "training.weighting", "uniform", "'likelihood'"),
    ("vp", "sampling.sampler", "nope", "'pc'"),
    ("vp", "sampling.predictor", "foo", "'reverse_diffusion'"),
    ("vp", "sampling.corrector", "foo", "'langevin'"),
    ("vp", "sampling.snr", -0.1, "> 0"),
    ("vp", "sampling.method", "rk45", "'dopri5'"),
    ("vp", "sampling.n_samples", 0, "integer >= 2"),
    ("vp", "eval.trace", "approx", "'hutchinson'"),
    ("vp", "eval.n_eval", 0, "integer >= 2"),
]


def _set(config, field, value):
    group, _, name = field.rpartition(".")
    (config[group] if group else config)[name] = value


@pytest.mark.parametrize("sde, field, value, text", BAD_VALUES)
def test_a_bad_value_is_rejected_naming_the_field_and_what_is_allowed(sde, field, value, text):
    config = _config(sde)
    _set(config, field, value)
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    message = str(err.value)
    assert err.value.field == field and f"config.{field}: " in message and repr(value) in message
    assert text in message and "\n" not in message


# Settings each valid alone that do not fit together: the part that refuses them (the SDE, the
# loss, the sampler, the likelihood) names the problem, in one line, before any work.
# (sde, {field: value}, the group named, text the message must contain)
BAD_COMBINATIONS = [
    ("vp", {"sde.beta_min": 30.0}, "sde", "beta_max must be > beta_min = 30.0"),
    ("ve", {"sde.sigma_min": 50.0}, "sde", "sigma_max must be > sigma_min = 50.0"),
    ("vp", {"training.eps": 1.5}, "training", "eps"),
    ("vp", {"training.loss": "smld"}, "training", "discrete_sigmas"),
    ("vp", {"training.weighting": "score_sde"}, "training", "importance_sampling"),
    ("vp", {"sampling.eps": 2.0}, "sampling", "eps"),
    ("vp", {"sampling.num_steps": 2000}, "sampling", "does not move"),
    ("vp", {"sampling.eps": 0.05}, "sampling", "does not move"),
    ("vp", {"sampling.predictor": "none", "sampling.corrector": "none"}, "sampling", "nothing"),
    ("vp", {"sde.N": 10}, "sde", "N must be an integer > beta_max = 20.0"),
    ("vp", {"eval.eps": 1.0}, "eval", "eps"),
]


@pytest.mark.parametrize("sde, changes, group, text", BAD_COMBINATIONS)
def test_settings_that_do_not_fit_together_are_rejected_before_any_work(sde, changes, group, text):
    config = _config(sde)
    # A valid start whose sampler follows the SDE's discrete chain.
    config.sampling.update(sampler="pc", predictor="reverse_diffusion", eps=None)
    for field, value in changes.items():
        _set(config, field, value)
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    message = str(err.value)
    assert err.value.field == group and message.startswith(f"config.{group}: ")
    assert text in message and "\n" not in message


def test_an_unknown_or_missing_field_is_rejected():
    config = _config()
    config.training.unlock()
    config.training.n_iter = 10
    with pytest.raises(ConfigError, match="training.n_iter: .*no such field.*n_iters"):
        validate_config(config)
    config = _config()
    del config.sampling["snr"]
    with pytest.raises(ConfigError, match="sampling.snr: .*missing"):
        validate_config(config)


def test_a_config_file_must_exist_and_define_get_config(tmp_path):
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
