"""Data: the data protocol, toy 2D densities, image datasets and the Gaussian-mixture oracle.

Every dataset, points or images, is a :class:`Dataset` (:mod:`scoresde.datasets.protocol`);
:func:`load_dataset` builds any of them by name from :data:`DATASETS`.
"""

from typing import Any

from scoresde.datasets.gmm import GaussianMixture
from scoresde.datasets.images import (
    FASHION_MNIST_DIR,
    IMAGE_DATASETS,
    DataFileError,
    ImageDataset,
    digits,
    fashion_mnist,
    mnist,
    npz_images,
    read_idx,
    stratified_split,
)
from scoresde.datasets.protocol import Dataset, EpochBatches, LabelledBatch, Shard, Split
from scoresde.datasets.toy import (
    TOY_DATASETS,
    Checkerboard,
    Curve,
    MixtureDensity,
    NoisyCurves,
    Pinwheel,
    ToyDensity,
    batch_sampler,
    get_dataset,
    knn_entropy,
)
from scoresde.registry import Registry

__all__ = [
    "Dataset",
    "Split",
    "LabelledBatch",
    "EpochBatches",
    "Shard",
    "DATASETS",
    "load_dataset",
    "GaussianMixture",
    "TOY_DATASETS",
    "ToyDensity",
    "MixtureDensity",
    "Checkerboard",
    "NoisyCurves",
    "Curve",
    "Pinwheel",
    "get_dataset",
    "batch_sampler",
    "knn_entropy",
    "IMAGE_DATASETS",
    "ImageDataset",
    "DataFileError",
    "FASHION_MNIST_DIR",
    "digits",
    "mnist",
    "fashion_mnist",
    "npz_images",
    "read_idx",
    "stratified_split",
]

DATASETS: Registry[Any] = Registry("dataset", {**TOY_DATASETS, **IMAGE_DATASETS})
"""Every dataset by name: the toy densities, then the image datasets."""


def load_dataset(name: str, **kwargs: Any) -> Dataset:
    """The dataset ``name`` (one of :data:`DATASETS`) built with ``kwargs`` (e.g. ``path``).

    Raises:
        ValueError: an unknown name or keyword; :class:`DataFileError` for missing or malformed
            files.
    """
    return DATASETS.build(name, **kwargs)
