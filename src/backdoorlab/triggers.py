"""Trigger patterns: small objects that stamp a trigger onto a batch of images.

A trigger has ``apply(images) -> images`` on float images in [0, 1] of shape (N, C, H, W). The poisoning attack
and the attack-success-rate evaluation call the same object, so the two cannot drift apart. ``to_dict`` /
:func:`trigger_from_dict` round-trip a trigger through a checkpoint's JSON sidecar.
"""

from __future__ import annotations

from typing import Sequence

import torch

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

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """Return a triggered copy of float ``images`` (N, C, H, W) in [0, 1]."""
        if images.dim() != 4:
            raise BackdoorlabError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
        mask, pattern = self.mask_and_pattern(images.shape)
        mask, pattern = mask.to(images), pattern.to(images)
        return images * (1 - mask) + pattern * mask

    def to_dict(self) -> dict:
        pos = self.position if isinstance(self.position, str) else list(self.position)
        value = self.values[0] if len(self.values) == 1 else self.values
        return {"kind": self.kind, "size": self.size, "position": pos, "value": value, "margin": self.margin}

    def __repr__(self) -> str:
        return f"PatchTrigger({self.to_dict()})"


TRIGGERS = {PatchTrigger.kind: PatchTrigger}


def trigger_from_dict(spec: dict):
    """Rebuild a trigger from :meth:`to_dict` output."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in TRIGGERS:
        raise BackdoorlabError(f"unknown trigger kind {kind!r}; valid: {valid_names(TRIGGERS)}")
    return TRIGGERS[kind](**spec)


def parse_position(text: str) -> str | tuple[int, int]:
    """Parse a CLI position: a corner name or ``ROW,COL``."""
    if text in CORNERS:
        return text
    try:
        row, col = (int(p) for p in text.split(","))
    except ValueError:
        raise BackdoorlabError(f"trigger position must be one of {valid_names(CORNERS)} or ROW,COL, got {text!r}")
    return row, col
