"""Image datasets that need no download at run time: digits, MNIST, Fashion-MNIST, a ``.npz``.

Every dataset here is an :class:`ImageDataset`: integer grey levels ``k in {0, ..., L - 1}`` of
shape ``(C, H, W)``, a fixed train/test split and optional labels. The model sees the levels
scaled to ``data_range = (lo, hi) = (-1, 1)``::

    x = lo + (hi - lo) k / (L - 1),

and :attr:`Split.levels <scoresde.datasets.protocol.Split>` keeps ``k`` for
:func:`scoresde.bits_per_dim` (``num_bins = L``, the same ``data_range``).

============= ======= ====== =========== ========================================================
name          shape   levels train/test  source
============= ======= ====== =========== ========================================================
digits        1x8x8   17     1497 / 300  scikit-learn's bundled copy of the UCI optical digits
                                         (1,797 images, labels 0-9); split below
mnist         1x28x28 256    60k / 10k   the four standard IDX files (``train-``/``t10k-``,
                                         gzipped or not) in directory ``path``
fashion_mnist 1x28x28 256    60k / 10k   the same files; ``path`` defaults to
                                         :data:`FASHION_MNIST_DIR`, where Debian's
                                         ``dataset-fashion-mnist`` package installs them
npz           (C,H,W) 256    see below   a user's ``.npz``: ``images`` uint8 ``(N, H, W)`` or
                                         ``(N, H, W, C)`` (``C`` 1 or 3), optional ``labels``
                                         ``(N,)`` integers ``>= 0``
============= ======= ====== =========== ========================================================

**The digits split** (:func:`stratified_split`) is fixed and stratified: each class gives the test
set its share of ``test_size`` (largest-remainder rounding of ``test_size * n_c / N``; 29-31
images per class at the default 300), chosen by ``torch.randperm`` from a generator seeded with
``seed``. A ``.npz`` is split the same way (stratified if it has labels) with ``test_size`` a
count or a fraction.

A missing or malformed file raises :class:`DataFileError`: one line naming the path, what was
expected and how to get it.
"""

from __future__ import annotations

import gzip
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from scoresde.datasets.protocol import (
    BatchSampler,
    Dataset,
    EpochBatches,
    Shard,
    Split,
    check_split,
)
from scoresde.display import show_images
from scoresde.registry import Registry
from scoresde.validation import check_bool, check_int, check_number

__all__ = [
    "ImageDataset",
    "DataFileError",
    "FASHION_MNIST_DIR",
    "IMAGE_DATASETS",
    "digits",
    "mnist",
    "fashion_mnist",
    "npz_images",
    "read_idx",
    "stratified_split",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package installs the four gzipped IDX files."""

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
"""The standard MNIST / Fashion-MNIST file names (each may also end in ``.gz``)."""

HOW_TO_GET = {
    "mnist": "download the four MNIST IDX files and pass their directory as data.path",
    "fashion_mnist": (
        f"install Debian's dataset-fashion-mnist package (it puts them in {FASHION_MNIST_DIR}) "
        "or download the four Fashion-MNIST IDX files and pass their directory as data.path"
    ),
}


class DataFileError(ValueError):
    """A data file is missing or malformed; the message names the path and how to get the data.

    Attributes:
        path: the file or directory at fault.
    """

    def __init__(self, path: os.PathLike[str] | str, problem: str, remedy: str):
        self.path = Path(path)
        super().__init__(f"{self.path}: {problem}; {remedy}")


class ImageDataset(Dataset):
    """Images with integer grey levels, a fixed train/test split and optional labels.

    Arguments:
        name: the registry name.
        train, test: levels ``(N, C, H, W)``, integers in ``[0, num_levels - 1]``.
        num_levels: ``L``, the number of grey levels.
        train_labels, test_labels: labels ``(N,)`` in ``[0, num_classes - 1]``, both or neither.
        num_classes: the number of classes (default: ``1 + max label``).
    """

    data_range = (-1.0, 1.0)

    def __init__(
        self,
        name: str,
        train: Tensor,
        test: Tensor,
        *,
        num_levels: int,
        train_labels: Tensor | None = None,
        test_labels: Tensor | None = None,
        num_classes: int | None = None,
    ):
        self.name = name
        self.num_levels = check_int("num_levels", num_levels, 2, 256)
        self._levels = {"train": self._check_levels("train", train)}
        self._levels["test"] = self._check_levels("test", test)
        self.shape = tuple(train.shape[1:])
        self.size = len(self._levels["train"])
        if self._levels["test"].shape[1:] != self.shape:
            raise ValueError(
                f"test images must have the train images' shape {self.shape}; "
                f"got {tuple(test.shape[1:])}"
            )
        if (train_labels is None) != (test_labels is None):
            raise ValueError("train_labels and test_labels go together; got only one of them")
        self._labels: dict[str, Tensor] | None = None
        if train_labels is not None and test_labels is not None:
            labels = {"train": train_labels, "test": test_labels}
            for split, y in labels.items():
                if y.dtype.is_floating_point or y.shape != (len(self._levels[split]),):
                    raise ValueError(
                        f"{split}_labels must be integers of shape ({len(self._levels[split])},); "
                        f"got {y.dtype} {tuple(y.shape)}"
                    )
            top = max(int(y.max()) for y in labels.values())
            self.num_classes = top + 1 if num_classes is None else num_classes
            check_int("num_classes", self.num_classes, max(top + 1, 1))
            if min(int(y.min()) for y in labels.values()) < 0:
                raise ValueError("labels must be integers >= 0; got a negative label")
            self._labels = {k: y.to(torch.int64) for k, y in labels.items()}
        self._train_x = self.encode(self._levels["train"])

    def _check_levels(self, split: str, levels: Tensor) -> Tensor:
        if levels.ndim != 4 or levels.shape[0] == 0 or levels.dtype.is_floating_point:
            raise ValueError(
                f"{split} images must be integer levels of shape (N, C, H, W) with N >= 1; "
                f"got {levels.dtype} {tuple(levels.shape)}"
            )
        if int(levels.min()) < 0 or int(levels.max()) >= self.num_levels:
            raise ValueError(
                f"{split} levels must lie in [0, {self.num_levels - 1}]; "
                f"got [{int(levels.min())}, {int(levels.max())}]"
            )
        return levels.to(torch.uint8)

    def encode(self, levels: Tensor) -> Tensor:
        """Levels ``k`` to model units, ``lo + (hi - lo) k / (L - 1)``, float32."""
        lo, hi = self.data_range
        return lo + (hi - lo) * levels.to(torch.float32) / (self.num_levels - 1)

    def to_data(self, x: Tensor) -> Tensor:
        """Model units to (fractional) grey levels, ``(L - 1)(x - lo) / (hi - lo)``, unclipped."""
        lo, hi = self.data_range
        return (x - lo) * ((self.num_levels - 1) / (hi - lo))

    def from_data(self, x: Tensor) -> Tensor:
        """(Fractional) grey levels to model units, ``lo + (hi - lo) x / (L - 1)``."""
        lo, hi = self.data_range
        return lo + (hi - lo) * x.to(torch.float32) / (self.num_levels - 1)

    def __len__(self) -> int:
        """The number of training images."""
        return len(self._levels["train"])

    def batches(
        self,
        batch_size: int,
        *,
        labels: bool = False,
        start: int = 0,
        shard: Shard | None = None,
    ) -> BatchSampler:
        """:class:`~scoresde.datasets.protocol.EpochBatches` of the training images."""
        self._check_labels(check_bool("labels", labels))
        y = self._labels["train"] if labels and self._labels is not None else None
        return EpochBatches(self._train_x, batch_size, y=y, start=start, shard=shard)

    def split(
        self, name: str, n: int | None = None, generator: torch.Generator | None = None
    ) -> Split:
        """All images of split ``name``, or ``n`` of them drawn without replacement."""
        levels = self._levels[check_split(name)]
        rows = None
        if n is not None:
            n = check_int("n", n, 1, len(levels))
            rows = torch.randperm(len(levels), generator=generator)[:n]
            levels = levels[rows]
        y = None if self._labels is None else self._labels[name]
        if y is not None and rows is not None:
            y = y[rows]
        return Split(self.encode(levels), y, levels.to(torch.int64))

    def show(self, ax: Any, x: Tensor) -> None:
        """The images tiled into one grid, ``data_range`` drawn black to white."""
        show_images(ax, x, value_range=self.data_range)


def _largest_remainder(total: int, counts: np.ndarray) -> np.ndarray:
    """Integers proportional to ``counts`` that sum to ``total`` (Hamilton's method; ties to the
    lower index)."""
    quotas = total * counts / counts.sum()
    share = np.floor(quotas).astype(np.int64)
    order = np.argsort(-(quotas - share), kind="stable")
    share[order[: total - share.sum()]] += 1
    return share


def stratified_split(
    n: int, test_size: int, *, labels: Tensor | None = None, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """A fixed train/test split of ``n`` items: ``(train_rows, test_rows)``, each sorted.

    With labels, class ``c`` (``n_c`` items) gives the test set its share of ``test_size`` by
    largest-remainder rounding of ``test_size n_c / n``; without, all items form one class. The
    items of each class are ordered by ``torch.randperm`` with a generator seeded by ``seed + c``
    and the first ``share`` go to the test set.
    """
    test_size = check_int("test_size", test_size, 1, n - 1)
    classes = torch.zeros(n, dtype=torch.int64) if labels is None else labels.to(torch.int64)
    values, counts = torch.unique(classes, return_counts=True)
    shares = _largest_remainder(test_size, counts.numpy())
    test = []
    for c, share in zip(values.tolist(), shares.tolist(), strict=True):
        members = torch.nonzero(classes == c).flatten()
        g = torch.Generator().manual_seed(seed + c)
        test.append(members[torch.randperm(len(members), generator=g)[:share]])
    test_rows = torch.cat(test).sort().values
    train_mask = torch.ones(n, dtype=torch.bool)
    train_mask[test_rows] = False
    return torch.nonzero(train_mask).flatten(), test_rows


def digits(test_size: int = 300, seed: int = 0) -> ImageDataset:
    """``digits``: scikit-learn's 8x8 digits, 17 grey levels, labels 0-9, a stratified split.

    The images ship inside scikit-learn (no download); it is imported only here.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    levels = torch.as_tensor(bunch.images, dtype=torch.float64)[:, None]
    if not bool((levels == levels.round()).all()):  # the copy shipped is integer-valued
        raise ValueError("scikit-learn's digits are not integer grey levels 0..16")
    levels = levels.to(torch.uint8)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    train, test = stratified_split(len(labels), test_size, labels=labels, seed=seed)
    return ImageDataset(
        "digits",
        levels[train],
        levels[test],
        num_levels=17,
        train_labels=labels[train],
        test_labels=labels[test],
        num_classes=10,
    )


def read_idx(path: os.PathLike[str] | str, remedy: str = "check the file") -> np.ndarray:
    """The array in an IDX file of unsigned bytes (the MNIST format), gzipped or not.

    The format: two zero bytes, the type code ``0x08`` (unsigned byte), the number of dimensions
    ``d``, then ``d`` big-endian 32-bit sizes and the data in C order. Gzip is recognised by its
    magic bytes, whatever the file is called.

    Raises:
        DataFileError: the file is missing, not IDX, not unsigned bytes, or of the wrong length;
            ``remedy`` ends the message.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataFileError(path, "no such file", remedy) from None
    except (OSError, EOFError) as err:
        raise DataFileError(path, f"cannot be read ({err})", remedy) from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00":
        raise DataFileError(path, "not an IDX file (expected the bytes 00 00 08 d first)", remedy)
    if raw[2] != 0x08:
        raise DataFileError(
            path, f"IDX type code must be 0x08 (unsigned bytes); got 0x{raw[2]:02x}", remedy
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataFileError(path, f"IDX header is cut short ({ndim} dimensions)", remedy)
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + math.prod(dims)
    if len(raw) != expected:
        raise DataFileError(
            path,
            f"IDX of shape {dims} needs {expected} bytes, the file has {len(raw)}",
            remedy,
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx(directory: Path, stem: str, remedy: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    raise DataFileError(directory / stem, "no such file (nor with .gz)", remedy)


def _idx_dataset(name: str, path: os.PathLike[str] | str) -> ImageDataset:
    """An MNIST-format dataset from the four IDX files in directory ``path``."""
    directory, remedy = Path(path), HOW_TO_GET[name]
    if not directory.is_dir():
        raise DataFileError(
            directory, "no such directory (expected the four IDX files of " + name + ")", remedy
        )
    files = {k: _find_idx(directory, stem, remedy) for k, stem in IDX_FILES.items()}
    arrays = {k: read_idx(file, remedy) for k, file in files.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3:
            raise DataFileError(
                files[f"{split}_images"], f"expected images (N, H, W); got {images.shape}", remedy
            )
        if labels.shape != images.shape[:1]:
            raise DataFileError(
                files[f"{split}_labels"],
                f"expected {images.shape[0]} labels, one per image; got shape {labels.shape}",
                remedy,
            )
    return ImageDataset(
        name,
        torch.from_numpy(arrays["train_images"].copy())[:, None],
        torch.from_numpy(arrays["test_images"].copy())[:, None],
        num_levels=256,
        train_labels=torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        test_labels=torch.from_numpy(arrays["test_labels"].astype(np.int64)),
        num_classes=10,
    )


def mnist(path: os.PathLike[str] | str) -> ImageDataset:
    """``mnist``: the four MNIST IDX files in directory ``path`` (60,000 / 10,000, 256 levels)."""
    return _idx_dataset("mnist", path)


def fashion_mnist(path: os.PathLike[str] | str = FASHION_MNIST_DIR) -> ImageDataset:
    """``fashion_mnist``: the four Fashion-MNIST IDX files in ``path`` (default: Debian's place)."""
    return _idx_dataset("fashion_mnist", path)


def npz_images(
    path: os.PathLike[str] | str, test_size: int | float = 0.1, seed: int = 0
) -> ImageDataset:
    """``npz``: a user's images from an ``.npz`` file, split into train and test.

    Arguments:
        path: the file, holding ``images`` (uint8 ``(N, H, W)`` or ``(N, H, W, C)``, ``C`` 1 or 3)
            and optionally ``labels`` (``(N,)`` integers ``>= 0``).
        test_size: the test set's size, a count ``>= 1`` or a fraction in ``(0, 1)``.
        seed: the seed of :func:`stratified_split` (stratified by label where there are labels).
    """
    path = Path(path)
    remedy = (
        "expected an .npz with 'images' (uint8, (N, H, W) or (N, H, W, C) with C 1 or 3) and "
        "optionally 'labels' ((N,) integers >= 0), e.g. from numpy.savez(path, images=..., "
        "labels=...)"
    )
    try:
        with np.load(path, allow_pickle=False) as archive:
            contents = {k: archive[k] for k in archive.files}
    except FileNotFoundError:
        raise DataFileError(path, "no such file", remedy) from None
    except (OSError, ValueError) as err:
        raise DataFileError(path, f"not a readable .npz ({err})", remedy) from None
    images = contents.get("images")
    if images is None:
        found = ", ".join(sorted(contents)) or "nothing"
        raise DataFileError(path, f"no 'images' array (found {found})", remedy)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) < 2:
        raise DataFileError(
            path, f"'images' is {images.dtype} of shape {images.shape}, not uint8 images", remedy
        )
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[3] not in (1, 3):
        raise DataFileError(
            path, f"'images' has {images.shape[3]} channels; expected 1 or 3", remedy
        )
    labels = contents.get("labels")
    if labels is not None and (
        labels.shape != images.shape[:1]
        or not np.issubdtype(labels.dtype, np.integer)
        or (labels < 0).any()
    ):
        raise DataFileError(
            path,
            f"'labels' is {labels.dtype} of shape {labels.shape}, not {len(images)} integers >= 0",
            remedy,
        )
    n = len(images)
    if isinstance(test_size, float):
        count = max(
            1, round(check_number("test_size", test_size, 0, 1, low_open=True, high_open=True) * n)
        )
    else:
        count = check_int("test_size", test_size, 1, n - 1)
    levels = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    y = None if labels is None else torch.from_numpy(labels.astype(np.int64))
    train, test = stratified_split(n, count, labels=y, seed=seed)
    return ImageDataset(
        path.stem,
        levels[train],
        levels[test],
        num_levels=256,
        train_labels=None if y is None else y[train],
        test_labels=None if y is None else y[test],
    )


IMAGE_DATASETS: Registry[Any] = Registry(
    "dataset",
    {"digits": digits, "mnist": mnist, "fashion_mnist": fashion_mnist, "npz": npz_images},
)
"""Image dataset name -> factory (``digits()``, ``mnist(path)``, ``fashion_mnist(path)``,
``npz(path, test_size, seed)``)."""
