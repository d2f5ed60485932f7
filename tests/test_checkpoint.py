"""Checkpoints: exact round trip, loading without pickle, atomic writes, corruption, keep-last-k."""

import hashlib
import io
import json
import pickle
from pathlib import Path

import pytest
import safetensors.torch
import torch
from torch import nn

from scoresde import checkpoint as ckpt_module
from scoresde.checkpoint import (
    Checkpoint,
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)


def make_checkpoint(step: int) -> Checkpoint:
    """A small but real checkpoint: a model with a buffer and tied weights, and Adam's state."""
    torch.manual_seed(step)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 4))
    model[2].bias = model[0].bias  # tied: safetensors refuses shared memory unless copied
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(5, 3)).square().mean().backward()
    optimizer.step()
    generator = torch.Generator().manual_seed(step)
    return Checkpoint(
        step=step,
        model=model.state_dict(),
        ema={k: v * 0.5 if v.is_floating_point() else v for k, v in model.state_dict().items()},
        optimizer=optimizer.state_dict(),
        rng={"generator": generator.get_state(), "torch": torch.get_rng_state()},
        config={"training": {"lr": 1e-3, "betas": [0.9, 0.999]}, "name": "toy"},
        losses=[1.5, 0.1 + 0.2, 1e-30],
        evals=[{"step": step, "nll": 2.25}],
        loop={"ema_updates": step},
    )


def assert_same(a, b) -> None:
    """Nested equality of state dicts, with tensors compared bitwise (dtype included)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        assert a == b


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` with its bytes, to check that nothing changed."""
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


def test_round_trip_is_exact(tmp_path):
    original = make_checkpoint(7)
    path = save_checkpoint(tmp_path, original)
    assert path == tmp_path / "step_00000007"
    loaded = load_checkpoint(path)
    for field in ("model", "ema", "optimizer", "rng"):
        assert_same(getattr(original, field), getattr(loaded, field))
    assert (loaded.step, loaded.config, loaded.losses, loaded.evals, loaded.loop) == (
        original.step,
        original.config,
        original.losses,
        original.evals,
        original.loop,
    )


def test_each_file_loads_with_safe_readers_alone(tmp_path):
    original = make_checkpoint(3)
    path = save_checkpoint(tmp_path, original)
    assert sorted(p.name for p in path.iterdir()) == [
        "ema.safetensors",
        "model.safetensors",
        "optimizer.pt",
        "rng.safetensors",
        "state.json",
    ]
    assert_same(safetensors.torch.load_file(path / "model.safetensors"), original.model)
    assert_same(safetensors.torch.load_file(path / "ema.safetensors"), original.ema)
    assert_same(safetensors.torch.load_file(path / "rng.safetensors"), original.rng)
    assert_same(torch.load(path / "optimizer.pt", weights_only=True), original.optimizer)
    assert json.loads((path / "state.json").read_text())["config"] == original.config


CALLED = []


def _record_call() -> list:
    CALLED.append(True)
    return []


class CodeOnLoad:
    """Unpickling this object would call ``_record_call``."""

    def __reduce__(self):
        return (_record_call, ())


def test_a_pickle_that_runs_code_is_refused_not_run(tmp_path):
    path = save_checkpoint(tmp_path, make_checkpoint(1))
    hostile = pickle.dumps({"state": CodeOnLoad()}, protocol=2)
    buffer = io.BytesIO()
    torch.save({"state": CodeOnLoad(), "param_groups": []}, buffer)
    for payload in (buffer.getvalue(), hostile):
        (path / "optimizer.pt").write_bytes(payload)
        # Record the new file's size and digest, so that only its content is at fault.
        state = json.loads((path / "state.json").read_text())
        state["files"]["optimizer.pt"] = {
            "bytes": len(payload),
            "sha256": hashlib.sha256(payload).hexdigest(),
        }
        state["sha256"] = ckpt_module._state_digest(state)
        (path / "state.json").write_text(json.dumps(state))
        with pytest.raises(CheckpointError, match="weights_only") as info:
            load_checkpoint(path)
        assert info.value.path == path / "optimizer.pt"
    assert CALLED == []


@pytest.mark.parametrize("killed", [False, True], ids=["exception", "killed"])
@pytest.mark.parametrize("where", ["write", "replace"])
def test_a_crash_mid_save_leaves_the_previous_checkpoint_latest_and_intact(
    tmp_path, monkeypatch, where, killed
):
    first = save_checkpoint(tmp_path, make_checkpoint(5))
    before = snapshot(tmp_path)
    if where == "replace":

        def crash(*args):
            raise OSError("simulated crash in os.replace")

        monkeypatch.setattr(ckpt_module.os, "replace", crash)
    else:
        real_write = ckpt_module._write_synced

        def crash(path, data):  # write half of the second file, then die
            if path.name == "ema.safetensors":
                real_write(path, data[: len(data) // 2])
                raise OSError("simulated crash mid-write")
            real_write(path, data)

        monkeypatch.setattr(ckpt_module, "_write_synced", crash)
    if killed:  # a killed process runs no clean-up code
        monkeypatch.setattr(ckpt_module.shutil, "rmtree", lambda *args, **kwargs: None)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(tmp_path, make_checkpoint(10))
    monkeypatch.undo()

    assert latest_checkpoint(tmp_path) == first
    assert load_checkpoint(first).step == 5
    after = snapshot(tmp_path)
    assert {name: after[name] for name in before} == before
    leftovers = after.keys() - before.keys()
    assert bool(leftovers) == killed  # an orderly failure removes its temporary directory
    assert all(name.startswith(".tmp-step_00000010-") for name in leftovers)
    save_checkpoint(tmp_path, make_checkpoint(10))  # ... and the next save removes a killed one's
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000005", "step_00000010"]


def _truncate(path: Path) -> None:
    (path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes()[:-7])


def _flip_byte(path: Path) -> None:
    data = bytearray((path / "ema.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (path / "ema.safetensors").write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "file", "reason"),
    [
        (_truncate, "model.safetensors", "truncated"),
        (_flip_byte, "ema.safetensors", "SHA-256"),
        (lambda p: (p / "optimizer.pt").unlink(), "optimizer.pt", "missing"),
        (lambda p: (p / "state.json").unlink(), "state.json", "incomplete"),
        (lambda p: (p / "state.json").write_text('{"format": 1, "st'), "state.json", "JSON"),
        (lambda p: (p / "state.json").write_text('{"format": 99}'), "state.json", "format"),
    ],
)
def test_damage_is_reported_with_the_file_and_what_is_wrong(tmp_path, damage, file, reason):
    path = save_checkpoint(tmp_path, make_checkpoint(4))
    damage(path)
    with pytest.raises(CheckpointError, match=reason) as info:
        load_checkpoint(path)
    assert info.value.path == path / file
    assert file in str(info.value)


def _edit_state(path: Path, change, rehash: bool) -> None:
    state = json.loads((path / "state.json").read_text())
    change(state)
    if rehash:  # a careful editor: only the content's own checks can catch it
        state["sha256"] = ckpt_module._state_digest(state)
    (path / "state.json").write_text(json.dumps(state))


@pytest.mark.parametrize(
    ("change", "rehash", "reason"),
    [
        (lambda s: s["losses"].__setitem__(0, 0.5), False, "the file was edited"),
        (lambda s: s["config"]["training"].update(lr=1.0), False, "the file was edited"),
        (lambda s: s.update(step="4"), True, "'step' must be an integer; got '4'"),
        (lambda s: s.update(losses={"0": 1.5}), True, "'losses' must be a list"),
        (lambda s: s["losses"].append("nan"), True, "'losses' must be a list of numbers"),
        (lambda s: s.update(loop=[]), True, "'loop' must be an object"),
        (lambda s: s.pop("sha256"), False, "missing entries ['sha256']"),
    ],
)
def test_an_edited_state_file_is_refused(tmp_path, change, rehash, reason):
    path = save_checkpoint(tmp_path, make_checkpoint(4))
    _edit_state(path, change, rehash)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert info.value.path == path / "state.json" and reason in str(info.value)


def test_a_users_own_temporary_directory_is_kept(tmp_path):
    mine = tmp_path / ".tmp-mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    crashed = tmp_path / ".tmp-step_00000003-0123456789ab"  # what a killed save leaves
    crashed.mkdir()
    save_checkpoint(tmp_path, make_checkpoint(4), keep=1)
    save_checkpoint(tmp_path, make_checkpoint(5), keep=1)
    assert (mine / "notes.txt").read_text() == "keep" and not crashed.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-mine", "step_00000005"]


def test_keep_last_k_and_never_overwrite(tmp_path):
    for step in range(1, 6):
        save_checkpoint(tmp_path, make_checkpoint(step), keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000004", "step_00000005"]
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError, match="refusing to overwrite"):
        save_checkpoint(tmp_path, make_checkpoint(5))
    assert snapshot(tmp_path) == before


def test_latest_is_by_step_number_not_by_name(tmp_path):
    for step in (99_999_999, 100_000_000, 7):
        save_checkpoint(tmp_path, make_checkpoint(step))
    assert latest_checkpoint(tmp_path) == tmp_path / "step_100000000"
    assert latest_checkpoint(tmp_path / "absent") is None


def test_bad_arguments_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="keep must be None or an integer >= 1; got 0"):
        save_checkpoint(tmp_path, make_checkpoint(1), keep=0)
    bad = make_checkpoint(2)
    bad.config = {"x": {1, 2}}
    with pytest.raises(ValueError, match="JSON-able"):
        save_checkpoint(tmp_path, bad)
    assert list_checkpoints(tmp_path) == []
