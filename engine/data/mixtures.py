"""2-D Gaussian mixtures, the standard mode-collapse test: 8 modes on a ring, 25 on a grid."""
import math

import torch

from ._common import SPLITS, DataError, Dataset

MIXTURES = ("ring8", "grid25")
MIXTURE_STD = {"ring8": 0.02, "grid25": 0.05}


def mixture_centers(name):
    """(K, 2) float32 mode centers: 8 on a circle of radius 2, or a 5x5 grid with spacing 2 (-4..4)."""
    if name == "ring8":
        angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        return (2.0 * torch.stack([angles.cos(), angles.sin()], dim=1)).float()
    if name == "grid25":
        axis = torch.arange(-4.0, 5.0, 2.0)
        gx, gy = torch.meshgrid(axis, axis, indexing="ij")
        return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    raise DataError(f"unknown mixture {name!r}; expected one of {MIXTURES}")


def load_mixture(name, split, seed, n_points):
    """``n_points`` labelled samples of mixture ``name``; each split draws from its own stream of ``seed``."""
    if not isinstance(n_points, int) or n_points < 1:
        raise DataError(f"n_points must be a positive integer, got {n_points!r}")
    centers = mixture_centers(name)
    # train, test and all draw from separate streams so that a test set is never a copy of the train set
    gen = torch.Generator().manual_seed(int(seed) * 3 + SPLITS.index(split))
    labels = torch.randint(len(centers), (n_points,), generator=gen)
    points = centers[labels] + MIXTURE_STD[name] * torch.randn(n_points, 2, generator=gen)
    return Dataset(points, labels, len(centers), name)
