"""The data protocol: what training, evaluation and figures ask of a dataset, points or images.

A :class:`Dataset` says what one sample looks like and how to get data; nothing downstream needs
to know whether it holds 2D points or images:

=============== ===================================================================================
``name``        the registry name
``shape``       the shape ``D`` of one sample (``(2,)`` for points, ``(C, H, W)`` for images)
``num_classes`` labels ``0 .. num_classes - 1``, or ``None`` for unlabelled data
``num_levels``  the number of discrete values per dimension (17 for digits, 256 for 8-bit images)
                for bits/dim, or ``None`` for continuous data
``data_range``  ``(lo, hi)``: the interval the model's data lie in (``(-1, 1)`` for images), the
                ``data_range`` of :func:`scoresde.bits_per_dim`; ``None`` for unbounded data
``batches``     ``batches(batch_size, labels=False, start=0, shard=None)``: the training loop's
                ``sample_batch(generator)``; a :class:`LabelledBatch` per call with ``labels``;
                with a :class:`Shard`, this process's part of each global batch
``split``       ``split(name, n=None, generator=None)``: a :class:`Split` of evaluation data
``size``        the number of training samples, or ``None`` where every draw is fresh
``to_data``     the model's values in the data's own units (grey levels for images);
                ``from_data`` its inverse
``show``        ``show(ax, x)``: draw a batch onto a matplotlib ``Axes``
=============== ===================================================================================

The model always works in "model units" (images scaled to ``data_range``); ``to_data`` maps back,
and :attr:`Split.levels` keeps the integer levels that bits/dim needs.

:class:`EpochBatches` is the batch stream of a finite dataset: each epoch a fresh permutation,
reproducible from the seed of the generator it is called with and the step, so a resumed run (whose
checkpoint holds only generator states and the step) continues the same stream.

A :class:`Shard` splits each global batch of ``B`` rows over the ``W`` processes of a data-parallel
run (:mod:`scoresde.distributed`): each draws ``B / W`` rows a call. A dataset of fresh samples
draws them from the process's own generator; :class:`EpochBatches` gives process ``r`` rows
``[r B / W, (r + 1) B / W)`` of the global batch, so the processes together visit the epoch's one
permutation exactly as a single process would.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from scoresde.validation import check_choice, check_int

__all__ = ["Dataset", "Split", "LabelledBatch", "EpochBatches", "BatchSampler", "Shard", "SPLITS"]

SPLITS = ("train", "test")


class LabelledBatch(NamedTuple):
    """A batch of samples ``x`` ``(B, *D)`` with their labels ``y`` ``(B,)`` (int64).

    :meth:`to` moves both, so the training loop's ``sample_batch(generator).to(device)`` works on it
    as on a plain tensor; the loss function receives the pair.
    """

    x: Tensor
    y: Tensor

    def to(self, device: torch.device | str) -> LabelledBatch:
        """Both tensors on ``device``."""
        return LabelledBatch(self.x.to(device), self.y.to(device))


class Shard(NamedTuple):
    """This process's part of each global batch in a run of ``world`` processes.

    Attributes:
        rank: this process, ``0 .. world - 1``.
        world: the number of processes; the global batch size must be a multiple of it.
        seed: the run's seed, the same on every process (each process's generator has a seed of
            its own, but an epoch's permutation must be one permutation on all of them).
    """

    rank: int
    world: int
    seed: int

    def rows(self, batch_size: int) -> slice:
        """The rows of a global batch of ``batch_size`` that this process draws."""
        if batch_size % self.world:
            raise ValueError(
                f"batch_size must be a multiple of the number of processes ({self.world}); "
                f"got {batch_size}"
            )
        b = batch_size // self.world
        return slice(self.rank * b, (self.rank + 1) * b)


BatchSampler = Callable[[torch.Generator], "Tensor | LabelledBatch"]
"""``sample_batch(generator) -> batch``: the training loop's source of data."""


class Split(NamedTuple):
    """Evaluation data of a dataset.

    Attributes:
        x: samples in model units, float32 ``(N, *D)``.
        y: labels ``(N,)`` int64, or ``None`` for unlabelled data.
        levels: the integer levels ``(N, *D)`` int64 behind ``x`` (for bits/dim), or ``None`` for
            continuous data.
    """

    x: Tensor
    y: Tensor | None
    levels: Tensor | None


class Dataset(abc.ABC):
    """The protocol every dataset implements (table in :mod:`scoresde.datasets.protocol`).

    Subclasses set the attributes and implement :meth:`batches`, :meth:`split` and :meth:`show`;
    :meth:`to_data` is the identity unless the data are stored in other units.
    """

    name: str
    shape: tuple[int, ...]
    num_classes: int | None = None
    num_levels: int | None = None
    data_range: tuple[float, float] | None = None
    size: int | None = None

    @abc.abstractmethod
    def batches(
        self,
        batch_size: int,
        *,
        labels: bool = False,
        start: int = 0,
        shard: Shard | None = None,
    ) -> BatchSampler:
        """The training loop's ``sample_batch(generator)``, drawing ``batch_size`` samples a call.

        Arguments:
            batch_size: samples per (global) batch.
            labels: return :class:`LabelledBatch` ``(x, y)`` instead of ``x`` (labelled data only).
            start: the number of batches a resumed run has already drawn (streams with a state).
            shard: draw only this process's ``batch_size / shard.world`` rows of each batch.
        """

    @abc.abstractmethod
    def split(
        self, name: str, n: int | None = None, generator: torch.Generator | None = None
    ) -> Split:
        """Evaluation data of split ``name`` (``"train"``, ``"test"``): ``n`` samples, or all."""

    @abc.abstractmethod
    def show(self, ax: Any, x: Tensor) -> None:
        """Draw a batch ``x`` ``(n, *D)`` in model units onto the matplotlib ``Axes`` ``ax``."""

    def to_data(self, x: Tensor) -> Tensor:
        """Model units to the data's own units (the identity here)."""
        return x

    def from_data(self, x: Tensor) -> Tensor:
        """The data's own units to model units, the inverse of :meth:`to_data`."""
        return x

    def _check_labels(self, labels: bool) -> None:
        if labels and self.num_classes is None:
            raise ValueError(
                f"labels must be False for a dataset without labels ({self.name!r}); got True"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def _epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit seed for the permutation of ``epoch`` (NumPy's SeedSequence hash)."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    return int(state >> np.uint64(1))


class EpochBatches:
    """Epoch-shuffled batches of a finite dataset: batch ``k`` is a function of a seed and ``k``.

    With ``N`` samples, batch size ``B`` and ``m = N // B`` batches per epoch, batch ``k`` (0-based)
    of epoch ``e = k // m`` holds the rows::

        perm_e[j B : (j + 1) B],   j = k mod m,   perm_e = randperm(N) drawn with seed h(s, e),

    ``h`` the SeedSequence hash of ``(s, e)``. Every epoch visits ``m B`` distinct rows in a new
    order; the ``N mod B`` rows left at the end of each permutation wait for a later epoch (every
    batch is full, and every row is equally likely to be left out).

    Called as the training loop's ``sample_batch(generator)``, it returns batch ``start``, then
    ``start + 1``, ... with ``s = generator.initial_seed()``. That seed survives
    ``generator.get_state()`` / ``set_state()``, so a run resumed from a checkpoint (generator state
    restored, ``start`` = the checkpoint's step) draws exactly the batches of the uninterrupted
    run. The generator's state itself is not consumed.

    With a :class:`Shard`, each call returns the shard's rows of batch ``k`` (``B / W`` of them),
    and ``s = shard.seed`` on every process.

    Arguments:
        x: samples ``(N, *D)``.
        batch_size: ``B``, at most ``N``.
        y: labels ``(N,)``; with them each batch is a :class:`LabelledBatch`.
        start: the index of the first batch to return.
        shard: this process's part of each batch (default: all of it).
    """

    def __init__(
        self,
        x: Tensor,
        batch_size: int,
        *,
        y: Tensor | None = None,
        start: int = 0,
        shard: Shard | None = None,
    ):
        n = x.shape[0]
        self.batch_size = check_int("batch_size", batch_size, 1, n)
        self.shard = shard
        self._rows = slice(None) if shard is None else shard.rows(self.batch_size)
        if y is not None and y.shape != (n,):
            raise ValueError(f"y must have shape ({n},) to label x; got {tuple(y.shape)}")
        self.x, self.y = x, y
        self.step = check_int("start", start, 0)
        self.batches_per_epoch = n // self.batch_size
        self._cached: tuple[int, int, Tensor] | None = None  # (seed, epoch, permutation)

    def indices(self, seed: int, k: int) -> Tensor:
        """The rows of batch ``k`` under seed ``s``, shape ``(B,)``."""
        epoch, j = divmod(k, self.batches_per_epoch)
        if self._cached is None or self._cached[:2] != (seed, epoch):
            g = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
            self._cached = (seed, epoch, torch.randperm(self.x.shape[0], generator=g))
        return self._cached[2][j * self.batch_size : (j + 1) * self.batch_size]

    def __call__(self, generator: torch.Generator) -> Tensor | LabelledBatch:
        seed = generator.initial_seed() if self.shard is None else self.shard.seed
        rows = self.indices(seed, self.step)[self._rows]
        self.step += 1
        if self.y is None:
            return self.x[rows]
        return LabelledBatch(self.x[rows], self.y[rows])


def check_split(name: str) -> str:
    """``name`` if it is one of :data:`SPLITS`, else the one-line refusal."""
    return check_choice("split", name, SPLITS)
