"""Image-classification datasets (MNIST, Fashion-MNIST, CIFAR-10, scikit-learn digits) as uint8 tensors.

>>> ds = load_dataset("mnist")          # files under resolve_data_dir(), downloaded if missing
>>> ds.train_x.shape, ds.train_x.dtype   # (torch.Size([60000, 1, 28, 28]), torch.uint8)

Each data set is registered, with its traits, in :data:`~backdoorlab.data.registry.DATASETS` by its module in
this package (``idx``: MNIST and Fashion-MNIST, ``cifar10``, ``digits``). Importing the package imports every
module in it, so adding a data set is adding its module here.
"""

import importlib
import pkgutil

from backdoorlab.data.datasets import Dataset, list_datasets, load_dataset, resolve_data_dir
from backdoorlab.data.download import ChecksumWarning
from backdoorlab.data.registry import (DATASETS, dataset_entry, default_arch, default_holdout, downloadable_datasets,
                                       sanitizer_augmentation, training_augmentation, training_recipe)

# every module of the package, so that each data set's module registers it
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
del _module

__all__ = ["ChecksumWarning", "DATASETS", "Dataset", "dataset_entry", "default_arch", "default_holdout",
           "downloadable_datasets", "list_datasets", "load_dataset", "resolve_data_dir", "sanitizer_augmentation",
           "training_augmentation", "training_recipe"]
