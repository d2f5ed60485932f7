"""Data parallelism over 2 gloo processes (torchrun, CPU), sharded batches, bf16 training.

The 2-process tests launch ``tests/ddp_worker.py`` under ``python -m torch.distributed.run
--standalone`` (which picks a free port) twice: once for the checks (shared by several tests) and
once with a rank that kills itself.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import ddp_worker as worker
import numpy as np
import pytest
import torch
from torch import nn

from scoresde import distributed, pipeline, training
from scoresde.checkpoint import list_checkpoints, load_checkpoint
from scoresde.config import ConfigError, load_config_file
from scoresde.datasets import EpochBatches, Shard, get_dataset
from scoresde.run import main

ROOT = Path(__file__).resolve().parents[1]


def torchrun(mode: str, out: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node=2", str(ROOT / "tests" / "ddp_worker.py"), mode, str(out)]
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """The checks run by 2 processes: ``(out directory, [rank 0's report, rank 1's])``."""
    out = tmp_path_factory.mktemp("ddp")
    done = torchrun("checks", out)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_ddp_gradient_is_the_gradient_of_the_combined_batch(two):
    # float64, one reduction order apart: 1e-12 of gradients of size ~0.7. A sum instead of a
    # mean over the ranks would be off by the gradient itself.
    _, reports = two
    for r in reports:
        assert r["grad_scale"] > 0.1
        assert r["grad_error"] < 1e-12


def test_replicas_and_their_ema_stay_identical(two):
    _, (a, b) = two
    assert a["params"] == b["params"]
    assert a["ema"] == b["ema"]
    assert a["losses"] == b["losses"]  # the mean over the ranks, on every rank


def test_two_processes_match_one_process_on_the_same_global_batches(two, tmp_path):
    # The same 6 updates of 32 rows, split 16 + 16 over 2 processes or not at all; the loss has
    # no noise. Float64, so the reduction order leaves ~1e-16 per step; Adam's first steps divide
    # by sqrt(v) ~ |g|, keeping that relative, hence 1e-10 after 6 steps.
    out, _ = two
    one = training.train(
        worker.net(), worker.regression_loss, worker.sharded_batches(None),
        workdir=tmp_path, **worker.TRAIN,
    )  # fmt: skip
    assert one.step == worker.N_ITERS
    a = load_checkpoint(list_checkpoints(out / "train" / "checkpoints")[-1])
    b = load_checkpoint(list_checkpoints(tmp_path / "checkpoints")[-1])
    assert (a.loop["processes"], b.loop["processes"]) == (2, 1)
    np.testing.assert_allclose(a.losses, b.losses, rtol=1e-12)
    for name in a.model:
        torch.testing.assert_close(a.model[name], b.model[name], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(a.ema[name], b.ema[name], rtol=1e-10, atol=1e-12)
    for key, state in a.optimizer["state"].items():
        other = b.optimizer["state"][key]
        torch.testing.assert_close(state["exp_avg_sq"], other["exp_avg_sq"], rtol=1e-10, atol=0)


def test_only_rank_0_writes(two):
    out, (a, b) = two
    assert b["writes"] == []
    assert any("checkpoints" in w for w in a["writes"])  # the hook sees rank 0's writes
    assert any("metrics.json" in w for w in a["writes"])
    assert a["cli_status"] == b["cli_status"] == 0
    assert (out / "cli" / "samples.npy").is_file() and (out / "cli" / "density.png").is_file()


def test_each_rank_draws_its_own_stream_and_its_share_of_each_epoch(two):
    _, (a, b) = two
    assert a["generator_seed"] == worker.SEED  # rank 0's is the one-process run's
    assert b["generator_seed"] not in (worker.SEED, a["generator_seed"])
    assert len(a["toy_batch"]) == len(b["toy_batch"]) == worker.GLOBAL_BATCH // 2
    assert a["toy_batch"] != b["toy_batch"]
    whole = EpochBatches(worker.data(), worker.GLOBAL_BATCH)
    for k, (ra, rb) in enumerate(zip(a["rows"], b["rows"], strict=True)):
        assert ra + rb == whole.indices(worker.SEED, k).tolist()  # one permutation, split


def test_gather_restores_the_order_of_uneven_shards(two):
    _, reports = two
    assert [r["gathered"] for r in reports] == [[0, 1, 2, 3, 4]] * 2


def test_sharded_likelihood_matches_one_process(two):
    # A fixed-step (Euler) likelihood makes each point's log-density independent of the others
    # in its batch, so 2 shards give one process's numbers up to float32 round-off.
    out, _ = two
    metrics = json.loads((out / "cli" / "metrics.json").read_text())
    config = load_config_file(ROOT / "configs" / "toy" / "vp.py")
    from scoresde.run import apply_overrides

    apply_overrides(config, [tuple(a[len("--config.") :].split("=")) for a in worker.CLI[1:]])
    parts = pipeline.build(config)
    checkpoint = load_checkpoint(list_checkpoints(out / "cli" / "checkpoints")[-1])
    trained = pipeline.load_trained(parts, checkpoint)
    measured = pipeline.evaluate(parts, parts.score_fn(trained.ema_model))
    assert metrics["likelihood"]["nll"] == pytest.approx(measured.likelihood["nll"], rel=1e-5)
    assert metrics["likelihood"]["nfe"] == measured.likelihood["nfe"]


def test_the_likelihood_curve_is_sharded_and_matches_one_process(two):
    # Each rank computes its share of the curve's 5 points (2 and 3) and the shares are gathered:
    # the last point is one process's likelihood of the same points under the final EMA model
    # (exact trace, Euler: no noise, each point independent of the others).
    out, reports = two
    evals = json.loads((out / "cli" / "metrics.json").read_text())["training"]["evals"]
    assert [e["step"] for e in evals] == [6, 12]
    # after build's one-point check of the settings, the curve's two points: rank 0 solves 2
    # points each time, rank 1 the other 3 (then each its share of the final 20 and of the grid)
    assert [r["likelihood_rows"] for r in reports] == [[1, 2, 2, 10, 8], [1, 3, 3, 10, 8]]
    config = load_config_file(ROOT / "configs" / "toy" / "vp.py")
    from scoresde.run import apply_overrides

    apply_overrides(config, [tuple(a[len("--config.") :].split("=")) for a in worker.CLI[1:]])
    parts = pipeline.build(config)
    checkpoint = load_checkpoint(list_checkpoints(out / "cli" / "checkpoints")[-1])
    ema = pipeline.load_trained(parts, checkpoint).ema_model
    test = parts.dataset.split("test", config.training.batch_size, parts.generator("eval"))
    one = pipeline._held_out_likelihood(parts, ema, test, seed=0)
    assert evals[-1]["test_nll"] == pytest.approx(one["test_nll"], rel=1e-5)


def test_one_process_resumes_a_two_process_run(two, tmp_path):
    out, _ = two
    workdir = tmp_path / "cli"
    os.system(f"cp -r {out / 'cli'} {workdir}")
    argv = [f"--workdir={workdir}", "--mode=train", *worker.CLI[1:]]
    argv[2] = "--config.training.n_iters=18"
    assert main(argv) == 0
    before = load_checkpoint(list_checkpoints(out / "cli" / "checkpoints")[-1])
    after = load_checkpoint(list_checkpoints(workdir / "checkpoints")[-1])
    assert (before.step, after.step, after.loop["processes"]) == (12, 18, 1)
    assert after.losses[:12] == before.losses


def test_a_killed_rank_ends_the_job_and_leaves_the_last_good_checkpoint(tmp_path):
    began = time.perf_counter()
    done = torchrun("kill", tmp_path, timeout=90)
    assert done.returncode != 0
    assert time.perf_counter() - began < 60  # nobody waits for the dead rank
    assert "[rank0]: Traceback" not in done.stderr  # rank 0 stops with one line, or is stopped
    kept = list_checkpoints(tmp_path / "cli" / "checkpoints")
    assert [p.name for p in kept] == ["step_00000003", "step_00000006"]  # killed in update 7
    assert load_checkpoint(kept[-1]).step == 6


# -- in one process ------------------------------------------------------------------------------


def test_a_world_of_one_is_a_plain_process():
    assert not distributed.active()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    x = torch.arange(3)
    assert distributed.gather(x) is x
    assert distributed.shard(5) == slice(0, 5)
    assert distributed.wrap(nn.Linear(2, 2)) is None
    assert distributed.rank_seed(11) == 11 and distributed.rank_seed(11, 1) != 11
    assert distributed.run_on_main(lambda: 3) == 3


def test_shards_split_every_global_batch():
    x = torch.arange(40.0).reshape(20, 2)
    g = torch.Generator().manual_seed(5)
    whole = EpochBatches(x, 8)
    shards = [EpochBatches(x, 8, shard=Shard(r, 4, 5)) for r in range(4)]
    for _ in range(5):  # past an epoch of 2 batches
        parts = [s(torch.Generator().manual_seed(99)) for s in shards]  # the seed is shard.seed
        assert torch.equal(torch.cat(parts), whole(g))
    toy = get_dataset("moons").batches(8, shard=Shard(1, 4, 5))
    assert toy(torch.Generator().manual_seed(0)).shape == (2, 2)
    labelled = get_dataset("8gaussians").batches(8, labels=True, shard=Shard(1, 4, 5))
    batch = labelled(torch.Generator().manual_seed(0))
    assert batch.x.shape == (2, 2) and batch.y.shape == (2,)
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        EpochBatches(x, 6, shard=Shard(0, 4, 5))


def test_a_batch_that_does_not_split_is_refused(monkeypatch):
    config = load_config_file(ROOT / "configs" / "toy" / "vp.py")
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    with pytest.raises(ConfigError) as err:
        pipeline.build(config)
    assert str(err.value) == (
        "config.training.batch_size must be a multiple of the number of processes (3); got 512"
    )


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_bf16_autocasts_the_forward_pass_and_keeps_float32_weights(precision):
    seen = []

    def loss_fn(model, x, generator):
        out = model(x)
        seen.append(out.dtype)
        return ((out - x.flip(1)) ** 2).mean()

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 32), nn.SiLU(), nn.Linear(32, 2))
    batches = get_dataset("8gaussians").batches(64)
    result = training.train(
        net, loss_fn, batches, n_iters=60, lr=1e-2, seed=0, progress=False, precision=precision
    )
    expected = torch.bfloat16 if precision == "bf16" else torch.float32
    assert set(seen) == {expected}
    assert all(np.isfinite(result.losses))
    assert np.mean(result.losses[-10:]) < 0.5 * np.mean(result.losses[:10])  # it learns
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert all(p.dtype == torch.float32 for p in result.ema_model.parameters())
    moments = [v for s in result.optimizer.state.values() for v in s.values() if v.ndim]
    assert moments and all(m.dtype == torch.float32 for m in moments)


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of 'fp32', 'bf16'; got 'fp16'"):
        training.train(
            nn.Linear(2, 2), lambda m, x, g: m(x).sum(), lambda g: torch.zeros(1, 2),
            n_iters=1, lr=1e-3, seed=0, precision="fp16", progress=False,
        )  # fmt: skip
