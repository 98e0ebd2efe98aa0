"""Batched image augmentation in torch (no per-sample Python loop).

All functions take float images (N, C, H, W) in [0, 1] and a ``torch.Generator`` for reproducibility.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F

from .data.registry import sanitizer_augmentation  # the small-budget augmentation, a data set trait  # noqa: F401
from .errors import BackdoorlabError, valid_names

AUGMENTATIONS = ("none", "crop", "crop-flip", "crop-flip-jpeg", "jpeg", "affine", "affine-elastic")


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


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return k / k.sum()


def random_elastic(images: torch.Tensor, generator: torch.Generator, alpha: float = 20.0,
                   sigma: float = 4.0) -> torch.Tensor:
    """Elastic distortion (Simard et al. 2003): a per-pixel displacement field drawn uniformly from [-1, 1],
    smoothed by a Gaussian of ``sigma`` pixels and scaled by ``alpha`` pixels, applied by bilinear resampling
    (zero fill), independently per image. Smooth local warps of the strokes, for handwriting-like images.
    ``alpha`` and ``sigma`` are for 28x28 images and scale with the image height."""
    n, _, h, w = images.shape
    alpha, sigma = alpha * h / 28, sigma * h / 28
    k = _gaussian_kernel(sigma)
    r = len(k) // 2
    d = torch.rand(n * 2, 1, h, w, generator=generator) * 2 - 1
    d = F.conv2d(F.pad(d, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))  # separable blur: rows,
    d = F.conv2d(F.pad(d, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))  # then columns
    d = d.view(n, 2, h, w) * alpha
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    gx = (xs + d[:, 0]) / max(w - 1, 1) * 2 - 1
    gy = (ys + d[:, 1]) / max(h - 1, 1) * 2 - 1
    grid = torch.stack([gx, gy], -1).to(images.dtype)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def random_jpeg(images: torch.Tensor, generator: torch.Generator, p: float = 0.5,
                quality: tuple[int, int] = (50, 95)) -> torch.Tensor:
    """Re-encode each image as JPEG with probability ``p``, at a quality drawn uniformly from ``quality``.

    Makes a model robust to compression artefacts (test images that went through JPEG, as in the shared CIFAR-10
    test set, or photos from the web). Uses Pillow's codec on CPU."""
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
    ``crop-flip-jpeg`` (JPEG re-encoding of half the images, then shift + mirror), ``jpeg``, ``affine``
    (rotation, scale and shift) or ``affine-elastic`` (affine, then an elastic distortion)."""
    if kind == "none":
        return images
    if kind not in AUGMENTATIONS:
        raise BackdoorlabError(f"unknown augmentation {kind!r}; valid: {valid_names(AUGMENTATIONS)}")
    if kind == "affine":
        return random_affine(images, generator)
    if kind == "affine-elastic":
        return random_elastic(random_affine(images, generator), generator)
    if kind.endswith("jpeg"):
        images = random_jpeg(images, generator)
        if kind == "jpeg":
            return images
    pad = padding if padding is not None else max(1, images.shape[-1] // 8)
    images = random_crop(images, pad, generator)
    if kind.startswith("crop-flip"):
        images = random_flip(images, generator)
    return images
