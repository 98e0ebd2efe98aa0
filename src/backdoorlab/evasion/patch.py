"""The universal, targeted adversarial patch (Brown et al. 2017), trained by expectation over random
placements, rotations and scales."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..device import model_device, to_device, to_host
from ..config import Config, option
from ..errors import BackdoorlabError
from ..png import save_png
from .base import Attack, _check_positive_int, _images, eval_mode
from .build import EVASION_ATTACKS


def _patch_transforms(n: int, image_hw, patch_side: int, scale, max_rotation: float, g: torch.Generator):
    """Sample per-image affine matrices (N, 2, 3) for F.affine_grid that place a ``patch_side``-pixel patch
    (drawn centred on an image-sized canvas) at a random scale, rotation and position fully inside the image."""
    h, w = image_hw
    s = scale[0] + torch.rand(n, generator=g) * (scale[1] - scale[0])
    angle = (torch.rand(n, generator=g) * 2 - 1) * math.radians(max_rotation)
    side = patch_side * s  # on-image side in pixels, before rotation
    half = side * (torch.cos(angle).abs() + torch.sin(angle).abs()) / 2  # half extent of the rotated square
    # centre in pixels, uniform over positions that keep the rotated patch inside the image
    cy = half + torch.rand(n, generator=g) * (h - 2 * half).clamp_min(0)
    cx = half + torch.rand(n, generator=g) * (w - 2 * half).clamp_min(0)
    # normalised coordinates: output pixel p maps to canvas pixel R^-1 (p - c) / s (centred canvas)
    ty, tx = (cy / h) * 2 - 1, (cx / w) * 2 - 1
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    # theta maps output grid coordinates to input (canvas) coordinates: in = A (out - t)
    a11, a12, a21, a22 = cos, sin * h / w, -sin * w / h, cos
    b1 = -(a11 * tx + a12 * ty)
    b2 = -(a21 * tx + a22 * ty)
    return torch.stack([torch.stack([a11, a12, b1], 1), torch.stack([a21, a22, b2], 1)], 1)


class AdversarialPatch(Attack):
    """A universal, targeted adversarial patch (Brown et al. 2017), trained by expectation over transformation.

    A square patch of ``size`` pixels is pasted onto images at a random position, rotation (up to
    ``max_rotation`` degrees) and scale (``scale`` range), and optimised (Adam on the patch pixels, kept in
    [0, 1]) so that the patched images are classified as ``target``, averaged over those transformations and over
    the training images of other classes.

    ``fit(images, labels)`` trains the patch; ``apply(images)`` pastes it (random transformations, seeded);
    calling the attack fits the patch on the given images if it is not fitted yet, then applies it. ``patch`` is
    the (C, size, size) tensor; :meth:`save_png` writes it as an image.
    """

    def __init__(self, model: nn.Module, target: int, size: int = 8, steps: int = 500, lr: float = 0.05,
                 scale: tuple[float, float] = (0.8, 1.2), max_rotation: float = 20.0, batch_size: int = 128,
                 seed: int = 0, progress: bool = False):
        if target is None:
            raise BackdoorlabError("the adversarial patch is a targeted attack: give a target class")
        super().__init__(model, target, batch_size, seed)
        self.size = _check_positive_int(size, "patch size")
        self.steps = _check_positive_int(steps, "number of steps")
        if lr <= 0:
            raise BackdoorlabError(f"learning rate must be > 0, got {lr}")
        if not 0 < scale[0] <= scale[1]:
            raise BackdoorlabError(f"patch scale range must satisfy 0 < low <= high, got {scale}")
        self.lr, self.scale, self.max_rotation = float(lr), (float(scale[0]), float(scale[1])), float(max_rotation)
        self.progress = progress
        self.patch: torch.Tensor | None = None
        self.history: list[float] = []

    def config(self) -> dict:
        return {"attack": "patch", "target": self.target, "size": self.size, "steps": self.steps, "lr": self.lr,
                "scale": list(self.scale), "max_rotation": self.max_rotation, "seed": self.seed}

    def _check_fits(self, x: torch.Tensor):
        h, w = x.shape[-2:]
        theta = math.radians(min(abs(self.max_rotation), 45.0))
        extent = self.size * self.scale[1] * (math.cos(theta) + math.sin(theta))  # rotated square's bounding box
        if extent > min(h, w) + 1e-9:
            raise BackdoorlabError(f"a patch of {self.size} px at scale up to {self.scale[1]}, rotated up to "
                                   f"{self.max_rotation} degrees, does not fit {h}x{w} images")

    def paste(self, x: torch.Tensor, patch: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Paste ``patch`` (C, s, s) on float images ``x`` (N, C, H, W) at random transformations (differentiable
        in ``patch``)."""
        n, c, h, w = x.shape
        top, left = (h - self.size) // 2, (w - self.size) // 2
        patch = patch.to(x.device)  # transformations drawn on the host; pasted where the images are
        canvas = F.pad(patch, (left, w - self.size - left, top, h - self.size - top)).expand(n, c, h, w)
        mask = F.pad(torch.ones(1, self.size, self.size, device=x.device),
                     (left, w - self.size - left, top, h - self.size - top))
        theta = to_device(_patch_transforms(n, (h, w), self.size, self.scale, self.max_rotation, g), x.device)
        grid = F.affine_grid(theta, [n, c, h, w], align_corners=False)
        placed = F.grid_sample(canvas, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        m = F.grid_sample(mask.expand(n, 1, h, w), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return x * (1 - m) + placed * m

    def fit(self, images: torch.Tensor, labels: torch.Tensor) -> "AdversarialPatch":
        """Train the patch on images of classes other than the target."""
        from tqdm.auto import tqdm

        x = _images(images)
        labels = torch.as_tensor(labels, dtype=torch.long)
        self._check_fits(x)
        keep = labels != self.target
        x = x[keep]
        if len(x) == 0:
            raise BackdoorlabError("the patch needs training images of classes other than the target")
        g = torch.Generator().manual_seed(self.seed)
        device = model_device(self.model)  # the patch trains on the model's device, drawn on the host
        patch = to_device(torch.rand(x.shape[1], self.size, self.size, generator=g), device).requires_grad_(True)
        opt = torch.optim.Adam([patch], lr=self.lr)
        self.history = []
        with eval_mode(self.model):
            for step in tqdm(range(self.steps), desc="patch", disable=not self.progress, leave=False):
                idx = torch.randint(len(x), (min(self.batch_size, len(x)),), generator=g)
                logits = self.model(self.paste(to_device(x[idx], device), patch, g))
                loss = F.cross_entropy(logits, torch.full((len(idx),), self.target, dtype=torch.long, device=device))
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    patch.clamp_(0, 1)
                self.history.append(loss.item())
        self.patch = to_host(patch.detach())
        return self

    def apply(self, images: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        """Paste the fitted patch on ``images`` at seeded random transformations."""
        if self.patch is None:
            raise BackdoorlabError("the patch is not fitted yet: call fit(images, labels) first")
        x = _images(images)
        g = torch.Generator().manual_seed(self.seed + 1 if seed is None else seed)
        with torch.no_grad():
            return torch.cat([self.paste(x[i:i + self.batch_size], self.patch, g)
                              for i in range(0, len(x), self.batch_size)]) if len(x) else x.clone()

    def __call__(self, images, labels, targets=None):
        if targets is not None:
            raise BackdoorlabError("the adversarial patch has one target class, set when it is created")
        if self.patch is None:
            self.fit(images, labels)
        return self.apply(images)

    def save_png(self, path) -> None:
        """Write the patch as a PNG image (greyscale or RGB), upscaled so that it is visible."""
        if self.patch is None:
            raise BackdoorlabError("the patch is not fitted yet")
        save_png(self.patch, path, scale=max(1, 128 // self.size))


@dataclass
class PatchConfig(Config):
    """The settings of :class:`AdversarialPatch` (see its docstring); ``flag``: the ``backdoorlab robustness``
    option that sets a field."""

    size: int = option(8, flag="--patch-size")
    steps: int = option(500, flag="--patch-steps")
    lr: float = 0.05
    scale: tuple[float, float] = (0.8, 1.2)
    max_rotation: float = 20.0
    batch_size: int = 128
    target: int | None = option(None, flag="--target")
    seed: int = option(0, flag="--seed")


@EVASION_ATTACKS.register("patch", PatchConfig, "Universal targeted adversarial patch, trained on training images "
                          "(Brown et al. 2017).", targeted_only=True, fitted=True)
def build_patch(model: nn.Module, **kwargs) -> AdversarialPatch:
    return AdversarialPatch(model, **kwargs)
