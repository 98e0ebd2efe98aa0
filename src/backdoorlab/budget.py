"""The held-out clean pool and the clean budget every defense draws from.

A fixed part of each training set (the *held-out pool*) is set aside before any poisoning, by a seeded
permutation, so it is never poisoned and never trained on by the endpoints. A defense gets a *clean budget*: the
first ``size`` images of a seeded shuffle of the pool. Every defense with the same budget size and seed sees the
same images, so comparisons are fair.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .data.registry import default_holdout  # the pool's size, a trait of each data set  # noqa: F401
from .errors import BackdoorlabError

SPLIT_SEED = 0


def holdout_split(n_train: int, holdout: int, seed: int = SPLIT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(n_train)`` into (training indices, held-out pool indices), both sorted."""
    if not 0 <= holdout < n_train:
        raise BackdoorlabError(f"held-out pool of {holdout} images is impossible with {n_train} training images")
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))
    return perm[holdout:].sort().values, perm[:holdout].sort().values


@dataclass
class CleanBudget:
    """``size`` clean images (uint8 (N, C, H, W)) and labels drawn from the held-out pool."""

    x: torch.Tensor
    y: torch.Tensor
    indices: torch.Tensor  # indices into the training set

    def __len__(self) -> int:
        return len(self.y)

    def split(self, n_val: int) -> tuple["CleanBudget", "CleanBudget"]:
        """Split into (fit part, validation part of ``n_val`` images); the budget is already shuffled."""
        if not 0 < n_val < len(self):
            raise BackdoorlabError(f"cannot hold out {n_val} validation images from a budget of {len(self)}")
        k = len(self) - n_val
        return (CleanBudget(self.x[:k], self.y[:k], self.indices[:k]),
                CleanBudget(self.x[k:], self.y[k:], self.indices[k:]))


def training_part(dataset, holdout: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The training images that are not in the held-out pool: what an endpoint may be trained (and poisoned) on."""
    holdout = default_holdout(dataset.name) if holdout is None else holdout
    idx, _ = holdout_split(len(dataset.train_y), holdout)
    return dataset.train_x[idx], dataset.train_y[idx]


def clean_budget(dataset, size: int, seed: int = 0, holdout: int | None = None) -> CleanBudget:
    """Draw a clean budget of ``size`` images from the held-out pool of ``dataset``."""
    holdout = default_holdout(dataset.name) if holdout is None else holdout
    _, pool = holdout_split(len(dataset.train_y), holdout)
    if size <= 0:
        raise BackdoorlabError(f"clean budget must be a positive number of images, got {size}")
    if size > len(pool):
        raise BackdoorlabError(f"clean budget of {size} images is larger than the held-out pool of {len(pool)} "
                               f"images for {dataset.name}")
    pick = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:size]]
    return CleanBudget(dataset.train_x[pick], dataset.train_y[pick], pick)
