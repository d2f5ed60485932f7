"""Data: the Gaussian-mixture oracle, toy 2D densities and batch samplers for any point source."""

from scoresde.datasets.gmm import GaussianMixture
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

__all__ = [
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
]
