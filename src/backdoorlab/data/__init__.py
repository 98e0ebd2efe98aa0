"""Image-classification datasets (MNIST, Fashion-MNIST, CIFAR-10, scikit-learn digits) as uint8 tensors.

>>> ds = load_dataset("mnist")          # files under resolve_data_dir(), downloaded if missing
>>> ds.train_x.shape, ds.train_x.dtype   # (torch.Size([60000, 1, 28, 28]), torch.uint8)

Each data set is registered, with its traits, in :data:`~backdoorlab.data.registry.DATASETS` by its module in
this package (``idx``: MNIST and Fashion-MNIST, ``cifar10``, ``digits``). Importing the package imports every
module in it, so adding a data set is adding its module here.
"""

from backdoorlab.data.datasets import Dataset, list_datasets, load_dataset, resolve_data_dir
from backdoorlab.data.download import ChecksumWarning
from backdoorlab.data.registry import (DATASETS, dataset_entry, default_arch, default_holdout, downloadable_datasets,
                                       sanitizer_augmentation, training_augmentation, training_recipe)

from backdoorlab.registry import import_plugins

import_plugins(__name__)  # every module of the package, so that each data set's module registers it

__all__ = ["ChecksumWarning", "DATASETS", "Dataset", "dataset_entry", "default_arch", "default_holdout",
           "downloadable_datasets", "list_datasets", "load_dataset", "resolve_data_dir", "sanitizer_augmentation",
           "training_augmentation", "training_recipe"]
