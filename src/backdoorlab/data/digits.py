"""scikit-learn's bundled 8x8 handwritten digits: no files, no download; small enough for a one-minute demo."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from backdoorlab.data.datasets import DIGIT_CLASSES, Dataset, make_dataset
from backdoorlab.data.registry import DATASETS, DatasetOptions

DIGITS_TEST_SIZE = 500
DIGITS_SEED = 0


@DATASETS.register(
    "digits", DatasetOptions,
    "scikit-learn's bundled digits: 1,297 training and 500 test images, 8x8 greyscale, 10 classes; no download.",
    holdout=400, arch="small-cnn", arch_recipes={"small-cnn": dict(epochs=40, lr=0.05, batch_size=64)},
    sanitizer_augment="affine",
)
def load_digits(data_dir: Path, download: bool, progress: bool) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, 0..16 scaled to 0..255); seeded stratified
    split into 1,297 train / 500 test. Needs no files."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_digits()
    x = np.rint(digits.images * (255 / 16)).astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    y = digits.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        x, y, test_size=DIGITS_TEST_SIZE, stratify=y, random_state=DIGITS_SEED
    )
    return make_dataset("digits", train_x, train_y, test_x, test_y, DIGIT_CLASSES)
