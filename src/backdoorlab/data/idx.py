"""MNIST and Fashion-MNIST: four gzip files in the IDX layout, in ``<data_dir>/<name>/``."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from backdoorlab.data import download as dl
from backdoorlab.data.datasets import DIGIT_CLASSES, Dataset, make_dataset
from backdoorlab.data.formats import read_idx_pair
from backdoorlab.data.registry import DATASETS, DatasetOptions

IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]


def idx_loader(name: str, class_names: list[str]) -> Callable[[Path, bool, bool], Dataset]:
    """Loader for an IDX data set (MNIST layout: four gzip files in ``<data_dir>/<name>/``)."""

    def load(data_dir: Path, download: bool, progress: bool) -> Dataset:
        paths = {
            split: [dl.ensure_file(name, f, data_dir, download, progress) for f in files]
            for split, files in IDX_FILES.items()
        }
        train_x, train_y = read_idx_pair(*paths["train"], name, len(class_names))
        test_x, test_y = read_idx_pair(*paths["test"], name, len(class_names))
        for path in (*paths["train"], *paths["test"]):
            dl.warn_if_unofficial(name, path)
        return make_dataset(name, train_x, train_y, test_x, test_y, class_names)

    load.__name__ = load.__qualname__ = f"load_{name.replace('-', '_')}"
    return load


def idx_md5(train_images: str, train_labels: str, test_images: str, test_labels: str) -> dict[str, str]:
    """The MD5 of each of an IDX data set's four files, by file name, in :data:`IDX_FILES`' order."""
    names = (*IDX_FILES["train"], *IDX_FILES["test"])
    return dict(zip(names, (train_images, train_labels, test_images, test_labels)))


# what the IDX data sets share: their pool, the architecture and the small-budget augmentation of greyscale digits
IDX_TRAITS = dict(holdout=5000, arch="small-cnn", sanitizer_augment="affine")

load_mnist = DATASETS.register(
    "mnist", DatasetOptions,
    "MNIST handwritten digits: 60,000 training and 10,000 test images, 28x28 greyscale, 10 classes.",
    **IDX_TRAITS, arch_recipes={"small-cnn": dict(epochs=3, lr=0.05, batch_size=128)},
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    md5=idx_md5("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
                "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"),
)(idx_loader("mnist", DIGIT_CLASSES))

load_fashion_mnist = DATASETS.register(
    "fashion-mnist", DatasetOptions,
    "Fashion-MNIST clothing photos: 60,000 training and 10,000 test images, 28x28 greyscale, 10 classes.",
    **IDX_TRAITS, arch_recipes={"small-cnn": dict(epochs=5, lr=0.05, batch_size=128)},
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    md5=idx_md5("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"),
)(idx_loader("fashion-mnist", FASHION_CLASSES))
