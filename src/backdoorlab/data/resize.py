"""How a user's images are brought to one size (``--resize``): the method, and the linear map a method applies.

``lanczos`` (the default, unchanged): Pillow's Lanczos filter, antialiased when shrinking: every source pixel
counts. The others are the kernels of the common vision libraries without antialiasing, computed with
``torch.nn.functional.interpolate`` (``antialias=False``):

- ``nearest``: output pixel ``i`` copies source pixel ``floor(i * H / h)`` (OpenCV's ``INTER_NEAREST``, torch's
  ``nearest``);
- ``bilinear``: half-pixel centres, ``(i + 0.5) * H / h - 0.5``, interpolated between the two nearest source
  pixels of each axis (OpenCV's ``INTER_LINEAR``, TensorFlow 2's ``bilinear`` with ``antialias=False``);
- ``area``: each output pixel is the mean of the source pixels it covers (OpenCV's ``INTER_AREA``, torch's
  ``adaptive_avg_pool2d``).

Shrinking by a factor k, nearest and bilinear read only one or two source pixels in every k of each axis: the rest
of the image never reaches the model. That is what the image-scaling attack (Xiao et al. 2019) exploits
(attacks/image_scaling.py) and what area scaling and the selective median filter (data/median_defense.py) of
Quiring et al. (2020) take away. :func:`scaling_matrices` gives the map of nearest, bilinear and area as the two
matrices (L, R) with ``resize(X) = L @ X @ R.T`` on every channel, read off the resize itself so that the attack
and the defense meet exactly what the pipeline does.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from backdoorlab.errors import BackdoorlabError, valid_names

RESIZE_METHODS = ("lanczos", "nearest", "bilinear", "area")
DEFAULT_RESIZE = "lanczos"
# what torch.nn.functional.interpolate calls each of the methods it computes
TORCH_MODES = {"nearest": "nearest", "bilinear": "bilinear", "area": "area"}


def check_resize(method: str | None) -> str:
    """``method`` when it is one of :data:`RESIZE_METHODS` (None: the default); a one-line error otherwise."""
    if method is None:
        return DEFAULT_RESIZE
    if method not in RESIZE_METHODS:
        raise BackdoorlabError(f"unknown resize method {method!r}; valid: {valid_names(RESIZE_METHODS)}")
    return method


def resize_float(x: torch.Tensor, size: tuple[int, int], method: str) -> torch.Tensor:
    """Float images ``x`` (N, C, H, W) resized to ``size`` (H, W) with ``method`` (nearest, bilinear or area)."""
    mode = TORCH_MODES.get(method)
    if mode is None:
        raise BackdoorlabError(f"resize method {method!r} is not a linear kernel; valid: {valid_names(TORCH_MODES)}")
    if tuple(x.shape[-2:]) == tuple(size):
        return x.clone()
    kwargs = {"align_corners": False, "antialias": False} if mode == "bilinear" else {}
    return F.interpolate(x, size=tuple(size), mode=mode, **kwargs)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float pixels in [0, 255] rounded and clipped to uint8."""
    return x.round().clamp(0, 255).to(torch.uint8)


def resize_with(image: np.ndarray, size: tuple[int, int], method: str) -> np.ndarray:
    """A uint8 (H, W) or (H, W, C) image resized to ``size`` (H, W) with ``method`` (one of
    :data:`RESIZE_METHODS`), uint8 of the same layout."""
    if method == "lanczos":
        from PIL import Image

        return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.LANCZOS))
    x = torch.from_numpy(np.array(image)).to(torch.float64)  # a copy: decoded arrays are read-only
    x = x[None, None] if x.dim() == 2 else x.permute(2, 0, 1)[None]
    out = to_uint8(resize_float(x, size, method))[0]
    return (out[0] if image.ndim == 2 else out.permute(1, 2, 0)).numpy()


def axis_matrix(n_in: int, n_out: int, method: str) -> torch.Tensor:
    """The (n_out, n_in) float64 matrix the resize applies along one axis (the other axis kept), read off the
    resize itself: resizing an identity image along one axis returns it."""
    eye = torch.eye(n_in, dtype=torch.float64)[None, None]
    return resize_float(eye, (n_out, n_in), method)[0, 0]


def scaling_matrices(src: tuple[int, int], dst: tuple[int, int], method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, R), float64 of shapes (h, H) and (w, W), with ``resize(X) = L @ X @ R.T`` for an (H, W) channel X
    resized to ``dst`` = (h, w) with ``method`` (nearest, bilinear or area: each is separable)."""
    return axis_matrix(src[0], dst[0], method), axis_matrix(src[1], dst[1], method)


def sampled_pixels(src: tuple[int, int], dst: tuple[int, int], method: str) -> torch.Tensor:
    """Bool (H, W): the source pixels that the resize to ``dst`` reads with a non-zero weight."""
    left, right = scaling_matrices(src, dst, method)
    return (left != 0).any(0)[:, None] & (right != 0).any(0)[None, :]
