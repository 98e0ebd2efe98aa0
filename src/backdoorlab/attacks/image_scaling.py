"""The image-scaling attack (Xiao et al., "Seeing is Not Believing: Camouflage Attacks on Image Scaling
Algorithms", USENIX Security 2019), as Quiring and Rieck use it to hide a backdoor's trigger in training images
("Backdooring and Poisoning Neural Networks with Image-Scaling Attacks", DLS 2020).

Given a full-size source image S and a small target image T, find the attack image A = S + delta with the
smallest ``||delta||_2`` such that ``|| scale(A) - T ||_inf <= eps`` and every pixel of A stays in [0, 1]: the
paper's quadratic programme. ``scale`` is the resize the victim's pipeline runs (data/resize.py: nearest or
bilinear, no antialiasing), taken as its matrices (L, R), ``scale(X) = L X R^T``.

Solved exactly rather than with a generic QP solver: when the image shrinks by a factor of 2 or more, the source
pixels that two different output pixels read never overlap (each axis reads one or two pixels per output pixel,
and consecutive output pixels start 2 or more source pixels apart), so the programme splits into one small
problem per output pixel: move its few source pixels s (weights w, summing to 1) as little as possible so that
``w . a`` reaches the nearest value c within eps of the target. Its solution (the Karush-Kuhn-Tucker conditions
of a projection onto a hyperplane within the box [0, 1]) is ``a = clip(s + lambda * w, 0, 1)``, with the one
lambda that gives ``w . a = c``, found by bisection (``w . a`` grows with lambda). The result is rounded to
8 bits for writing; the programme is solved with eps less half a level, so that the rounded image still keeps
within eps. Nearest scaling changes one pixel per output pixel; bilinear, its two or four.
"""

from __future__ import annotations

import math

import torch

from ..data.resize import resize_float, scaling_matrices
from ..errors import BackdoorlabError, valid_names

ATTACK_METHODS = ("nearest", "bilinear")  # the kernels the attack works against (area and lanczos read every pixel)
MIN_FACTOR = 2  # the smallest shrink factor: below it the output pixels share source pixels
BISECTION_STEPS = 60  # halvings of the lambda interval: far below a pixel level in float64
HALF_LEVEL = 0.5 / 255  # the most rounding to 8 bits moves a pixel


def check_attack_scaling(src: tuple[int, int], dst: tuple[int, int], method: str) -> None:
    """A one-line error unless ``method`` is one the attack works against and ``src`` shrinks to ``dst`` by a
    factor of at least :data:`MIN_FACTOR` along both axes."""
    if method not in ATTACK_METHODS:
        raise BackdoorlabError(f"the image-scaling attack works against --resize {' or '.join(ATTACK_METHODS)}, got "
                               f"{method!r} (valid: {valid_names(ATTACK_METHODS)}); area and lanczos read every pixel")
    factor = min(src[0] / dst[0], src[1] / dst[1])
    if factor < MIN_FACTOR:
        raise BackdoorlabError(f"images of {src[0]}x{src[1]} shrink to {dst[0]}x{dst[1]} by a factor of {factor:.2g}; "
                               f"the image-scaling attack needs a factor of at least {MIN_FACTOR} along both axes")


def _support(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of an (n_out, n_in) scaling matrix: the column indices it reads and their weights, (n_out, k) each
    (k: the most non-zeros of a row; shorter rows padded with weight 0); a one-line error when two rows read the
    same column."""
    nonzero = matrix != 0
    if (nonzero.sum(0) > 1).any():
        raise BackdoorlabError("the scaling reads some source pixels for two output pixels; the image-scaling attack "
                               "needs a shrink factor of 2 or more")
    k = int(nonzero.sum(1).max())
    order = torch.argsort(nonzero.to(torch.int8), dim=1, descending=True, stable=True)[:, :k]
    return order, torch.gather(matrix, 1, order)


def _pixel_groups(src: tuple[int, int], dst: tuple[int, int], method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """For each output pixel (h, w), the flat indices into the (H, W) source it reads and their weights,
    (h, w, k) each (padded entries have weight 0)."""
    left, right = scaling_matrices(src, dst, method)
    rows, row_w = _support(left)
    cols, col_w = _support(right)
    index = rows[:, None, :, None] * src[1] + cols[None, :, None, :]
    weight = row_w[:, None, :, None] * col_w[None, :, None, :]
    return index.flatten(2), weight.flatten(2)


def scaling_attack(source: torch.Tensor, target: torch.Tensor, method: str, eps: float = 1 / 255) -> torch.Tensor:
    """Attack images for float sources (N, C, H, W) in [0, 1] and targets (N, C, h, w) in [0, 1]: the images
    closest to the sources (l2) whose resize to (h, w) with ``method`` is within ``eps`` of the targets (max
    norm), as uint8 (N, C, H, W). ``eps`` is in [0, 1] units (Quiring and Rieck: 1.0 of 255)."""
    if source.dim() != 4 or target.dim() != 4 or source.shape[:2] != target.shape[:2]:
        raise BackdoorlabError(f"the image-scaling attack takes sources (N, C, H, W) and targets (N, C, h, w) of the "
                               f"same N and C, got {tuple(source.shape)} and {tuple(target.shape)}")
    if not 0 <= eps < 1 or math.isnan(eps):
        raise BackdoorlabError(f"the attack's eps must lie in [0, 1) (pixel units; 1/255 is one level), got {eps}")
    src, dst = tuple(source.shape[2:]), tuple(target.shape[2:])
    check_attack_scaling(src, dst, method)
    index, weight = _pixel_groups(src, dst, method)
    n, c = source.shape[:2]
    flat = source.to(torch.float64).reshape(n, c, -1)
    s = flat[:, :, index]  # (N, C, h, w, k)
    w = weight.expand_as(s)
    reached = (w * s).sum(-1)
    solve_eps = max(eps - HALF_LEVEL, 0.0)
    wanted = target.to(torch.float64)
    goal = torch.minimum(torch.maximum(reached, wanted - solve_eps), wanted + solve_eps)
    bound = 1.0 / weight[weight > 0].min().item()  # |lambda| that saturates every pixel of a group
    lo = torch.full_like(goal, -bound)
    hi = torch.full_like(goal, bound)
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        above = (w * (s + mid[..., None] * w).clamp(0, 1)).sum(-1) > goal
        hi = torch.where(above, mid, hi)
        lo = torch.where(above, lo, mid)
    lam = torch.where(reached == goal, torch.zeros_like(goal), (lo + hi) / 2)
    moved = (s + lam[..., None] * w).clamp(0, 1)
    used = weight > 0
    out = flat.clone()
    out[:, :, index[used]] = moved[:, :, used]
    return (out.reshape(source.shape) * 255).round().clamp(0, 255).to(torch.uint8)


def scaled(images: torch.Tensor, size: tuple[int, int], method: str) -> torch.Tensor:
    """uint8 images (N, C, H, W) resized to ``size`` with ``method`` as the pipeline does it, as floats in
    [0, 1] before the pipeline's rounding to 8 bits."""
    return resize_float(images.to(torch.float64) / 255, size, method)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of each pair of uint8 images (N, C, H, W), peak 255 (inf when equal)."""
    mse = ((a.to(torch.float64) - b.to(torch.float64)) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(255.0 ** 2 / mse)
