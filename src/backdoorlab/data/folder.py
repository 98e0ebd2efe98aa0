"""``folder:PATH``: a user's images, one sub-folder per class (data/image_files.py says which files and in which
order), read into memory as one data set.

Layout: ``PATH/train/CLASS/*`` and ``PATH/test/CLASS/*`` with the same class names; or ``PATH/CLASS/*`` alone,
which is split into train and test by a seeded, stratified split (:data:`SPLIT_SEED`, :data:`TEST_FRACTION` of
each class to test), recorded in the data set's ``source``. Grey images stay one channel when every image is
grey; otherwise all are converted to RGB (palette and alpha images too; alpha is dropped). Every image is brought
to one size (image_size.py), by the resize method asked for (resize.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from backdoorlab.data.datasets import Dataset
from backdoorlab.data.image_files import class_folders, list_split
from backdoorlab.data.image_size import check_image_size, common_size, resize_array, resize_record, warn_resized
from backdoorlab.data.median_defense import check_resize_defense
from backdoorlab.data.resize import DEFAULT_RESIZE, check_resize
from backdoorlab.data.registry import DATASETS, DatasetOptions
from backdoorlab.data.user_dataset import make_user_dataset
from backdoorlab.errors import BackdoorlabError

SPLIT_SEED = 0  # the seed of the train/test split of a folder without train/ and test/
TEST_FRACTION = 0.2  # the part of each class that split sends to the test set
# Pillow modes read as one grey channel; any other mode (RGB, RGBA, P, CMYK, YCbCr, ...) is read as RGB
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


def decode(path: Path) -> np.ndarray:
    """The image at ``path`` as uint8 (H, W) when grey, else (H, W, 3); one line naming the file when it does
    not decode."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            return np.asarray(image.convert("L" if image.mode in GREY_MODES else "RGB"))
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise BackdoorlabError(f"{path}: not a readable image ({e})") from None


def stack(images: list[np.ndarray], size: tuple[int, int], channels: int, method: str = DEFAULT_RESIZE,
          defense: str = "none") -> tuple[np.ndarray, int]:
    """Images as one uint8 (N, C, H, W) array of ``size`` (H, W) and ``channels`` (grey images repeated to
    RGB when ``channels`` is 3), resized with ``method`` and ``defense`` (image_size.resize_array), and how many
    were resized."""
    out = np.empty((len(images), *size, channels), dtype=np.uint8)
    resized = 0
    for i, image in enumerate(images):
        if image.shape[:2] != size:
            image = resize_array(image, size, method, defense)
            resized += 1
        out[i] = image[..., None] if image.ndim == 2 else image
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2)), resized


def stratified_split(labels: list[int], num_classes: int) -> tuple[list[int], list[int]]:
    """Seeded stratified split of positions ``0..len(labels)-1`` into (train, test), each sorted: of each class
    ``round(TEST_FRACTION * n)`` images (at least one) go to test."""
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    y = torch.tensor(labels)
    train, test = [], []
    for label in range(num_classes):
        members = torch.nonzero(y == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_test = max(1, round(TEST_FRACTION * len(members)))
        test += members[:n_test].tolist()
        train += members[n_test:].tolist()
    return sorted(train), sorted(test)


def list_folder(root: Path) -> tuple[list[str], dict[str, tuple[list[Path], list[int]]], dict | None]:
    """The class names, each split's (files, labels), and the split made (None when the folder has
    ``train/`` and ``test/``)."""
    has_train, has_test = (root / "train").is_dir(), (root / "test").is_dir()
    if has_train != has_test:
        missing = "test" if has_train else "train"
        raise BackdoorlabError(f"{root}: has {'train' if has_train else 'test'}/ but no {missing}/ "
                               f"(give both, or only class folders for a seeded split)")
    if has_train:
        classes, test_classes = class_folders(root / "train"), class_folders(root / "test")
        if classes != test_classes:
            first = next(c for c in sorted(set(classes) ^ set(test_classes)))
            side, other = ("train", "test") if first in classes else ("test", "train")
            raise BackdoorlabError(f"{root}: class {first!r} is in {side}/ but not in {other}/ (the train and test "
                                   f"class lists must be equal)")
        return classes, {s: list_split(root / s, classes) for s in ("train", "test")}, None
    classes = class_folders(root)
    paths, labels = list_split(root, classes)
    small = [c for k, c in enumerate(classes) if labels.count(k) < 2]
    if small:
        raise BackdoorlabError(f"{root / small[0]}: class {small[0]!r} has one image; a train/test split needs at "
                               f"least two per class")
    train, test = stratified_split(labels, len(classes))
    splits = {"train": ([paths[i] for i in train], [labels[i] for i in train]),
              "test": ([paths[i] for i in test], [labels[i] for i in test])}
    return classes, splits, {"seed": SPLIT_SEED, "test_fraction": TEST_FRACTION, "stratified": True}


@DATASETS.register(
    "folder", DatasetOptions,
    "Your images in class sub-folders, as folder:PATH: PATH/train/CLASS/* and PATH/test/CLASS/* (or PATH/CLASS/*, "
    "split 80/20 seeded); png, jpg, jpeg, bmp, webp; grey or RGB.",
    takes_path=True, holdout=5000, arch="small-cnn", sanitizer_augment="affine",
)
def load_folder(path: str, image_size: tuple[int, int] | None = None, resize: str | None = None,
                resize_defense: str | None = None) -> Dataset:
    """The images under ``path`` (see the module's docstring), brought to ``image_size`` (H, W) or else their
    most common size, with ``resize`` (data/resize.py; default Lanczos) and ``resize_defense`` (``"median"``:
    the selective median filter first)."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise BackdoorlabError(f"{root}: {'not a folder' if root.exists() else 'no such folder'} (folder:PATH needs "
                               f"a folder of class sub-folders)")
    size = check_image_size(image_size)
    method = check_resize(resize)
    defense = check_resize_defense(resize_defense, method)
    classes, splits, split = list_folder(root)
    images = {s: [decode(p) for p in paths] for s, (paths, _) in splits.items()}
    every = images["train"] + images["test"]
    channels = 1 if all(image.ndim == 2 for image in every) else 3
    target = size or common_size([image.shape[:2] for image in every])
    arrays, resized = {}, 0
    for s in ("train", "test"):
        arrays[s], n = stack(images[s], target, channels, method, defense)
        resized += n
    warn_resized(resized, len(every), target, size is None, f"folder:{root}")
    source = {"kind": "folder", "path": str(root), "split": split,
              "images": {s: len(paths) for s, (paths, _) in splits.items()}, "resized": resized,
              **resize_record(method, defense)}
    return make_user_dataset(f"folder:{root}", arrays["train"], splits["train"][1], arrays["test"],
                             splits["test"][1], classes, source)
