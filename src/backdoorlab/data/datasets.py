"""The :class:`Dataset` container, :func:`load_dataset` and :func:`list_datasets`.

The loaders live in one module per family of data sets (``idx``: MNIST and Fashion-MNIST, ``cifar10``,
``digits``), each registered in :data:`~backdoorlab.data.registry.DATASETS`; they build their
:class:`Dataset` with :func:`make_dataset`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from backdoorlab.data.registry import DATASETS

DATA_ENV = "BACKDOORLAB_DATA"
DIGIT_CLASSES = [str(i) for i in range(10)]  # the class names of the handwritten-digit sets


@dataclass
class Dataset:
    """An image-classification dataset held in memory.

    Images are uint8 pixel values 0..255, shape (N, C, H, W), contiguous; labels are int64 class indices,
    shape (N,). ``mean``/``std`` are per-channel statistics of ``train_x / 255`` (for normalisation).
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return self.train_x.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return tuple(self.train_x.shape[2:])


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and (population) std of ``x / 255`` for uint8 ``x`` of shape (N, C, H, W).

    Uses a 256-bin histogram per channel, so it needs no float copy of the data.
    """
    values = torch.arange(256, dtype=torch.float64) / 255
    mean, std = [], []
    for c in range(x.shape[1]):
        hist = torch.bincount(x[:, c].reshape(-1), minlength=256).double()
        p = hist / hist.sum()
        m = float((p * values).sum())
        mean.append(m)
        std.append(float((p * values**2).sum() - m * m) ** 0.5)
    return tuple(mean), tuple(std)


def make_dataset(name: str, train_x, train_y, test_x, test_y, class_names: list[str]) -> Dataset:
    """Build a :class:`Dataset` from numpy arrays (uint8 images, integer labels), computing mean/std."""
    tx = torch.from_numpy(np.ascontiguousarray(train_x))
    mean, std = channel_stats(tx)
    return Dataset(
        name=name,
        train_x=tx,
        train_y=torch.from_numpy(np.asarray(train_y, dtype=np.int64)),
        test_x=torch.from_numpy(np.ascontiguousarray(test_x)),
        test_y=torch.from_numpy(np.asarray(test_y, dtype=np.int64)),
        class_names=list(class_names),
        mean=mean,
        std=std,
    )


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset` (the registered data sets), sorted."""
    return sorted(DATASETS)


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data directory: ``data_dir`` if given, else env ``BACKDOORLAB_DATA``, else the per-user cache
    ``$XDG_CACHE_HOME/backdoorlab/data`` (default ``~/.cache/backdoorlab/data``). Not created here."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "backdoorlab" / "data"


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, download: bool = True,
                 progress: bool = True) -> Dataset:
    """Load dataset ``name`` (see :func:`list_datasets`) from ``resolve_data_dir(data_dir)``.

    Missing files are downloaded from the official sources (MD5-verified) when ``download`` is set;
    otherwise a missing file is a :class:`BackdoorlabError`.
    """
    load = DATASETS.entry(name).run  # an unknown name: a one-line error listing the valid ones
    return load(resolve_data_dir(data_dir), download, progress)
