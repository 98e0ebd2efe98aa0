"""Trigger patterns: small objects that stamp a trigger onto a batch of images.

A trigger has ``apply(images, training=False, generator=None) -> images`` on float images in [0, 1] of shape
(N, C, H, W). The poisoning attack calls it with ``training=True``, the attack-success-rate evaluation with
``training=False``, on the same object, so the two cannot drift apart (a blended trigger may use a different
strength at test time, on purpose). Random triggers draw from ``generator``, or from a generator seeded with
their own seed, so that evaluation is reproducible. ``to_dict`` / :func:`trigger_from_dict` round-trip a trigger
through a checkpoint's JSON sidecar.

Triggers: ``patch`` (BadNets square), ``image`` (a picture such as an emoji pasted through its alpha channel),
``blend`` (Chen et al. 2017, x' = (1 - alpha) x + alpha k) and ``random-patch`` (Salem et al., dynamic backdoor: a
random pattern at a random one of a set of locations).
:func:`stamp_parts` stamps each image of a batch with the trigger of its part, or leaves it clean.
"""

from __future__ import annotations

import base64
import hashlib
import io
import pathlib
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import BackdoorlabError, valid_names

CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left")
# what Pillow raises on a file it cannot decode (with PIL.Image.DecompressionBombError, a picture far too large)
_IMAGE_ERRORS = (OSError, ValueError, EOFError, SyntaxError)


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
        position = _checked_position(position)
        values = [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]
        if not values or any(not 0.0 <= v <= 1.0 for v in values):
            raise BackdoorlabError(f"trigger value must lie in [0, 1], got {value}")
        if margin < 0:
            raise BackdoorlabError(f"trigger margin must be >= 0, got {margin}")
        self.size, self.position, self.values, self.margin = int(size), position, values, int(margin)

    def box(self, height: int, width: int) -> tuple[int, int]:
        """Top-left (row, col) of the patch on an image of the given size; raises if it does not fit."""
        s, m = self.size, self.margin
        row, col = top_left(self.position, m, s, s, height, width)
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


def _checked_position(position: str | Sequence[int]) -> str | tuple[int, int]:
    """A corner name, or ``(row, col)`` as a tuple of ints >= 0; anything else is refused."""
    if isinstance(position, str):
        if position not in CORNERS:
            raise BackdoorlabError(f"unknown trigger position {position!r}; valid: {valid_names(CORNERS)}"
                                   " or 'ROW,COL'")
        return position
    position = tuple(int(p) for p in position)
    if len(position) != 2 or min(position) < 0:
        raise BackdoorlabError(f"trigger position must be a corner name or ROW,COL >= 0, got {position}")
    return position


def top_left(position: str | tuple[int, int], margin: int, height: int, width: int, image_height: int,
             image_width: int) -> tuple[int, int]:
    """Top-left (row, col) of a ``height`` x ``width`` trigger at ``position`` on an image of the given size: a
    corner name puts it ``margin`` pixels from the two borders of that corner; ROW,COL is the top-left itself.
    Not checked against the image (each trigger says what does not fit)."""
    if not isinstance(position, str):
        return position[0], position[1]
    row = margin if position.startswith("top") else image_height - margin - height
    col = margin if position.endswith("left") else image_width - margin - width
    return row, col


def _check_images(images: torch.Tensor) -> None:
    if images.dim() != 4:
        raise BackdoorlabError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")


class ImageTrigger:
    """A picture pasted onto the images (an emoji, a logo): an RGBA image whose alpha channel is its mask.

    Made from a file by :meth:`from_file` (any image Pillow reads; PNG is the usual one). The exact steps, which
    a script without backdoorlab can repeat to stamp the same trigger bit for bit:

    1. ``rgba = PIL.Image.open(FILE).convert("RGBA")``: a grey image gives R = G = B, an image without alpha
       is fully opaque (A = 255).
    2. With ``size`` N, the longer side is resized to N pixels, the shorter to ``max(1, (2 * short * N +
       long) // (2 * long))`` (its length scaled by N / long, rounded half up), by
       ``rgba.resize((w, h), PIL.Image.Resampling.LANCZOS)`` (antialiased; Pillow resizes RGBA with
       premultiplied alpha, so the colours of transparent pixels do not bleed in).
    3. For images with C channels, the pattern is ``p = np.asarray(rgba.convert("RGB"))`` (C = 3, channels
       last) or ``np.asarray(rgba.convert("L"))`` (C = 1: Pillow's ITU-R 601-2 luma, alpha ignored), and the
       mask is ``alpha = np.asarray(rgba)[..., 3]``, both uint8 of the trigger's h x w pixels.
    4. Its top-left pixel (row, col) is ``position`` itself (ROW,COL), or for a corner ``margin`` pixels from
       the two borders of that corner (as for :class:`PatchTrigger`): bottom-right is
       ``(H - margin - h, W - margin - w)`` on H x W images.
    5. On float images ``x`` in [0, 1] of shape (N, C, H, W), with ``a = torch.from_numpy(alpha).float() / 255``
       and ``p = torch.from_numpy(p).float() / 255`` (shape (C, h, w)), both then cast to x's dtype and device
       (``.to(x)``), the trigger's box is, in that order of operations::

           x[..., row:row + h, col:col + w] * (1 - a) + p * a

       and every other pixel is unchanged. A pixel of alpha 0 leaves the image as it is, 255 replaces it by the
       trigger's, 128 blends the two. (:meth:`apply` computes ``x * (1 - mask) + pattern * mask`` on the whole
       image with mask and pattern zero outside the box: the same values, bit for bit.)

    Poisoning stores the result as uint8 (rounded); the attack success rate is measured on the float result of
    the uint8 test images / 255. The same trigger is used for both (``training`` is ignored).

    :meth:`to_dict` embeds the (resized) RGBA image as a base64 PNG with its SHA-256, so that a checkpoint's
    sidecar rebuilds the trigger (:meth:`from_dict`, Pillow's PNG decoder only) without the original file.

    Args:
        rgba: the trigger's pixels, uint8 array (h, w, 4).
        position: a corner name (``"bottom-right"``, ...) or the ``(row, col)`` of the trigger's top-left pixel.
        margin: distance in pixels from the image border when ``position`` is a corner.
        source: where the pixels came from (the file's name as given), recorded for the reader only.
    """

    kind = "image"

    def __init__(self, rgba: np.ndarray, position: str | Sequence[int] = "bottom-right", margin: int = 1,
                 source: str = ""):
        rgba = np.asarray(rgba)
        if rgba.dtype != np.uint8 or rgba.ndim != 3 or rgba.shape[2] != 4 or min(rgba.shape[:2]) < 1:
            raise BackdoorlabError(f"a trigger image must be uint8 RGBA pixels (h, w, 4), got {rgba.dtype} "
                                   f"{tuple(rgba.shape)}")
        if int(margin) < 0:
            raise BackdoorlabError(f"trigger margin must be >= 0, got {margin}")
        self.rgba = np.ascontiguousarray(rgba)
        self.position, self.margin, self.source = _checked_position(position), int(margin), str(source)
        self.height, self.width = self.rgba.shape[:2]
        self._patterns: dict[int, torch.Tensor] = {}

    @classmethod
    def from_file(cls, path, size: int | None = None, position: str | Sequence[int] = "bottom-right",
                  margin: int = 1) -> "ImageTrigger":
        """The trigger in image file ``path``, its longer side resized to ``size`` pixels when given."""
        from PIL import Image

        path = pathlib.Path(path)
        if not path.exists():
            raise BackdoorlabError(f"trigger image {path} does not exist")
        if not path.is_file():
            raise BackdoorlabError(f"trigger image {path} is not a file")
        if size is not None and int(size) < 1:
            raise BackdoorlabError(f"trigger size must be a positive number of pixels, got {size}")
        try:
            with Image.open(path) as image:
                rgba = image.convert("RGBA")
        except (*_IMAGE_ERRORS, Image.DecompressionBombError) as e:
            raise BackdoorlabError(f"trigger image {path} is not an image Pillow can read: {_one_line(e)}")
        if size is not None:
            rgba = rgba.resize(_scaled(rgba.size, int(size)), Image.Resampling.LANCZOS)
        return cls(np.asarray(rgba), position, margin, source=str(path))

    def alpha_and_pattern(self, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The trigger's alpha (h, w) and pixel values (C, h, w) for images of ``channels`` channels, float32
        in [0, 1] (the uint8 values / 255)."""
        if channels not in (1, 3):
            raise BackdoorlabError(f"a trigger image fits grey (1-channel) or RGB (3-channel) images, not "
                                   f"{channels}-channel ones")
        if channels not in self._patterns:
            from PIL import Image

            rgba = Image.fromarray(self.rgba)
            pixels = np.asarray(rgba.convert("L" if channels == 1 else "RGB"), dtype=np.uint8).reshape(
                self.height, self.width, channels)
            self._patterns[channels] = torch.from_numpy(pixels.transpose(2, 0, 1).copy()).float() / 255
        return torch.from_numpy(self.rgba[..., 3].copy()).float() / 255, self._patterns[channels]

    def box(self, height: int, width: int) -> tuple[int, int]:
        """Top-left (row, col) of the trigger on an image of the given size; raises if it does not fit."""
        row, col = top_left(self.position, self.margin, self.height, self.width, height, width)
        if row < 0 or col < 0 or row + self.height > height or col + self.width > width:
            where = f"{self.position} (margin {self.margin})" if isinstance(self.position, str) else \
                f"row {row}, col {col}"
            raise BackdoorlabError(f"trigger image {self.source or '(embedded)'} is {self.height}x{self.width} "
                                   f"pixels and at {where} does not fit a {height}x{width} image")
        return row, col

    def mask_and_pattern(self, shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask (1, 1, H, W), the trigger's alpha / 255 in its box and 0 elsewhere, and the pattern (1, C, H, W),
        its pixel values / 255 in the box and 0 elsewhere, for images of shape (.., C, H, W)."""
        c, h, w = (int(v) for v in shape[-3:])
        alpha, pixels = self.alpha_and_pattern(c)
        row, col = self.box(h, w)
        mask, pattern = torch.zeros(1, 1, h, w), torch.zeros(1, c, h, w)
        mask[0, 0, row:row + self.height, col:col + self.width] = alpha
        pattern[0, :, row:row + self.height, col:col + self.width] = pixels
        return mask, pattern

    def apply(self, images: torch.Tensor, training: bool = False, generator=None) -> torch.Tensor:
        """Return a triggered copy of float ``images`` (N, C, H, W) in [0, 1]: ``x * (1 - mask) + pattern *
        mask``, on the images' device and in their dtype."""
        _check_images(images)
        mask, pattern = self.mask_and_pattern(images.shape)
        mask, pattern = mask.to(images), pattern.to(images)
        return images * (1 - mask) + pattern * mask

    def png(self) -> bytes:
        """The trigger's RGBA pixels as PNG bytes (what :meth:`to_dict` embeds)."""
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(self.rgba).save(buffer, format="PNG")
        return buffer.getvalue()

    def to_dict(self) -> dict:
        png = self.png()
        return {"kind": self.kind, "source": self.source, "width": self.width, "height": self.height,
                "position": self.position if isinstance(self.position, str) else list(self.position),
                "margin": self.margin, "sha256": hashlib.sha256(png).hexdigest(),
                "png": base64.b64encode(png).decode("ascii")}

    @classmethod
    def from_dict(cls, spec: dict) -> "ImageTrigger":
        """Rebuild the trigger from :meth:`to_dict` output: the embedded PNG, checked against its SHA-256 and
        its recorded size, decoded by Pillow's PNG decoder alone (nothing in a sidecar runs code)."""
        from PIL import Image, PngImagePlugin

        unknown = set(spec) - {"kind", "source", "width", "height", "position", "margin", "sha256", "png"}
        missing = {"png", "sha256"} - set(spec)
        if unknown or missing:
            raise BackdoorlabError("malformed image trigger description: "
                                   + (f"unknown keys {sorted(unknown)}" if unknown else f"missing {sorted(missing)}"))
        try:
            png = base64.b64decode(str(spec["png"]), validate=True)
        except ValueError as e:
            raise BackdoorlabError(f"malformed image trigger description: its png is not base64 ({e})")
        if hashlib.sha256(png).hexdigest() != spec["sha256"]:
            raise BackdoorlabError("image trigger description: the embedded PNG does not match its sha256 "
                                   f"{spec['sha256']}")
        try:
            with PngImagePlugin.PngImageFile(io.BytesIO(png)) as image:
                rgba = np.asarray(image.convert("RGBA"))
        except (*_IMAGE_ERRORS, Image.DecompressionBombError) as e:
            raise BackdoorlabError(f"image trigger description: the embedded PNG does not decode: {_one_line(e)}")
        size = (spec.get("height", rgba.shape[0]), spec.get("width", rgba.shape[1]))
        if tuple(rgba.shape[:2]) != size:
            raise BackdoorlabError(f"image trigger description: the embedded PNG is {rgba.shape[0]}x{rgba.shape[1]}"
                                   f" pixels, the description says {size[0]}x{size[1]}")
        return cls(rgba, spec.get("position", "bottom-right"), spec.get("margin", 1), spec.get("source", ""))

    def __repr__(self) -> str:
        return (f"ImageTrigger(source={self.source!r}, {self.height}x{self.width}, position={self.position!r}, "
                f"margin={self.margin})")


def _scaled(size: tuple[int, int], longer: int) -> tuple[int, int]:
    """(width, height) ``size`` scaled so that its longer side is ``longer`` pixels, the shorter rounded half up."""
    w, h = size
    long = max(w, h)
    return tuple(max(1, (2 * side * longer + long) // (2 * long)) for side in (w, h))


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


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


TRIGGERS = {PatchTrigger.kind: PatchTrigger, ImageTrigger.kind: ImageTrigger, BlendTrigger.kind: BlendTrigger,
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
    if hasattr(TRIGGERS[kind], "from_dict"):  # a trigger whose description is not its arguments
        return TRIGGERS[kind].from_dict({"kind": kind, **spec})
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
