"""Data: the Gaussian-mixture oracle and toy 2D densities."""

from scoresde.datasets.gmm import GaussianMixture

__all__ = ["GaussianMixture"]
