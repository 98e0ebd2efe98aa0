"""The traits of a user's own data set (``folder:PATH``, ``npz:PATH``), which depend on what it holds rather than
on a registered name: the held-out pool's size from the number of training images, the default architecture
and the small-budget augmentation from grey or colour.

- held-out pool: 5,000 images as for the built-in sets when the training split has 50,000 or more, else a tenth
  of it (a 1,000-image set keeps 100); fewer than :data:`MIN_TRAIN` training images is an error naming both
  numbers.
- architecture: small-cnn for grey images, resnet20 for colour (as MNIST and CIFAR-10).
- sanitizer augmentation: affine for grey, crop-flip-jpeg for colour; training augmentation: none (a user's
  images need not tolerate flips), so training recipes are the registry's defaults.
"""

from __future__ import annotations

from backdoorlab.errors import BackdoorlabError

BUILT_IN_HOLDOUT = 5000  # the built-in sets' held-out pool
HOLDOUT_DIVISOR = 10  # a small set keeps a tenth of its training images
MIN_TRAIN = 20  # the fewest training images that leave a held-out pool of 2 and 18 to train on


def user_holdout(n_train: int) -> int:
    """The held-out pool of a user's data set with ``n_train`` training images: min(5,000, n_train // 10)."""
    if n_train < MIN_TRAIN:
        raise BackdoorlabError(f"{n_train} training images are too few for a held-out clean pool: a data set needs "
                               f"at least {MIN_TRAIN} (a tenth of them is set aside)")
    return min(BUILT_IN_HOLDOUT, n_train // HOLDOUT_DIVISOR)


def user_traits(n_train: int, channels: int) -> dict:
    """The traits (registry.DATASETS' keys) of a user's data set with ``n_train`` training images of
    ``channels`` channels (1: grey, 3: colour)."""
    grey = channels == 1
    return dict(holdout=user_holdout(n_train), arch="small-cnn" if grey else "resnet20",
                sanitizer_augment="affine" if grey else "crop-flip-jpeg")
