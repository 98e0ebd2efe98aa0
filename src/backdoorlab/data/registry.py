"""The data set registry: every data set's loader and what the rest of the library needs to know about it.

A data set's module registers its loader, called as ``fn(data_dir, download, progress) -> Dataset``, where the
loader is defined::

    @DATASETS.register("digits", DatasetOptions, "scikit-learn's bundled 8x8 digits ...", holdout=400, ...)
    def load_digits(data_dir, download, progress): ...

with its *traits* (the defaults below): the size of its held-out clean pool, its default architecture, its
training recipe (and per-architecture overrides; the recipe's ``augment`` is its training augmentation), the
sanitizer's small-budget augmentation, and for downloaded files their official mirrors and MD5s. The package
``backdoorlab.data`` imports every module in it, so a new data set is one new module; nothing else keeps a
list of data set names or tests a data set by name.

The accessors below answer for any name: a name that is not registered (a checkpoint's data set, say, from a
module not loaded) gets the registry's defaults, as the tables they replace did. :func:`dataset_entry` and
:func:`~backdoorlab.data.load_dataset` refuse unknown names.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from backdoorlab.config import Config
from backdoorlab.registry import Entry, Registry

#: The training recipe of a data set that declares none, and of an architecture it has no recipe for.
DEFAULT_RECIPE = dict(epochs=10, lr=0.05, batch_size=128)


@dataclasses.dataclass
class DatasetOptions(Config):
    """A data set's options: none so far (what a loader takes is the data directory, ``download`` and
    ``progress``); a data set that needs some would declare them in a subclass."""


DATASETS = Registry("dataset", traits={
    # images of the training set set aside, before any poisoning, as the held-out clean pool (budget.py)
    "holdout": 5000,
    # the architecture to train on it when none is named
    "arch": "small-cnn",
    # training recipe for any architecture: TrainConfig fields (epochs, lr, batch_size, and augment, the data
    # set's training augmentation, "none" when absent, ...)
    "recipe": DEFAULT_RECIPE,
    # per architecture, TrainConfig fields that override the recipe's
    "arch_recipes": {},
    # augmentation for training on a small clean budget (the sanitizer's curve and second endpoint, FST)
    "sanitizer_augment": "affine",
    # base URLs of the official copies of its files, tried in order (download.py); none: needs no download
    "mirrors": (),
    # official MD5 of each of its files, by file name
    "md5": {},
})


def dataset_entry(name: str) -> Entry:
    """The registry entry of data set ``name``; an unknown name is a one-line error listing the valid ones."""
    return DATASETS.entry(name)


def dataset_traits(name: str) -> Mapping[str, Any]:
    """The traits of ``name``; the registry's defaults for a name that is not registered."""
    return DATASETS.entry(name).traits if name in DATASETS else DATASETS.traits


def default_holdout(name: str) -> int:
    """Size of the held-out clean pool of ``name``: 5,000 images (400 for the 1,797-image digits)."""
    return dataset_traits(name)["holdout"]


def default_arch(name: str) -> str:
    """The architecture to train on ``name`` when none is named (small-cnn for greyscale sets, resnet20 for
    CIFAR-10)."""
    return dataset_traits(name)["arch"]


def training_recipe(dataset: str, arch: str) -> dict:
    """The training defaults (TrainConfig fields) for ``arch`` on ``dataset``: the data set's recipe, overridden
    by its recipe for ``arch`` if it has one; a new dict."""
    traits = dataset_traits(dataset)
    return {**traits["recipe"], **traits["arch_recipes"].get(arch, {})}


def training_augmentation(name: str) -> str:
    """The augmentation models are trained with on ``name`` (crop-flip-jpeg for CIFAR-10, none for the
    greyscale sets): the recipe's ``augment``."""
    return dataset_traits(name)["recipe"].get("augment", "none")


def sanitizer_augmentation(name: str) -> str:
    """Augmentation for training on a small clean budget of ``name``: crop-flip-jpeg for CIFAR-10, affine for
    greyscale sets (``affine-elastic`` trains a better model from scratch on MNIST but did not make a better
    sanitizer: docs/sanitizer.md)."""
    return dataset_traits(name)["sanitizer_augment"]


def downloadable_datasets() -> list[str]:
    """Sorted names of the data sets whose files are downloaded (those with official mirrors)."""
    return sorted(n for n in DATASETS if DATASETS.entry(n).traits["mirrors"])
