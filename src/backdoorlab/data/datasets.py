"""The :class:`Dataset` container and :func:`load_dataset` for MNIST, Fashion-MNIST, CIFAR-10 and digits."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from backdoorlab.data import download as dl
from backdoorlab.data.formats import CIFAR_DIR, read_cifar10, read_idx_pair
from backdoorlab.errors import BackdoorlabError, valid_names

DATA_ENV = "BACKDOORLAB_DATA"

IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
DIGIT_CLASSES = [str(i) for i in range(10)]
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
DIGITS_TEST_SIZE = 500
DIGITS_SEED = 0


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


def _make(name: str, train_x, train_y, test_x, test_y, class_names: list[str]) -> Dataset:
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


def _load_idx(name: str, class_names: list[str]) -> Callable[..., Dataset]:
    """Loader for an IDX dataset (MNIST layout: four gzip files in ``<data_dir>/<name>/``)."""

    def load(data_dir: Path, download: bool, progress: bool) -> Dataset:
        paths = {
            split: [dl.ensure_file(name, f, data_dir, download, progress) for f in files]
            for split, files in IDX_FILES.items()
        }
        train_x, train_y = read_idx_pair(*paths["train"], name, len(class_names))
        test_x, test_y = read_idx_pair(*paths["test"], name, len(class_names))
        for path in (*paths["train"], *paths["test"]):
            dl.warn_if_unofficial(name, path)
        return _make(name, train_x, train_y, test_x, test_y, class_names)

    return load


def _load_cifar10(data_dir: Path, download: bool, progress: bool) -> Dataset:
    """CIFAR-10 from ``cifar10/cifar-10-batches-py/`` if extracted, else from ``cifar10/cifar-10-python.tar.gz``."""
    extracted = data_dir / "cifar10" / CIFAR_DIR
    if extracted.is_dir():
        return _make("cifar10", *read_cifar10(extracted))
    archive = dl.ensure_file("cifar10", CIFAR_ARCHIVE, data_dir, download, progress)
    arrays = read_cifar10(archive)
    dl.warn_if_unofficial("cifar10", archive)
    return _make("cifar10", *arrays)


def _load_digits(data_dir: Path, download: bool, progress: bool) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, 0..16 scaled to 0..255); seeded stratified
    split into 1,297 train / 500 test. Needs no files."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = np.rint(digits.images * (255 / 16)).astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    y = digits.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        x, y, test_size=DIGITS_TEST_SIZE, stratify=y, random_state=DIGITS_SEED
    )
    return _make("digits", train_x, train_y, test_x, test_y, DIGIT_CLASSES)


_LOADERS: dict[str, Callable[[Path, bool, bool], Dataset]] = {
    "cifar10": _load_cifar10,
    "digits": _load_digits,
    "fashion-mnist": _load_idx("fashion-mnist", FASHION_CLASSES),
    "mnist": _load_idx("mnist", DIGIT_CLASSES),
}


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`, sorted."""
    return sorted(_LOADERS)


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
    if name not in _LOADERS:
        raise BackdoorlabError(f"unknown dataset {name!r}; valid: {valid_names(_LOADERS)}")
    return _LOADERS[name](resolve_data_dir(data_dir), download, progress)
