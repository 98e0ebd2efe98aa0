"""Small tensor helpers shared by the training loop, the metrics, the curves, the attacks and the defenses.

They live here rather than in ``train.py`` so that a module that only needs to turn uint8 images into floats
(a detector, an attack) does not import the training loop.
"""

from __future__ import annotations

import torch


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [0, 1]; float images pass through."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images.float()


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """An image batch (N, C, H, W) in channels-last memory order (other tensors pass through). With a model
    whose convolution weights are channels-last too (:func:`model_channels_last`), oneDNN's CPU convolutions
    run faster than in the default order (docs/notebook/2026-12-05-benchmarks.md, "Channels-last convolutions");
    values are the same up to float rounding."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def model_channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """Put ``model``'s 4-d parameters and buffers in channels-last order, in place (a no-op for the others)."""
    return model.to(memory_format=torch.channels_last)
