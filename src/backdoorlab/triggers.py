"""Trigger patterns: small objects that stamp a trigger onto a batch of images.

A trigger has ``apply(images, training=False, generator=None) -> images`` on float images in [0, 1] of shape
(N, C, H, W). The poisoning attack calls it with ``training=True``, the attack-success-rate evaluation with
``training=False``, on the same object, so the two cannot drift apart (a blended trigger may use a different
strength at test time, on purpose). Random triggers draw from ``generator``, or from a generator seeded with
their own seed, so that evaluation is reproducible. ``to_dict`` / :func:`trigger_from_dict` round-trip a trigger
through a checkpoint's JSON sidecar.

Triggers: ``patch`` (BadNets square), ``blend`` (Chen et al. 2017, x' = (1 - alpha) x + alpha k) and
``random-patch`` (Salem et al., dynamic backdoor: a random pattern at a random one of a set of locations).
:func:`stamp_parts` stamps each image of a batch with the trigger of its part, or leaves it clean.
"""

from __future__ import annotations

import pathlib
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import BackdoorlabError, valid_names

CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left")


class PatchTrigger:
    """A solid square patch (BadNets): ``size`` x ``size`` pixels set to ``value``.

    Args:
        size: side of the square, in pixels.
        position: a corner name (``"bottom-right"``, ...) placed ``margin`` pixels from the image border, or an
            explicit ``(row, col)`` of the patch's top-left pixel.
        value: pixel value in [0, 1], one float for every channel or one per channel.
        margin: distance in pixels from the border when ``position`` is a corner. The default 3x3 patch at
            bottom-right with margin 1 covers rows/cols 24-26 of a 28x28 image.
    """

    kind = "patch"

    def __init__(self, size: int = 3, position: str | Sequence[int] = "bottom-right",
                 value: float | Sequence[float] = 1.0, margin: int = 1):
        if int(size) < 1:
            raise BackdoorlabError(f"trigger size must be a positive number of pixels, got {size}")
        if isinstance(position, str):
            if position not in CORNERS:
                raise BackdoorlabError(f"unknown trigger position {position!r}; valid: {valid_names(CORNERS)}"
                                       " or 'ROW,COL'")
        else:
            position = tuple(int(p) for p in position)
            if len(position) != 2 or min(position) < 0:
                raise BackdoorlabError(f"trigger position must be a corner name or ROW,COL >= 0, got {position}")
        values = [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]
        if not values or any(not 0.0 <= v <= 1.0 for v in values):
            raise BackdoorlabError(f"trigger value must lie in [0, 1], got {value}")
        if margin < 0:
            raise BackdoorlabError(f"trigger margin must be >= 0, got {margin}")
        self.size, self.position, self.values, self.margin = int(size), position, values, int(margin)

    def box(self, height: int, width: int) -> tuple[int, int]:
        """Top-left (row, col) of the patch on an image of the given size; raises if it does not fit."""
        s, m = self.size, self.margin
        if isinstance(self.position, str):
            row = m if self.position.startswith("top") else height - m - s
            col = m if self.position.endswith("left") else width - m - s
        else:
            row, col = self.position
        if row < 0 or col < 0 or row + s > height or col + s > width:
            raise BackdoorlabError(f"a {s}x{s} trigger at {self.position} (margin {m}) does not fit a "
                                   f"{height}x{width} image")
        return row, col

    def mask_and_pattern(self, shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask (1, 1, H, W) with ones on the patch, and the pattern (1, C, H, W), for images of shape (.., C, H, W)."""
        c, h, w = shape[-3:]
        if len(self.values) not in (1, c):
            raise BackdoorlabError(f"trigger has {len(self.values)} channel values but the images have {c} channels")
        row, col = self.box(h, w)
        mask = torch.zeros(1, 1, h, w)
        mask[..., row:row + self.size, col:col + self.size] = 1.0
        pattern = torch.tensor(self.values * (c if len(self.values) == 1 else 1)).view(1, c, 1, 1).expand(1, c, h, w)
        return mask, pattern

    def apply(self, images: torch.Tensor, training: bool = False, generator=None) -> torch.Tensor:
        """Return a triggered copy of float ``images`` (N, C, H, W) in [0, 1]."""
        _check_images(images)
        mask, pattern = self.mask_and_pattern(images.shape)
        mask, pattern = mask.to(images), pattern.to(images)
        return images * (1 - mask) + pattern * mask

    def to_dict(self) -> dict:
        pos = self.position if isinstance(self.position, str) else list(self.position)
        value = self.values[0] if len(self.values) == 1 else self.values
        return {"kind": self.kind, "size": self.size, "position": pos, "value": value, "margin": self.margin}

    def __repr__(self) -> str:
        return f"PatchTrigger({self.to_dict()})"


def _check_images(images: torch.Tensor) -> None:
    if images.dim() != 4:
        raise BackdoorlabError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")


def _check_alpha(alpha, what: str) -> float:
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        raise BackdoorlabError(f"{what} must be a number in [0, 1], got {alpha!r}")
    if not 0.0 <= alpha <= 1.0:
        raise BackdoorlabError(f"{what} must lie in [0, 1], got {alpha}")
    return alpha


class BlendTrigger:
    """Blended key pattern (Chen et al. 2017): ``x' = (1 - alpha) x + alpha k``.

    Args:
        pattern: ``"noise"`` (uniform noise in [0, 1] drawn with ``seed``, one value per pixel and channel) or
            the path of an image file (any format Pillow reads), resized to the images' size and converted to
            their channel count.
        alpha: blend strength when poisoning training images.
        test_alpha: blend strength at test time (ASR evaluation); defaults to ``alpha``. A larger test alpha
            makes the attack stronger at test time while the poisoned training images stay less visible.
        seed: seed of the noise pattern.
    """

    kind = "blend"

    def __init__(self, pattern: str = "noise", alpha: float = 0.2, test_alpha: float | None = None, seed: int = 0):
        self.pattern = str(pattern)
        self.alpha = _check_alpha(alpha, "blend alpha")
        self.test_alpha = self.alpha if test_alpha is None else _check_alpha(test_alpha, "blend test alpha")
        self.seed = int(seed)
        if self.pattern != "noise" and not pathlib.Path(self.pattern).is_file():
            raise BackdoorlabError(f"blend pattern must be 'noise' or an image file; {self.pattern!r} is not a file")
        self._cache: dict = {}

    def key(self, shape) -> torch.Tensor:
        """The key pattern k, shape (1, C, H, W), values in [0, 1], for images of shape (..., C, H, W)."""
        c, h, w = (int(v) for v in shape[-3:])
        if (c, h, w) not in self._cache:
            if self.pattern == "noise":
                k = torch.rand(1, c, h, w, generator=torch.Generator().manual_seed(self.seed))
            else:
                k = _load_key_image(self.pattern, c, h, w)
            self._cache[(c, h, w)] = k
        return self._cache[(c, h, w)]

    def apply(self, images: torch.Tensor, training: bool = False, generator=None) -> torch.Tensor:
        _check_images(images)
        a = self.alpha if training else self.test_alpha
        return (1 - a) * images + a * self.key(images.shape).to(images)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "pattern": self.pattern, "alpha": self.alpha, "test_alpha": self.test_alpha,
                "seed": self.seed}

    def __repr__(self) -> str:
        return f"BlendTrigger({self.to_dict()})"


def _load_key_image(path: str, c: int, h: int, w: int) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("L" if c == 1 else "RGB")
            arr = torch.from_numpy(np.asarray(im, dtype=np.float32).copy()) / 255
    except (OSError, UnidentifiedImageError) as e:
        raise BackdoorlabError(f"cannot read blend pattern image {path}: {e}")
    arr = arr[None, None] if arr.dim() == 2 else arr.permute(2, 0, 1)[None]
    if c not in (1, 3):
        arr = arr[:, :1].expand(1, c, *arr.shape[-2:])
    return F.interpolate(arr, size=(h, w), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


class RandomPatchTrigger:
    """Random backdoor (Salem et al., "Dynamic Backdoor Attacks"): a ``size`` x ``size`` pattern drawn at random
    for every image (uniform values in [0, 1], or black/white with ``pattern="binary"``) and pasted at a location
    drawn uniformly from ``locations``.

    Args:
        size: side of the square, in pixels.
        locations: allowed top-left (row, col) positions, or corner names; default: the four corners.
        pattern: ``"uniform"`` or ``"binary"``.
        margin: distance from the border for corner names.
        seed: seed of the generator used when the caller passes none (evaluation is reproducible).
    """

    kind = "random-patch"
    PATTERNS = ("uniform", "binary")

    def __init__(self, size: int = 4, locations=None, pattern: str = "uniform", margin: int = 1, seed: int = 0):
        if int(size) < 1:
            raise BackdoorlabError(f"trigger size must be a positive number of pixels, got {size}")
        if pattern not in self.PATTERNS:
            raise BackdoorlabError(f"unknown random-patch pattern {pattern!r}; valid: {valid_names(self.PATTERNS)}")
        if margin < 0:
            raise BackdoorlabError(f"trigger margin must be >= 0, got {margin}")
        locations = list(CORNERS) if locations is None else list(locations)
        if not locations:
            raise BackdoorlabError("a random-patch trigger needs at least one location")
        self.locations = [loc if isinstance(loc, str) else tuple(int(v) for v in loc) for loc in locations]
        for loc in self.locations:
            if isinstance(loc, str) and loc not in CORNERS:
                raise BackdoorlabError(f"unknown trigger position {loc!r}; valid: {valid_names(CORNERS)} or ROW,COL")
            if not isinstance(loc, str) and (len(loc) != 2 or min(loc) < 0):
                raise BackdoorlabError(f"trigger location must be ROW,COL >= 0, got {loc}")
        self.size, self.pattern, self.margin, self.seed = int(size), pattern, int(margin), int(seed)

    def boxes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Top-left (row, col) of every allowed location; raises if one does not fit."""
        return [PatchTrigger(self.size, loc, 1.0, self.margin).box(height, width) for loc in self.locations]

    def apply(self, images: torch.Tensor, training: bool = False, generator=None) -> torch.Tensor:
        _check_images(images)
        n, c, h, w = images.shape
        boxes = self.boxes(h, w)
        g = generator if generator is not None else torch.Generator().manual_seed(self.seed)
        s = self.size
        patches = torch.rand(n, c, s, s, generator=g)
        if self.pattern == "binary":
            patches = (patches > 0.5).float()
        where = torch.randint(len(boxes), (n,), generator=g)
        out = images.clone()
        patches = patches.to(images)
        for i, (row, col) in enumerate(boxes):
            sel = where == i
            if sel.any():
                out[sel, :, row:row + s, col:col + s] = patches[sel]
        return out

    def to_dict(self) -> dict:
        return {"kind": self.kind, "size": self.size,
                "locations": [loc if isinstance(loc, str) else list(loc) for loc in self.locations],
                "pattern": self.pattern, "margin": self.margin, "seed": self.seed}

    def __repr__(self) -> str:
        return f"RandomPatchTrigger({self.to_dict()})"


def border_locations(height: int, width: int, size: int, margin: int = 1) -> list[tuple[int, int]]:
    """Positions of a ``size`` x ``size`` patch on a grid of step ``size + 1`` around the image border, clockwise
    from the top-left: the default location sets of the dynamic backdoor, dealt out between its targets."""
    step = size + 1
    last_r, last_c = height - size - margin, width - size - margin
    if last_r < margin or last_c < margin:
        raise BackdoorlabError(f"a {size}x{size} trigger (margin {margin}) does not fit a {height}x{width} image")
    rows = list(range(margin, last_r + 1, step))
    cols = list(range(margin, last_c + 1, step))
    ring = [(margin, c) for c in cols] + [(r, cols[-1]) for r in rows[1:]]
    ring += [(rows[-1], c) for c in reversed(cols[:-1])] + [(r, margin) for r in reversed(rows[1:-1])]
    seen, out = set(), []
    for p in ring:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


TRIGGERS = {PatchTrigger.kind: PatchTrigger, BlendTrigger.kind: BlendTrigger,
            RandomPatchTrigger.kind: RandomPatchTrigger}


def stamp_parts(images: torch.Tensor, part: torch.Tensor,
                stamps: Sequence[Callable[[torch.Tensor], torch.Tensor]]) -> torch.Tensor:
    """``images`` (N, C, H, W) with image j stamped by ``stamps[part[j]]`` and left as it is where ``part[j]`` is
    -1. Each stamp takes and returns a batch and is called once, on all its images together, in the order of
    ``stamps`` (so a stamp drawing from a generator draws as a loop over the parts would). The input is not
    changed: a copy is returned where anything is stamped, else ``images`` itself."""
    if (part < 0).all():
        return images
    images = images.clone()
    for i, stamp in enumerate(stamps):
        sel = part == i
        if sel.any():
            images[sel] = stamp(images[sel])
    return images


def trigger_from_dict(spec: dict):
    """Rebuild a trigger from :meth:`to_dict` output."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in TRIGGERS:
        raise BackdoorlabError(f"unknown trigger kind {kind!r}; valid: {valid_names(TRIGGERS)}")
    try:
        return TRIGGERS[kind](**spec)
    except TypeError as e:
        raise BackdoorlabError(f"malformed {kind} trigger description {spec!r}: {e}")


def parse_position(text: str) -> str | tuple[int, int]:
    """Parse a CLI position: a corner name or ``ROW,COL``."""
    if text in CORNERS:
        return text
    try:
        row, col = (int(p) for p in text.split(","))
    except ValueError:
        raise BackdoorlabError(f"trigger position must be one of {valid_names(CORNERS)} or ROW,COL, got {text!r}")
    return row, col


def deal_locations(ring: list[tuple[int, int]], n: int) -> list[list[tuple[int, int]]]:
    """Deal the ``ring`` of :func:`border_locations` out between ``n`` targets, a location and its mirror image
    (the same row, the column reflected across the ring) always to the same target, so that a victim's horizontal
    flip moves each target's trigger onto another location of that target, never onto another target's. Groups
    go round-robin in ring order. (Dealt one location at a time, neighbours alternate between targets and a flip
    sends most of them to another target's location: a CIFAR-10 resnet20 trained on such data with flips learned
    the trigger but sent it to the wrong target; docs/benchmarks.md.)"""
    cols = [c for _, c in ring]
    reflect = min(cols) + max(cols)  # a column c and its mirror image reflect - c
    on_ring = set(ring)
    groups, seen = [], set()
    for r, c in ring:
        if (r, c) in seen:
            continue
        m = (r, reflect - c)
        group = [(r, c)] + ([m] if m != (r, c) and m in on_ring else [])
        seen.update(group)
        groups.append(group)
    if n > len(groups):
        raise BackdoorlabError(f"{n} targets need {n} trigger locations (mirror pairs) but the image border has "
                               f"only {len(groups)}")
    sets: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for i, group in enumerate(groups):
        sets[i % n].extend(group)
    return sets
