"""The shared tensor helpers (``backdoorlab.tensors``), and that ``backdoorlab.train`` still offers them."""

import torch

from backdoorlab import train
from backdoorlab.tensors import channels_last, model_channels_last, to_float


def test_to_float_scales_uint8_and_passes_floats():
    x = torch.tensor([[0, 255]], dtype=torch.uint8)
    assert torch.equal(to_float(x), torch.tensor([[0.0, 1.0]]))
    y = torch.tensor([0.25, 2.0], dtype=torch.float64)
    assert to_float(y).dtype == torch.float32 and torch.equal(to_float(y), y.float())


def test_channels_last_changes_only_the_memory_order():
    x = torch.rand(2, 3, 4, 5)
    cl = channels_last(x)
    assert cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(cl, x)
    v = torch.rand(3)
    assert channels_last(v) is v
    model = model_channels_last(torch.nn.Conv2d(3, 4, 3))
    assert model.weight.is_contiguous(memory_format=torch.channels_last)


def test_train_re_exports_the_helpers_for_older_imports():
    assert train.to_float is to_float and train.channels_last is channels_last
    assert train.model_channels_last is model_channels_last
