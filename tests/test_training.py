"""The training loop: EMA maths, warm-up, clipping, convergence, exact resume, failures."""

import math
import re
import signal
from pathlib import Path

import pytest
import torch
from torch import nn

from scoresde.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
from scoresde.training import (
    EMA,
    ConfigMismatchError,
    NonFiniteLossError,
    TrainingInterrupted,
    TrainState,
    learning_rate,
    train,
    train_step,
)

QUIET = {"progress": False, "seed": 0}


class Scalar(nn.Module):
    """One parameter ``theta``; the data never enter the model."""

    def __init__(self, value: float = 0.0):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor([value], dtype=torch.float64))

    def forward(self) -> torch.Tensor:
        return self.theta


def linear_loss(model, batch, generator):
    """``L = a theta`` with slope ``a = batch[0]``: the gradient is exactly ``a``."""
    return (batch[0] * model()).sum()


def slopes(values):
    """A batch sampler handing out the slopes ``values`` in turn (one per update)."""
    it = iter(values)
    return lambda generator: torch.tensor([next(it)], dtype=torch.float64)


def tiny_net(seed: int = 0) -> nn.Module:
    """A noise-conditional-ish MLP with dropout, so the global RNG matters too."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 16), nn.SiLU(), nn.Dropout(0.2), nn.Linear(16, 2))


def gaussian_batch(generator):
    return torch.randn(32, 2, generator=generator) + torch.tensor([1.0, -2.0])


def denoising_loss(model, x, generator):
    """Predict the clean point from a noisy one; the noise is drawn from ``generator``."""
    noisy = x + 0.5 * torch.randn(x.shape, generator=generator)
    return (model(noisy) - x).square().mean()


def random_eval(ema_model, step):
    """Uses torch's global RNG on purpose: evaluation must not disturb training."""
    probe = torch.randn(8, 2)
    return {"probe_loss": (ema_model(probe) - probe).square().mean().item()}


# --- EMA --------------------------------------------------------------------------------------


def test_ema_matches_its_closed_form():
    d, model = 0.9, Scalar(2.0)
    ema = EMA(model, d)
    thetas = [0.5, -1.0, 3.0, 4.0, -2.5]
    for value in thetas:
        model.theta.data.fill_(value)
        ema.update(model)
    k = len(thetas)
    expected = d**k * 2.0 + (1 - d) * sum(d ** (k - i) * t for i, t in enumerate(thetas, 1))
    # float64 lerp of five numbers of order 1: agreement to a few ulps.
    assert ema.model.theta.item() == pytest.approx(expected, rel=1e-13, abs=1e-13)
    assert ema.num_updates == k


def test_ema_warmup_ramps_the_decay():
    model = Scalar(1.0)
    ema = EMA(model, 0.2, warmup=True)
    decays = []
    for value in [3.0, 5.0, 7.0]:
        decays.append(ema.current_decay())
        model.theta.data.fill_(value)
        ema.update(model)
    # d_n = min(decay, (1 + n) / (10 + n)): 1/10, then 2/11, then capped at 0.2 (3/12 > 0.2).
    assert decays == pytest.approx([0.1, 2 / 11, 0.2], rel=1e-15)
    d1, d2, d3 = decays
    expected = ((1.0 * d1 + (1 - d1) * 3.0) * d2 + (1 - d2) * 5.0) * d3 + (1 - d3) * 7.0
    assert ema.model.theta.item() == pytest.approx(expected, rel=1e-13)


def test_ema_copy_is_frozen_copies_buffers_and_loads_into_a_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = EMA(model, 0.5)
    assert not ema.model.training and not any(p.requires_grad for p in ema.model.parameters())
    model(torch.randn(16, 2))  # moves the running statistics
    ema.update(model)
    assert torch.equal(ema.model[1].running_mean, model[1].running_mean)
    other = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema.copy_to(other)
    assert all(
        torch.equal(a, b) for a, b in zip(other.parameters(), ema.model.parameters(), strict=True)
    )
    with pytest.raises(ValueError, match="EMA decay must be a number in \\[0, 1\\); got 1.0"):
        EMA(model, 1.0)


# --- optimisation -----------------------------------------------------------------------------


def test_learning_rate_values():
    assert [learning_rate(k, 0.4, 4) for k in (1, 2, 3, 4, 5, 100)] == pytest.approx(
        [0.1, 0.2, 0.3, 0.4, 0.4, 0.4], rel=1e-15
    )
    assert learning_rate(1, 0.4, 0) == 0.4
    # Cosine after 2 warm-up updates over n_iters = 6: c_k = (1 + cos(pi (k - 3) / 4)) / 2.
    cosine = [learning_rate(k, 0.4, 2, "cosine", 6) for k in range(1, 7)]
    half = 0.5 * (1 + math.cos(math.pi / 4))
    quarter = 0.5 * (1 + math.cos(3 * math.pi / 4))
    assert cosine == pytest.approx([0.2, 0.4, 0.4, 0.4 * half, 0.2, 0.4 * quarter], rel=1e-14)
    no_warmup = [learning_rate(k, 1.0, 0, "cosine", 4) for k in (1, 3, 4)]
    assert no_warmup == pytest.approx([1.0, 0.5, 0.5 * (1 + math.cos(0.75 * math.pi))], rel=1e-14)
    assert [learning_rate(k, 0.4, 2, "cosine", 6) for k in (7, 8, 100)] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("schedule", "n_iters", "message"),
    [
        ("linear", 10, "schedule must be one of 'constant', 'cosine'; got 'linear'"),
        ("cosine", 2, "the cosine schedule needs n_iters above warmup = 2; got n_iters = 2"),
        ("cosine", None, "the cosine schedule needs n_iters above warmup = 2; got n_iters = None"),
    ],
)
def test_learning_rate_refuses_a_bad_schedule(schedule, n_iters, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        learning_rate(1, 0.1, 2, schedule, n_iters)
    if n_iters is not None:
        with pytest.raises(ValueError, match=re.escape(message)):
            train(Scalar(), linear_loss, slopes([1.0]), n_iters=n_iters, lr=0.1, warmup=2,
                  lr_schedule=schedule, **QUIET)  # fmt: skip


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_loop_applies_the_learning_rate_schedule(schedule):
    # With a constant gradient g Adam's bias-corrected moments are exactly g and g^2, so update k
    # moves theta by -lr_k * g / (|g| + eps) = -lr_k (g = 0.5, eps = 1e-8: relative error 2e-8).
    lr, warmup, n = 0.1, 4, 9
    result = train(
        Scalar(0.0),
        linear_loss,
        slopes([0.5] * n),
        n_iters=n,
        lr=lr,
        warmup=warmup,
        lr_schedule=schedule,
        ema_decay=0.0,
        **QUIET,
    )
    rates = [learning_rate(k, lr, warmup, schedule, n) for k in range(1, n + 1)]
    assert result.model.theta.item() == pytest.approx(-sum(rates), rel=1e-7)
    assert result.ema_model.theta.item() == result.model.theta.item()  # decay 0: EMA = model
    thetas_before = [-sum(rates[: k - 1]) for k in range(1, n + 1)]
    assert result.losses == pytest.approx([0.5 * t for t in thetas_before], rel=1e-7)


def adam_two_steps(g1: float, g2: float, lr: float) -> float:
    """theta after two Adam updates from 0 with gradients g1, g2 (beta = 0.9, 0.999; eps = 1e-8)."""
    theta, m, v = 0.0, 0.0, 0.0
    for k, g in enumerate((g1, g2), 1):
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        theta -= lr * (m / (1 - 0.9**k)) / (math.sqrt(v / (1 - 0.999**k)) + 1e-8)
    return theta


def test_clipping_bounds_the_gradient_norm():
    # Gradients 100 then -1. Clipped at 1 they become 1 and -1 and the second Adam step reverses
    # the first; unclipped the first gradient dominates both moments and theta keeps going down.
    def run(grad_clip):
        result = train(
            Scalar(), linear_loss, slopes([100.0, -1.0]), n_iters=2, lr=0.1, grad_clip=grad_clip,
            **QUIET,
        )  # fmt: skip
        return result.model.theta.item()

    # torch scales by c / (||g|| + 1e-6): relative error 1e-6 in the clipped gradients.
    assert run(1.0) == pytest.approx(adam_two_steps(1.0, -1.0, 0.1), rel=1e-5)
    assert run(None) == pytest.approx(adam_two_steps(100.0, -1.0, 0.1), rel=1e-7)
    assert run(1.0) > -0.1 > run(None)


def test_loss_decreases_to_the_bayes_error_and_the_ema_model_learns():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 32), nn.SiLU(), nn.Linear(32, 2))
    result = train(
        model, denoising_loss, gaussian_batch, n_iters=300, lr=1e-2, ema_decay=0.95, **QUIET
    )
    # x ~ N(mu, I) seen through y = x + z / 2: the best denoiser E[x | y] has error variance
    # 1 * 0.25 / 1.25 = 0.2 per coordinate, the untrained net about |mu|^2 / 2 + 1 = 3.5.
    # A minibatch loss (64 squares of variance 2 * 0.2^2) has standard error 0.035, the mean of
    # 100 of them 0.0035: the lower bound is 3 standard errors below 0.2, the upper one leaves
    # 0.03 for the net's residual error.
    assert result.losses[0] > 1.5
    last = sum(result.losses[-100:]) / 100
    assert 0.19 < last < 0.23
    clean = torch.tensor([1.0, -2.0]) + torch.randn(
        1000, 2, generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        noisy = clean + 0.5 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(2))
        ema_loss = (result.ema_model(noisy) - clean).square().mean().item()
    assert 0.18 < ema_loss < 0.23  # 2000 squares: standard error 0.0063
    assert result.step == result.steps_run == 300 and result.checkpoint is None


def test_one_step_is_one_adam_update_and_a_bad_one_changes_nothing():
    # theta = 0, loss a * theta with a = 0.5: Adam's first update moves theta by exactly -lr
    # (bias-corrected moments g and g^2; eps = 1e-8 against |g| = 0.5: relative error 2e-8).
    state = TrainState.fresh(Scalar(0.0), lr=0.1, seed=0, ema_decay=0.5)
    loss = train_step(state, linear_loss, torch.tensor([0.5], dtype=torch.float64), lr=0.1,
                      grad_clip=None)  # fmt: skip
    assert loss == 0.0 and state.step == 1 and state.losses == [0.0]
    assert state.model.theta.item() == pytest.approx(-0.1, rel=1e-7)
    assert state.ema.model.theta.item() == pytest.approx(-0.05, rel=1e-7)  # halfway, decay 0.5
    before = {k: v.clone() for k, v in state.model.state_dict().items()}
    nan = torch.tensor([math.nan], dtype=torch.float64)
    with pytest.raises(NonFiniteLossError, match="step 2: the loss is nan"):
        train_step(state, linear_loss, nan, lr=0.1, grad_clip=None)
    assert state.step == 1 and state.losses == [0.0]
    assert all(torch.equal(v, state.model.state_dict()[k]) for k, v in before.items())


# --- resume -----------------------------------------------------------------------------------

RUN = {
    "lr": 3e-3,
    "warmup": 3,
    "ema_decay": 0.9,
    "ema_warmup": True,
    "checkpoint_every": 4,
    "eval_every": 5,
    "eval_fn": random_eval,
    "config": {"data": "gaussian", "sizes": (2, 16)},
    **QUIET,
}


def assert_same_state(a, b):
    """Model, EMA, optimizer and histories bitwise equal."""
    for x, y in [
        (a.model.state_dict(), b.model.state_dict()),
        (a.ema_model.state_dict(), b.ema_model.state_dict()),
        (a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]),
    ]:
        assert x.keys() == y.keys()
        for key in x:
            if isinstance(x[key], dict):
                assert all(torch.equal(x[key][k], y[key][k]) for k in x[key])
            else:
                assert torch.equal(x[key], y[key])
    assert a.losses == b.losses and a.evals == b.evals and a.step == b.step


def crashed_and_restarted(workdir: Path, update: int, **settings):
    """A 14-update run crashed (``KeyboardInterrupt``) during update ``update``, then restarted
    into a new network: the restart's result."""
    calls = []

    def crashing_loss(model, x, generator):
        calls.append(None)
        if len(calls) == update:
            raise KeyboardInterrupt
        return denoising_loss(model, x, generator)

    with pytest.raises(KeyboardInterrupt):
        train(tiny_net(), crashing_loss, gaussian_batch, n_iters=14, workdir=workdir, **settings)
    return train(
        tiny_net(5), denoising_loss, gaussian_batch, n_iters=14, workdir=workdir, **settings
    )


def test_resumed_runs_equal_the_uninterrupted_run_bitwise(tmp_path):
    straight = train(tiny_net(), denoising_loss, gaussian_batch, n_iters=14, **RUN)

    # Stopped after 6 updates (a final checkpoint at 6), then resumed to 14 into a new network.
    stopped = tmp_path / "stopped"
    first = train(tiny_net(), denoising_loss, gaussian_batch, n_iters=6, workdir=stopped, **RUN)
    assert first.checkpoint == stopped / "checkpoints" / "step_00000006"
    resumed = train(tiny_net(9), denoising_loss, gaussian_batch, n_iters=14, workdir=stopped, **RUN)
    assert resumed.steps_run == 8
    assert_same_state(straight, resumed)

    # Crashed during update 11 (last checkpoint at 8); the restart redoes updates 9 to 14.
    restarted = crashed_and_restarted(tmp_path / "crashed", 11, **RUN)
    assert restarted.steps_run == 6
    assert_same_state(straight, restarted)
    assert [e["step"] for e in straight.evals] == [5, 10]
    # Evaluating (which draws from the global RNG) leaves training unchanged.
    unevaluated = {**RUN, "eval_every": None, "eval_fn": None}
    assert train(tiny_net(), denoising_loss, gaussian_batch, n_iters=14, **unevaluated).losses == (
        straight.losses
    )


def test_ctrl_c_finishes_the_update_checkpoints_it_and_the_run_resumes_bitwise(tmp_path):
    straight = train(tiny_net(), denoising_loss, gaussian_batch, n_iters=14, **RUN)
    calls = []
    handler = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN under nohup

    def interrupted_at_7(model, x, generator):
        calls.append(None)
        if len(calls) == 7:  # Ctrl-C in the middle of update 7
            signal.raise_signal(signal.SIGINT)
        return denoising_loss(model, x, generator)

    with pytest.raises(TrainingInterrupted) as info:
        train(tiny_net(), interrupted_at_7, gaussian_batch, n_iters=14, workdir=tmp_path, **RUN)
    assert info.value.step == 7  # update 7 was finished, then saved (not a multiple of 4)
    assert info.value.checkpoint == tmp_path / "checkpoints" / "step_00000007"
    assert load_checkpoint(info.value.checkpoint).losses == straight.losses[:7]
    assert signal.getsignal(signal.SIGINT) is handler  # put back
    resumed = train(
        tiny_net(3), denoising_loss, gaussian_batch, n_iters=14, workdir=tmp_path, **RUN
    )
    assert resumed.steps_run == 7
    assert_same_state(straight, resumed)


def test_a_cosine_run_resumes_bitwise_and_refuses_another_length(tmp_path):
    cosine = {**RUN, "lr_schedule": "cosine", "warmup": 2}
    straight = train(tiny_net(), denoising_loss, gaussian_batch, n_iters=14, **cosine)
    # Crashed during update 7 (last checkpoint at 4), the cosine run resumes bitwise.
    resumed = crashed_and_restarted(tmp_path, 7, **cosine)
    assert resumed.steps_run == 10
    assert_same_state(straight, resumed)
    # Its rates were those of 14 updates, so training on to 20 would not be the 20-update run.
    before = snapshot(tmp_path)
    with pytest.raises(ConfigMismatchError) as info:
        train(tiny_net(), denoising_loss, gaussian_batch, n_iters=20, workdir=tmp_path, **cosine)
    assert info.value.differences == ["train.lr_decay_end: 14 in the checkpoint, now 20"]
    assert snapshot(tmp_path) == before


def test_a_different_config_is_refused_unless_allowed(tmp_path):
    train(tiny_net(), denoising_loss, gaussian_batch, n_iters=4, workdir=tmp_path, **RUN)
    before = snapshot(tmp_path)
    changed = {**RUN, "lr": 1e-3, "config": {"data": "moons", "sizes": [2, 16]}}
    with pytest.raises(ConfigMismatchError) as info:
        train(tiny_net(), denoising_loss, gaussian_batch, n_iters=8, workdir=tmp_path, **changed)
    assert info.value.differences == [
        "config.data: 'gaussian' in the checkpoint, now 'moons'",
        "train.lr: 0.003 in the checkpoint, now 0.001",
    ]
    assert snapshot(tmp_path) == before
    result = train(
        tiny_net(), denoising_loss, gaussian_batch, n_iters=8, workdir=tmp_path,
        allow_config_change=True, **changed,
    )  # fmt: skip
    assert result.steps_run == 4
    assert load_checkpoint(result.checkpoint).config["data"] == "moons"


# --- nothing lost -----------------------------------------------------------------------------


def snapshot(directory: Path) -> dict[str, bytes]:
    files = (p for p in directory.rglob("*") if p.is_file())
    return {str(p.relative_to(directory)): p.read_bytes() for p in files}


def test_a_corrupt_latest_checkpoint_stops_the_resume_and_stays_untouched(tmp_path):
    train(tiny_net(), denoising_loss, gaussian_batch, n_iters=8, workdir=tmp_path, **RUN)
    latest = tmp_path / "checkpoints" / "step_00000008"
    (latest / "model.safetensors").write_bytes(b"\x00" * 64)
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError, match="step_00000004") as info:
        train(tiny_net(), denoising_loss, gaussian_batch, n_iters=12, workdir=tmp_path, **RUN)
    assert info.value.path == latest / "model.safetensors"
    assert "nothing was changed" in str(info.value)
    assert snapshot(tmp_path) == before


def test_a_nonfinite_loss_stops_with_the_last_good_checkpoint_kept(tmp_path):
    calls = []

    def nan_at_7(model, x, generator):
        calls.append(None)
        loss = denoising_loss(model, x, generator)
        return loss * math.nan if len(calls) == 7 else loss

    with pytest.raises(NonFiniteLossError, match="step 7: the loss is nan") as info:
        train(tiny_net(), nan_at_7, gaussian_batch, n_iters=10, workdir=tmp_path, **RUN)
    good = tmp_path / "checkpoints" / "step_00000004"
    assert (info.value.step, info.value.checkpoint) == (7, good)
    assert math.isnan(info.value.loss) and info.value.grad_norm is None
    assert str(good) in str(info.value)
    assert list_checkpoints(tmp_path / "checkpoints") == [good]
    clean = train(tiny_net(), denoising_loss, gaussian_batch, n_iters=4, **RUN)
    kept = load_checkpoint(good)
    assert kept.losses == clean.losses
    assert all(torch.equal(v, kept.model[k]) for k, v in clean.model.state_dict().items())


def test_a_nonfinite_gradient_stops_training():
    def sqrt_at_zero(model, batch, generator):  # value 0, gradient 0 * inf = nan
        return torch.sqrt(model() * 0).sum()

    model = Scalar(1.0)
    with pytest.raises(NonFiniteLossError, match="step 1: the gradient norm is nan"):
        train(model, sqrt_at_zero, slopes([1.0]), n_iters=1, lr=0.1, **QUIET)
    assert model.theta.item() == 1.0  # the failed update was not applied


def test_keeps_the_last_k_checkpoints(tmp_path):
    result = train(
        Scalar(), linear_loss, slopes([0.5] * 10), n_iters=10, lr=0.1, workdir=tmp_path,
        checkpoint_every=2, keep=2, **QUIET,
    )  # fmt: skip
    names = [p.name for p in list_checkpoints(tmp_path / "checkpoints")]
    assert names == ["step_00000008", "step_00000010"]
    assert result.checkpoint == tmp_path / "checkpoints" / "step_00000010"


def test_progress_bar_shows_the_loss(capsys):
    train(Scalar(), linear_loss, slopes([0.5] * 3), n_iters=3, lr=0.1, seed=0, progress=True)
    assert "loss=" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_iters": 0}, "n_iters must be an integer >= 1; got 0"),
        ({"lr": -1.0}, "lr must be a finite number > 0; got -1.0"),
        ({"seed": 2**64}, "seed must be an integer in \\[0, 18446744073709551615\\]; got"),
        ({"grad_clip": 0.0}, "grad_clip must be a finite number > 0; got 0.0"),
        ({"keep": 0}, "keep must be an integer >= 1; got 0"),
        ({"eval_every": 5}, "eval_every and eval_fn go together"),
        ({"config": {"f": print}}, "config must be JSON-able"),
        ({"weight_decay": -0.1}, "weight_decay must be a finite number >= 0; got -0.1"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    args = {"n_iters": 2, "lr": 0.1, **QUIET, **kwargs}
    with pytest.raises(ValueError, match=message):
        train(Scalar(), linear_loss, slopes([0.5] * 2), **args)


def test_a_non_scalar_loss_is_refused():
    def per_sample(model, batch, generator):
        return model().expand(3)

    with pytest.raises(ValueError, match=r"scalar tensor; got \(3,\)"):
        train(Scalar(), per_sample, slopes([0.5]), n_iters=1, lr=0.1, **QUIET)
