"""Batched image augmentation in torch (no per-sample Python loop).

All functions take float images (N, C, H, W) in [0, 1] and a ``torch.Generator`` for reproducibility.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F

from .errors import BackdoorlabError, valid_names

AUGMENTATIONS = ("none", "crop", "crop-flip", "crop-flip-jpeg", "jpeg", "affine")


def sanitizer_augmentation(dataset_name: str) -> str:
    """Augmentation for training on a small clean budget: crop-flip-jpeg for CIFAR-10, affine for greyscale sets."""
    return "crop-flip-jpeg" if dataset_name == "cifar10" else "affine"


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``padding`` pixels and crop back to (H, W) at an independent random offset per image."""
    n, c, h, w = images.shape
    padded = F.pad(images, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(n, c, h, w)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(n, c, h, w)
    out = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    return out


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def random_affine(images: torch.Tensor, generator: torch.Generator, degrees: float = 12.0, translate: float = 0.1,
                  scale: tuple[float, float] = (0.9, 1.1)) -> torch.Tensor:
    """Rotate by up to +-``degrees``, scale by a factor in ``scale`` and shift by up to ``translate`` of the image
    size, independently per image (bilinear resampling, zero fill). For small greyscale images (digits, clothes)."""
    n = images.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(degrees)
    factor = scale[0] + torch.rand(n, generator=generator) * (scale[1] - scale[0])
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * 2 * translate  # grid coordinates span [-1, 1]
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_jpeg(images: torch.Tensor, generator: torch.Generator, p: float = 0.5,
                quality: tuple[int, int] = (50, 95)) -> torch.Tensor:
    """Re-encode each image as JPEG with probability ``p``, at a quality drawn uniformly from ``quality``.

    Makes a model robust to compression artefacts (test images that went through JPEG, as in the shared CIFAR-10
    test set, or photos from the web). Uses Pillow's codec on CPU: about 0.1 ms per 32x32 image."""
    from PIL import Image

    n = images.shape[0]
    chosen = torch.rand(n, generator=generator) < p
    qualities = torch.randint(quality[0], quality[1] + 1, (n,), generator=generator)
    if not chosen.any():
        return images
    out = images.clone()
    pixels = (images[chosen].clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    decoded = []
    for img, q in zip(pixels, qualities[chosen].tolist()):
        buf = io.BytesIO()
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(buf, format="JPEG", quality=int(q))
        buf.seek(0)
        arr = np.asarray(Image.open(buf))
        decoded.append(arr.reshape(img.shape))
    out[chosen] = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).to(images.dtype).div(255)
    return out


def augment(images: torch.Tensor, kind: str, generator: torch.Generator, padding: int | None = None) -> torch.Tensor:
    """Apply a named augmentation: ``none``, ``crop`` (random shift), ``crop-flip`` (shift + mirror),
    ``crop-flip-jpeg`` (JPEG re-encoding of half the images, then shift + mirror), ``jpeg`` or ``affine``
    (rotation, scale and shift)."""
    if kind == "none":
        return images
    if kind not in AUGMENTATIONS:
        raise BackdoorlabError(f"unknown augmentation {kind!r}; valid: {valid_names(AUGMENTATIONS)}")
    if kind == "affine":
        return random_affine(images, generator)
    if kind.endswith("jpeg"):
        images = random_jpeg(images, generator)
        if kind == "jpeg":
            return images
    pad = padding if padding is not None else max(1, images.shape[-1] // 8)
    images = random_crop(images, pad, generator)
    if kind.startswith("crop-flip"):
        images = random_flip(images, generator)
    return images
