"""The one size every image of a user's data set is brought to: ``--image-size H[,W]`` parsed, or else the most
common size among its images; the others resized (by default Pillow's Lanczos filter, antialiased; ``--resize``
chooses another method, data/resize.py, and ``--resize-defense median`` filters first, data/median_defense.py)
with a warning that counts them."""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np

from backdoorlab.data.median_defense import median_filter_sampled
from backdoorlab.data.resize import DEFAULT_RESIZE, resize_with
from backdoorlab.errors import BackdoorlabError


def parse_image_size(text: str | None) -> tuple[int, int] | None:
    """``"H"`` (square) or ``"H,W"`` as (H, W), positive integers; None for None or empty text."""
    if text is None or str(text).strip() == "":
        return None
    parts = str(text).split(",")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2) or any(s < 1 for s in sizes):
        raise BackdoorlabError(f"image size must be H or H,W (positive integers, in pixels), got {text!r}")
    return (sizes[0], sizes[-1])


def check_image_size(size) -> tuple[int, int] | None:
    """``size`` as an (H, W) tuple of positive integers (a checkpoint's ``input_size`` is a list); None stays."""
    if size is None:
        return None
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
        raise BackdoorlabError(f"image size must be (H, W), two positive integers, got {size!r}")
    return (size[0], size[1])


def common_size(sizes: list[tuple[int, int]]) -> tuple[int, int]:
    """The most frequent (H, W) in ``sizes``; a tie goes to the larger area, then to the larger (H, W)."""
    counts = Counter(sizes)
    return max(counts, key=lambda s: (counts[s], s[0] * s[1], s))


def resize_array(image: np.ndarray, size: tuple[int, int], method: str = DEFAULT_RESIZE,
                 defense: str = "none") -> np.ndarray:
    """A uint8 (H, W) or (H, W, 3) image resized to ``size`` (H, W) with ``method`` (default Pillow's Lanczos
    filter, antialiased when shrinking); with ``defense="median"`` the pixels that method reads are median-filtered
    first (the selective median filter)."""
    if defense == "median":
        image = median_filter_sampled(image, size, method)
    return resize_with(image, size, method)


def resize_record(method: str, defense: str) -> dict:
    """What a data set's source records of how it was resized: nothing for the default (Lanczos, no defense), so
    that the records of sets read before ``--resize`` existed stay as they were."""
    record = {} if method == DEFAULT_RESIZE else {"resize": method}
    return record | ({"resize_defense": defense} if defense != "none" else {})


def warn_resized(resized: int, total: int, size: tuple[int, int], chosen: bool, where: str) -> None:
    """Say how many of ``where``'s ``total`` images were resized to ``size``, and why that size."""
    if resized:
        why = "their most common size; --image-size H[,W] sets another" if chosen else "the size asked for"
        warnings.warn(f"{where}: {resized} of {total} images resized to {size[0]}x{size[1]} ({why})", stacklevel=3)
