"""A :class:`~backdoorlab.data.Dataset` built from a user's images (``folder:PATH``, ``npz:PATH``): named
canonically, its traits derived from its content and recorded for the registry's accessors, its source
recorded for the sidecar."""

from __future__ import annotations

import numpy as np

from backdoorlab.data.datasets import Dataset, make_dataset
from backdoorlab.data.registry import canonical_name, record_content_traits
from backdoorlab.data.user_traits import user_traits
from backdoorlab.errors import BackdoorlabError


def make_user_dataset(name: str, train_x: np.ndarray, train_y, test_x: np.ndarray, test_y,
                      class_names: list[str], source: dict) -> Dataset:
    """The data set ``name`` (``FAMILY:PATH``) of uint8 (N, C, H, W) images; ``source``: how it was read
    (``image_size`` and ``channels`` are added)."""
    name = canonical_name(name)
    try:
        traits = user_traits(len(train_y), train_x.shape[1])
    except BackdoorlabError as e:  # too few training images for a held-out pool: say which data set
        raise BackdoorlabError(f"{source['path']}: {e}") from None
    source = {**source, "image_size": list(train_x.shape[2:]), "channels": int(train_x.shape[1])}
    dataset = make_dataset(name, train_x, train_y, test_x, test_y, class_names, source=source)
    record_content_traits(name, traits)
    return dataset
