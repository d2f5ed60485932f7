"""Checkpoints on disk: atomic writes, integrity checks, loading without executing code.

A checkpoint directory holds every training checkpoint of a run as one sub-directory per step::

    <directory>/
        step_00001000/
            model.safetensors   model state dict (parameters and buffers)
            ema.safetensors     EMA model state dict (the weights to sample with)
            optimizer.pt        optimizer state dict, read with torch.load(weights_only=True)
            rng.safetensors     random-number-generator states as uint8 tensors
            state.json          step, config, loss history, evaluations, loop state, the size
                                and SHA-256 of each file above, and the SHA-256 of all that
        step_00002000/
            ...

Loading executes no code from the files: tensors are stored with safetensors, the rest is JSON, and
the optimizer state (nested dicts of tensors and numbers) is written with ``torch.save`` and read
back with ``torch.load(weights_only=True)``, whose restricted unpickler builds only tensors and
plain containers and refuses anything else.

A checkpoint is written into a temporary directory ``.tmp-step_<step>-<12 hex digits>`` beside its
final place, each file is fsynced, and the directory is then renamed into place with
:func:`os.replace`, an atomic operation: a crash mid-write leaves a stray temporary directory
(removed by the next save; other ``.tmp-*`` names are left alone), never a partial ``step_*``
directory. A ``step_*`` directory damaged later (truncated, edited, half copied) is detected by
:func:`load_checkpoint` through the sizes and SHA-256 digests in ``state.json``, and an edit of
``state.json`` itself (the loss history, the config) through the digest of its own content.

Saving never overwrites: a checkpoint for a step that already exists is refused. One process writes
to a checkpoint directory at a time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor

from scoresde.validation import integer, optional

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "list_checkpoints",
    "step_of",
]

FORMAT_VERSION = 2
_STEP_DIR = re.compile(r"step_(\d+)")
_TMP_DIR = re.compile(r"\.tmp-step_\d+-[0-9a-f]{12}")
_STATE_FILE = "state.json"
_TENSOR_FILES = ("model.safetensors", "ema.safetensors", "optimizer.pt", "rng.safetensors")


class CheckpointError(Exception):
    """A checkpoint that cannot be read or written: missing, incomplete, corrupt, or already there.

    Attributes:
        path: the file or directory at fault.
        reason: what is wrong with it.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"checkpoint {self.path}: {reason}")


@dataclasses.dataclass
class Checkpoint:
    """Everything needed to resume training, and to sample from the EMA weights.

    Attributes:
        step: number of optimizer updates done.
        model: the model's state dict.
        ema: the EMA model's state dict.
        optimizer: the optimizer's state dict.
        rng: random-number-generator states, name -> uint8 tensor (``torch.Generator.get_state()``).
        config: the run's configuration, a JSON-able dict, or ``None``.
        losses: the training loss of every update so far, ``losses[k - 1]`` for update ``k``.
        evals: the periodic evaluations so far, each a dict with a ``"step"`` entry.
        loop: the training loop's own JSON-able state (its hyper-parameters, EMA counters, ...).
    """

    step: int
    model: dict[str, Tensor]
    ema: dict[str, Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, Tensor]
    config: dict[str, Any] | None = None
    losses: list[float] = dataclasses.field(default_factory=list)
    evals: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    loop: dict[str, Any] = dataclasses.field(default_factory=dict)


def list_checkpoints(directory: str | os.PathLike[str]) -> list[Path]:
    """The ``step_*`` checkpoint directories in ``directory``, oldest (smallest step) first.

    Temporary directories of unfinished writes are not listed. A missing ``directory`` has none.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and _STEP_DIR.fullmatch(p.name)]
    return sorted(found, key=step_of)


def latest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The checkpoint with the largest step in ``directory``, or ``None`` when there is none.

    Every ``step_*`` directory was complete when it was renamed into place; whether it is still
    intact is checked by :func:`load_checkpoint`, which raises rather than fall back to an older
    one.
    """
    checkpoints = list_checkpoints(directory)
    return checkpoints[-1] if checkpoints else None


def save_checkpoint(
    directory: str | os.PathLike[str], checkpoint: Checkpoint, *, keep: int | None = None
) -> Path:
    """Write ``checkpoint`` atomically to ``directory/step_<step>`` and keep the newest ``keep``.

    Arguments:
        directory: the checkpoint directory, created if missing.
        checkpoint: what to write; ``config``, ``losses``, ``evals`` and ``loop`` must be JSON-able.
        keep: how many checkpoints to keep, newest first (``None`` keeps all); older ones are
            deleted after the new one is in place.

    Returns:
        The path of the new checkpoint directory.

    Raises:
        CheckpointError: a checkpoint for this step already exists (it is never overwritten).
        ValueError: ``keep`` or ``checkpoint.step`` is invalid, or the JSON part is not JSON-able.
    """
    optional(integer(1)).check("keep", keep)
    step = integer(0).check("checkpoint.step", checkpoint.step)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step_{step:08d}"
    if final.exists():
        raise CheckpointError(final, "already exists; refusing to overwrite it")
    _remove_stale_temporaries(directory)

    payload = {
        "model.safetensors": safetensors.torch.save(_cpu_copy(checkpoint.model)),
        "ema.safetensors": safetensors.torch.save(_cpu_copy(checkpoint.ema)),
        "optimizer.pt": _torch_bytes(checkpoint.optimizer),
        "rng.safetensors": safetensors.torch.save(_cpu_copy(checkpoint.rng)),
    }
    state = {
        "format": FORMAT_VERSION,
        "step": step,
        "config": checkpoint.config,
        "losses": checkpoint.losses,
        "evals": checkpoint.evals,
        "loop": checkpoint.loop,
        "files": {
            name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for name, data in payload.items()
        },
    }
    try:
        state["sha256"] = _state_digest(state)
        state_bytes = json.dumps(state, indent=1, allow_nan=False).encode()
    except (TypeError, ValueError) as err:
        raise ValueError(f"checkpoint config/losses/evals/loop must be JSON-able: {err}") from err
    payload[_STATE_FILE] = state_bytes

    tmp = _make_temporary(directory, final.name)
    try:
        for name, data in payload.items():
            _write_synced(tmp / name, data)
        _fsync_directory(tmp)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_directory(directory)
    if keep is not None:
        for old in list_checkpoints(directory)[:-keep]:
            _remove_atomically(old)
    return final


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read and verify the checkpoint directory ``path``; nothing in it is executed or changed.

    Every file listed in ``state.json`` must be present with the recorded size and SHA-256.
    Tensors are returned on the CPU.

    Raises:
        CheckpointError: naming the file at fault and what is wrong with it (missing, wrong size,
            digest mismatch, unreadable), when the checkpoint is incomplete or corrupt.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(path, "not a checkpoint directory (missing or not a directory)")
    state = _read_state(path / _STATE_FILE)
    if _STEP_DIR.fullmatch(path.name) and step_of(path) != state["step"]:
        raise CheckpointError(
            path / _STATE_FILE, f"records step {state['step']} but the directory is {path.name}"
        )
    data = {name: _read_verified(path / name, entry) for name, entry in state["files"].items()}
    return Checkpoint(
        step=state["step"],
        model=_read_tensors(path / "model.safetensors", data),
        ema=_read_tensors(path / "ema.safetensors", data),
        optimizer=_read_torch(path / "optimizer.pt", data),
        rng=_read_tensors(path / "rng.safetensors", data),
        config=state["config"],
        losses=state["losses"],
        evals=state["evals"],
        loop=state["loop"],
    )


def step_of(path: Path) -> int:
    """The step of the checkpoint directory ``path`` (``step_<step>``), from its name."""
    return int(_STEP_DIR.fullmatch(path.name).group(1))


def _cpu_copy(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Contiguous CPU copies: safetensors refuses views and tensors sharing memory."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_directory(path: Path) -> None:
    """Make a rename or new entry in ``path`` durable (POSIX; Windows cannot open directories)."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_temporary(directory: Path, name: str) -> Path:
    """A new, uniquely named temporary directory in ``directory`` (permissions from the umask)."""
    tmp = directory / f".tmp-{name}-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    return tmp


def _remove_atomically(path: Path) -> None:
    """Delete a directory so it vanishes at once: rename it to a temporary name, then remove."""
    trash = _make_temporary(path.parent, path.name)
    os.replace(path, trash / path.name)
    shutil.rmtree(trash)


def _remove_stale_temporaries(directory: Path) -> None:
    """Remove what crashed writes and deletions left behind (single writer assumed); only names
    that :func:`_make_temporary` makes, so a user's own ``.tmp-*`` directory stays."""
    for p in directory.iterdir():
        if _TMP_DIR.fullmatch(p.name) and p.is_dir():
            shutil.rmtree(p)


def _state_digest(state: dict[str, Any]) -> str:
    """SHA-256 of ``state`` without its ``sha256`` entry, in a canonical JSON form."""
    content = {k: v for k, v in state.items() if k != "sha256"}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _read_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(path, "missing: the checkpoint is incomplete")
    try:
        state = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(path, f"not valid JSON ({err})") from err
    if not isinstance(state, dict):
        raise CheckpointError(path, f"must hold a JSON object; got {type(state).__name__}")
    if state.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            path, f"format {state.get('format')!r} is not the supported format {FORMAT_VERSION}"
        )
    missing = sorted(
        {"step", "config", "losses", "evals", "loop", "files", "sha256"} - state.keys()
    )
    if missing:
        raise CheckpointError(path, f"missing entries {missing}")
    try:
        digest = _state_digest(state)
    except ValueError as err:  # NaN or inf written by hand
        raise CheckpointError(path, f"not strict JSON ({err})") from err
    if state["sha256"] != digest:
        raise CheckpointError(
            path, "its SHA-256 differs from the one written: the file was edited (corrupt)"
        )
    expected = {
        "step": (int, "an integer"),
        "config": ((dict, type(None)), "an object or null"),
        "losses": (list, "a list"),
        "evals": (list, "a list"),
        "loop": (dict, "an object"),
        "files": (dict, "an object"),
    }
    for name, (kind, words) in expected.items():
        value = state[name]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise CheckpointError(path, f"'{name}' must be {words}; got {value!r}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in state["losses"]):
        raise CheckpointError(path, "'losses' must be a list of numbers")
    if not all(isinstance(e, dict) for e in state["evals"]):
        raise CheckpointError(path, "'evals' must be a list of objects")
    files = state["files"]
    if set(files) != set(_TENSOR_FILES):
        raise CheckpointError(path, f"'files' must list exactly {sorted(_TENSOR_FILES)}")
    for name, entry in files.items():
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("bytes"), int)
            and isinstance(entry.get("sha256"), str)
        ):
            raise CheckpointError(path, f"'files' entry for {name} lacks its size or SHA-256")
    return state


def _read_verified(path: Path, entry: dict[str, Any]) -> bytes:
    if not path.is_file():
        raise CheckpointError(path, "missing: the checkpoint is incomplete")
    data = path.read_bytes()
    if len(data) != entry["bytes"]:
        raise CheckpointError(
            path, f"size is {len(data)} bytes, {entry['bytes']} were written (truncated or altered)"
        )
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise CheckpointError(path, "SHA-256 digest differs from the one written (corrupt)")
    return data


def _read_tensors(path: Path, data: dict[str, bytes]) -> dict[str, Tensor]:
    try:
        return safetensors.torch.load(data[path.name])
    except Exception as err:  # safetensors raises its own error types for malformed files
        raise CheckpointError(path, f"not a readable safetensors file ({err})") from err


def _read_torch(path: Path, data: dict[str, bytes]) -> Any:
    try:
        return torch.load(io.BytesIO(data[path.name]), map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many error types for malformed or unsafe data
        raise CheckpointError(
            path, f"not readable with torch.load(weights_only=True) ({err})"
        ) from err
