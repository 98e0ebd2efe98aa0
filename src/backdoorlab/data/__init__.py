"""Image-classification datasets (MNIST, Fashion-MNIST, CIFAR-10, scikit-learn digits) as uint8 tensors.

>>> ds = load_dataset("mnist")          # files under resolve_data_dir(), downloaded if missing
>>> ds.train_x.shape, ds.train_x.dtype   # (torch.Size([60000, 1, 28, 28]), torch.uint8)
"""

from backdoorlab.data.datasets import Dataset, list_datasets, load_dataset, resolve_data_dir
from backdoorlab.data.download import ChecksumWarning

__all__ = ["ChecksumWarning", "Dataset", "list_datasets", "load_dataset", "resolve_data_dir"]
