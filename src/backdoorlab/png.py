"""Writing a float image tensor as a PNG file (reversed triggers, adversarial patches), upscaled so that
small images stay visible, and atomically."""

from __future__ import annotations

import numpy as np
import torch

from .io import atomic_path


def save_png(image: torch.Tensor, path, scale: int = 4) -> None:
    """Write a (C, H, W) or (H, W) float image in [0, 1] (C = 1 or 3) as a PNG, upscaled ``scale`` times
    (nearest neighbour), atomically."""
    from PIL import Image

    img = image.detach().float().clamp(0, 1).cpu()
    if img.dim() == 3 and img.shape[0] == 1:
        img = img[0]
    arr = (img.numpy() * 255).round().astype(np.uint8)
    if arr.ndim == 3:
        arr = arr[:3].transpose(1, 2, 0) if arr.shape[0] >= 3 else arr[0]
    im = Image.fromarray(arr)
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")
