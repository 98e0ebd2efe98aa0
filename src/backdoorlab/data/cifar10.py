"""CIFAR-10: 32x32 colour photos, from the official python archive (or its extracted batches)."""

from __future__ import annotations

from pathlib import Path

from backdoorlab.data import download as dl
from backdoorlab.data.datasets import Dataset, make_dataset
from backdoorlab.data.formats import CIFAR_DIR, read_cifar10
from backdoorlab.data.registry import DATASETS, DatasetOptions

CIFAR_ARCHIVE = "cifar-10-python.tar.gz"


@DATASETS.register(
    "cifar10", DatasetOptions,
    "CIFAR-10 photos: 50,000 training and 10,000 test images, 32x32 colour, 10 classes.",
    holdout=5000, arch="resnet20",
    recipe=dict(epochs=20, lr=0.1, batch_size=128, augment="crop-flip-jpeg", channels_last=True),
    sanitizer_augment="crop-flip-jpeg",
    mirrors=("https://www.cs.toronto.edu/~kriz/",),
    md5={CIFAR_ARCHIVE: "c58f30108f718f92721af3b95e74349a"},
)
def load_cifar10(data_dir: Path, download: bool, progress: bool) -> Dataset:
    """CIFAR-10 from ``cifar10/cifar-10-batches-py/`` if extracted, else from ``cifar10/cifar-10-python.tar.gz``."""
    extracted = data_dir / "cifar10" / CIFAR_DIR
    if extracted.is_dir():
        return make_dataset("cifar10", *read_cifar10(extracted))
    archive = dl.ensure_file("cifar10", CIFAR_ARCHIVE, data_dir, download, progress)
    arrays = read_cifar10(archive)
    dl.warn_if_unofficial("cifar10", archive)
    return make_dataset("cifar10", *arrays)
