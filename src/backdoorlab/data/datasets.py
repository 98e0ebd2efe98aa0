"""The :class:`Dataset` container, :func:`load_dataset` and :func:`list_datasets`.

The loaders live in one module per family of data sets (``idx``: MNIST and Fashion-MNIST, ``cifar10``,
``digits``; ``folder`` and ``npz``: a user's own images, named ``folder:PATH`` / ``npz:PATH``), each registered
in :data:`~backdoorlab.data.registry.DATASETS`; they build their :class:`Dataset` with :func:`make_dataset`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from backdoorlab.data.registry import DATASETS, dataset_entry, split_path_name, split_subset_name
from backdoorlab.errors import BackdoorlabError

DATA_ENV = "BACKDOORLAB_DATA"
DIGIT_CLASSES = [str(i) for i in range(10)]  # the class names of the handwritten-digit sets


@dataclass
class Dataset:
    """An image-classification dataset held in memory.

    Images are uint8 pixel values 0..255, shape (N, C, H, W), contiguous; labels are int64 class indices,
    shape (N,). ``mean``/``std`` are per-channel statistics of ``train_x / 255`` (for normalisation).
    ``source``: for a data set read from a user's files (``folder:PATH``, ``npz:PATH``), where and how it was
    read (kind, path, image size, the train/test split it made if any, file counts), recorded in the sidecar of
    the models trained on it; None for the built-in sets. A class subset (``mnist[0-4]``, :mod:`.subset`) has
    ``source`` saying which classes of which set it holds, and keeps that set as ``parent`` (not compared, not
    printed): the latent backdoor draws its target images from the parent's classes outside the subset.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: dict | None = None
    parent: "Dataset | None" = field(default=None, repr=False, compare=False)

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


def make_dataset(name: str, train_x, train_y, test_x, test_y, class_names: list[str],
                 source: dict | None = None) -> Dataset:
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
        source=source,
    )


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset` as they are (the registered data sets), sorted; the families read
    from a path (``folder``, ``npz``) take ``FAMILY:PATH`` instead and are not listed here."""
    return sorted(n for n in DATASETS if not DATASETS.entry(n).traits["takes_path"])


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
                 progress: bool = True, image_size: tuple[int, int] | None = None, resize: str | None = None,
                 resize_defense: str | None = None) -> Dataset:
    """Load dataset ``name`` (see :func:`list_datasets`) from ``resolve_data_dir(data_dir)``, or a user's own
    images, ``folder:PATH`` or ``npz:PATH`` (PATH relative to the current directory; docs/data.md), or some classes
    of either, ``NAME[CLASSES]`` (``mnist[0-4]``; :mod:`backdoorlab.data.subset`).

    Missing files are downloaded from the official sources (MD5-verified) when ``download`` is set;
    otherwise a missing file is a :class:`BackdoorlabError`. ``image_size`` (H, W): the size a ``folder:`` or
    ``npz:`` set's images are resized to (default: their most common size); the built-in sets have one size.
    ``resize`` (``lanczos``, the default; ``nearest``, ``bilinear``, ``area``) and ``resize_defense`` (``none``,
    ``median``): how a ``folder:``/``npz:`` set is resized (data/resize.py, data/median_defense.py).
    """
    entry = dataset_entry(name)  # an unknown name: a one-line error listing the valid ones
    subset = split_subset_name(name)
    if subset is not None:  # BASE[CLASSES]: some classes of BASE, relabelled 0..k-1 (data/subset.py)
        from backdoorlab.data.subset import class_subset
        return class_subset(load_dataset(subset[0], data_dir, download, progress, image_size), subset[1])
    split = split_path_name(name)
    resizing = {k: v for k, v in (("resize", resize), ("resize_defense", resize_defense)) if v is not None}
    if split is not None:
        return entry.run(split[1], image_size, **resizing)
    if entry.traits["takes_path"]:
        raise BackdoorlabError(f"data set {name!r} needs a path: {name}:PATH")
    if image_size is not None or resizing:
        what = "an image size" if image_size is not None else "a resize method"
        raise BackdoorlabError(f"{what} applies to folder:PATH and npz:PATH data sets only; {name} images "
                               f"have one size")
    return entry.run(resolve_data_dir(data_dir), download, progress)
