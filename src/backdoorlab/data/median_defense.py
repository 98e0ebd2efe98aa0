"""The selective median filter of Quiring et al. ("Adversarial Preprocessing: Understanding and Preventing
Image-Scaling Attacks in Machine Learning", USENIX Security 2020): a defense applied to an image before it is
shrunk with a kernel that reads few of its pixels (nearest, bilinear; data/resize.py).

An image-scaling attack changes only the pixels the scaling reads (:func:`~backdoorlab.data.resize.sampled_pixels`).
The filter replaces each of those pixels by the median of its neighbourhood, ``+- floor(H / h)`` rows and
``+- floor(W / w)`` columns around it (the paper's bandwidth, one scaling ratio each way), leaving out the other
pixels the scaling reads: the median then comes from pixels the attacker had no reason to touch, and the image
that reaches the model is rebuilt from them. An even number of values takes the lower middle one (as the
authors' code does). Pixels the scaling does not read are left as they are; a clean image changes little.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from backdoorlab.data.resize import sampled_pixels
from backdoorlab.errors import BackdoorlabError, valid_names

RESIZE_DEFENSES = ("none", "median")
MEDIAN_METHODS = ("nearest", "bilinear")  # the kernels that read few pixels; lanczos and area read all of them


def check_resize_defense(defense: str | None, method: str) -> str:
    """``defense`` (None: ``"none"``) when it is one of :data:`RESIZE_DEFENSES` and fits resize ``method``."""
    defense = "none" if defense is None else defense
    if defense not in RESIZE_DEFENSES:
        raise BackdoorlabError(f"unknown resize defense {defense!r}; valid: {valid_names(RESIZE_DEFENSES)}")
    if defense == "median" and method not in MEDIAN_METHODS:
        raise BackdoorlabError(f"the median filter defends resizing that reads few pixels "
                               f"({' or '.join(MEDIAN_METHODS)}); --resize {method} reads every pixel and needs no filter")
    return defense


def bandwidth(src: tuple[int, int], dst: tuple[int, int]) -> tuple[int, int]:
    """The half-widths of the neighbourhood, rows and columns: the scaling ratio of each axis, rounded down (at
    least 1)."""
    return max(1, src[0] // dst[0]), max(1, src[1] // dst[1])


@functools.lru_cache(maxsize=16)
def _windows(src: tuple[int, int], dst: tuple[int, int], method: str):
    """The sampled pixels' mask (H, W), their (rows, cols), and for each the (rows, cols) of its window in the
    image padded by the bandwidth, (P, window) each."""
    mask = sampled_pixels(src, dst, method)
    rows, cols = torch.nonzero(mask, as_tuple=True)
    bh, bw = bandwidth(src, dst)
    dr, dc = torch.arange(-bh, bh + 1), torch.arange(-bw, bw + 1)
    r = (rows[:, None, None] + bh + dr[None, :, None]).expand(-1, len(dr), len(dc)).reshape(len(rows), -1)
    c = (cols[:, None, None] + bw + dc[None, None, :]).expand(-1, len(dr), len(dc)).reshape(len(rows), -1)
    return mask, rows, cols, r, c, (bh, bw)


def median_filter_batch(x: torch.Tensor, size: tuple[int, int], method: str) -> torch.Tensor:
    """uint8 images (N, C, H, W) with the pixels that resizing to ``size`` with ``method`` reads replaced by the
    median of their neighbourhood (the module's docstring); unchanged when they are not shrunk."""
    src = tuple(x.shape[-2:])
    if src[0] <= size[0] and src[1] <= size[1]:
        return x
    mask, rows, cols, r, c, (bh, bw) = _windows(src, tuple(size), method)
    values = x.to(torch.float32)
    others = values.masked_fill(mask, float("nan"))  # the scaling's pixels leave the medians
    padded = F.pad(others, (bw, bw, bh, bh), value=float("nan"))  # so do pixels outside the image
    medians = torch.nanmedian(padded[:, :, r, c], dim=-1).values  # (N, C, P)
    original = values[:, :, rows, cols]
    medians = torch.where(torch.isnan(medians), original, medians)  # a window of sampled pixels only: kept
    out = values.clone()
    out[:, :, rows, cols] = medians
    return out.round().clamp(0, 255).to(torch.uint8)


def median_filter_sampled(image: np.ndarray, size: tuple[int, int], method: str) -> np.ndarray:
    """:func:`median_filter_batch` of one uint8 (H, W) or (H, W, C) image, in the same layout."""
    x = torch.from_numpy(np.array(image))  # a copy: decoded arrays are read-only
    x = x[None, None] if x.dim() == 2 else x.permute(2, 0, 1)[None]
    out = median_filter_batch(x, size, method)[0]
    return (out[0] if image.ndim == 2 else out.permute(1, 2, 0)).numpy()
