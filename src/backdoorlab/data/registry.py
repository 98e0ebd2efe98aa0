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

A *family* of data sets read from a path (trait ``takes_path``: ``folder``, ``npz``) is registered the same
way, with a loader called as ``fn(path, image_size) -> Dataset``; its members are named ``FAMILY:PATH``, and a
loaded one is named canonically (:func:`canonical_name`: the absolute resolved path), so a checkpoint's data set
compares equal whatever relative path is typed later. The family's traits apply to each member, overridden by
those the loader found in its content (:func:`record_content_traits`: held-out pool from the number of images,
architecture and augmentation from grey or colour; see ``user_traits``) once it is loaded in this process.

The accessors below answer for any name: a name that is not registered (a checkpoint's data set, say, from a
module not loaded) gets the registry's defaults, as the tables they replace did. :func:`dataset_entry` and
:func:`~backdoorlab.data.load_dataset` refuse unknown names.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

from pathlib import Path

from backdoorlab.config import Config
from backdoorlab.errors import BackdoorlabError, valid_names
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
    # a family of data sets read from a path, named FAMILY:PATH (folder, npz); its loader is fn(path, image_size)
    "takes_path": False,
})

# traits found in the content of FAMILY:PATH data sets loaded in this process, by canonical name
_CONTENT_TRAITS: dict[str, dict] = {}


def split_path_name(name: str) -> tuple[str, str] | None:
    """``(family, path)`` for a name ``FAMILY:PATH`` of a registered family (``folder:imgs`` -> ``("folder",
    "imgs")``); None for any other name. An empty path is a one-line error."""
    family, sep, path = name.partition(":")
    if not sep or family not in DATASETS or not DATASETS.entry(family).traits["takes_path"]:
        return None
    if not path:
        raise BackdoorlabError(f"data set {name!r} needs a path: {family}:PATH")
    return family, path


def split_subset_name(name: str) -> tuple[str, list[int]] | None:
    """``(base, classes)`` for a class subset ``BASE[CLASSES]`` (``mnist[0-4]`` -> ``("mnist", [0, 1, 2, 3, 4])``);
    None for any other name. CLASSES are label indices of BASE, comma-separated, each one index or a range
    ``I-J`` (``cifar10[0,1,8-9]``), returned sorted without repeats. Malformed classes, or a subset of a subset,
    are a one-line error; whether the indices exist is checked when the set is loaded (``data.subset``)."""
    match = _SUBSET.match(name)
    if match is None:
        return None
    base, text = match.group(1), match.group(2)
    if _SUBSET.match(base):
        raise BackdoorlabError(f"data set {name!r}: a class subset of a class subset; name the classes of "
                               f"{base.split('[')[0]!r} once")
    classes: set[int] = set()
    for item in text.split(","):
        low, dash, high = item.strip().partition("-")
        try:
            first, last = int(low), int(high if dash else low)
        except ValueError:
            raise BackdoorlabError(f"data set {name!r}: classes must be label indices or ranges I-J separated by "
                                   f"commas (e.g. {base}[0-4]), got {item.strip()!r}") from None
        if first < 0 or last < first:
            raise BackdoorlabError(f"data set {name!r}: {item.strip()!r} is not a range of label indices >= 0")
        classes.update(range(first, last + 1))
    return base, sorted(classes)


_SUBSET = re.compile(r"^(.+)\[([^\[\]]*)\]$")


def classes_text(classes: list[int]) -> str:
    """The canonical spelling of sorted label indices: runs of 3 or more as ranges (``[0, 1, 2, 3, 4]`` ->
    ``"0-4"``, ``[0, 1, 8, 9]`` -> ``"0,1,8,9"``)."""
    parts, i = [], 0
    while i < len(classes):
        j = i
        while j + 1 < len(classes) and classes[j + 1] == classes[j] + 1:
            j += 1
        parts.append(f"{classes[i]}-{classes[j]}" if j - i >= 2 else ",".join(map(str, classes[i:j + 1])))
        i = j + 1
    return ",".join(parts)


def canonical_name(name: str) -> str:
    """The name a data set is known by: ``FAMILY:`` + the absolute resolved path for a ``FAMILY:PATH`` name
    (PATH relative to the current directory, ``~`` expanded); a class subset as its base's canonical name with
    its classes sorted, ranges of three or more as ``I-J`` (``mnist[4,3,2,1,0]`` -> ``mnist[0-4]``); any other
    name unchanged."""
    subset = split_subset_name(name)
    if subset is not None:
        return f"{canonical_name(subset[0])}[{classes_text(subset[1])}]"
    split = split_path_name(name)
    if split is None:
        return name
    family, path = split
    return f"{family}:{Path(path).expanduser().resolve()}"


def record_content_traits(name: str, traits: Mapping[str, Any]) -> None:
    """Remember the traits a ``FAMILY:PATH`` data set's loader derived from its content (canonical ``name``),
    which the accessors below then give for that name instead of the family's defaults."""
    unknown = sorted(set(traits) - set(DATASETS.traits))
    if unknown:
        raise TypeError(f"unknown data set trait(s) {unknown}")
    _CONTENT_TRAITS[canonical_name(name)] = dict(traits)


def path_families() -> list[str]:
    """Sorted names of the families of data sets read from a path (``folder``, ``npz``)."""
    return sorted(n for n in DATASETS if DATASETS.entry(n).traits["takes_path"])


def dataset_entry(name: str) -> Entry:
    """The registry entry of data set ``name`` (of its family for ``FAMILY:PATH``, of its base for a class subset
    ``BASE[CLASSES]``); an unknown name is a one-line error listing the valid ones."""
    subset = split_subset_name(name)
    if subset is not None:
        return dataset_entry(subset[0])
    split = split_path_name(name)
    if split is not None:
        return DATASETS.entry(split[0])
    if name in DATASETS:
        return DATASETS.entry(name)
    raise BackdoorlabError(f"unknown dataset {name!r}; valid: {valid_forms()}")


def valid_forms() -> str:
    """The names a data set may be given by, for error messages: the registered ones, then ``FAMILY:PATH``."""
    names = [n for n in DATASETS if not DATASETS.entry(n).traits["takes_path"]]
    return ", ".join([valid_names(names), *(f"{n}:PATH" for n in path_families()), "any of them as NAME[CLASSES]"])


def dataset_traits(name: str) -> Mapping[str, Any]:
    """The traits of ``name``; the registry's defaults for a name that is not registered. A ``FAMILY:PATH``
    name gets its family's traits, overridden by those found in its content if it was loaded in this process; a
    class subset ``BASE[CLASSES]`` gets its base's, with the held-out pool its loading found (``data.subset``)."""
    subset = split_subset_name(name)
    if subset is not None:
        return {**dataset_traits(subset[0]), **_CONTENT_TRAITS.get(canonical_name(name), {})}
    split = split_path_name(name)
    if split is not None:
        return {**DATASETS.entry(split[0]).traits, **_CONTENT_TRAITS.get(canonical_name(name), {})}
    return DATASETS.entry(name).traits if name in DATASETS else DATASETS.traits


def default_holdout(name: str) -> int:
    """Size of the held-out clean pool of ``name``: 5,000 images (400 for the 1,797-image digits; for a
    ``FAMILY:PATH`` set, a tenth of a training split under 50,000 images)."""
    return dataset_traits(name)["holdout"]


def default_arch(name: str) -> str:
    """The architecture to train on ``name`` when none is named (small-cnn for greyscale sets, resnet20 for
    CIFAR-10 and colour ``FAMILY:PATH`` sets)."""
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
