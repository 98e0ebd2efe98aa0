"""What every evasion attack shares: the calling convention (the :class:`Attack` base class), the attacker's
losses, epsilon parsing and the argument checks. The attacks themselves: ``fgsm.py``, ``pgd.py``, ``patch.py``,
``one_pixel.py``.

An attack is an object that holds a model and its hyperparameters and is called on a batch,
``attack(images, labels) -> adversarial images``: float images (N, C, H, W) in [0, 1] (uint8 is accepted and
converted), int64 labels (N,). The result has the same shape, lies in [0, 1] and, for the norm-bounded attacks,
within ``eps`` of the input in the attack's norm. Large inputs are processed in chunks of ``batch_size``.

Targeted attacks: give ``target=K`` (every image is pushed towards class K) or call with ``targets=`` (one label
per image). Untargeted attacks push each image away from its true label.

Losses (``loss=``): ``"ce"`` (cross-entropy) or ``"margin"`` (Carlini-Wagner's logit margin, ``max_{j != y} z_j -
z_y`` untargeted, ``z_t - max_{j != t} z_j`` targeted; it works on logits, so a saturated softmax (defensive
distillation) does not hide its gradient).

The model is run in eval mode during an attack and restored to its previous mode afterwards.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..device import model_device, to_device
from ..errors import BackdoorlabError, valid_names
from ..tensors import to_float

NORMS = ("linf", "l2")
LOSSES = ("ce", "margin")


# --------------------------------------------------------------------------------------------------- helpers


def parse_eps(text) -> float:
    """Parse an epsilon given as a number or a fraction (``"8/255"``, ``"0.3"``); must be > 0."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        s = str(text).strip()
        try:
            if "/" in s:
                num, den = s.split("/", 1)
                value = float(num) / float(den)
            else:
                value = float(s)
        except (ValueError, ZeroDivisionError):
            raise BackdoorlabError(f"epsilon must be a positive number or a fraction like 8/255, got {text!r}")
    if not math.isfinite(value) or value <= 0:
        raise BackdoorlabError(f"epsilon must be > 0, got {text!r}")
    return value


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Run ``model`` in eval mode inside the block; restore its mode afterwards."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


@contextlib.contextmanager
def frozen(model: nn.Module):
    """Inside the block the model's parameters do not require gradients (an attack needs only the input's
    gradient, and autograd then keeps less for the backward pass); their flags are restored afterwards."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p in params:
            p.requires_grad_(True)


def margin_loss(logits: torch.Tensor, labels: torch.Tensor, targeted: bool = False) -> torch.Tensor:
    """Per-sample logit margin (N,) that the attacker maximises: untargeted ``max_{j != y} z_j - z_y``,
    targeted (``labels`` are the targets) ``z_t - max_{j != t} z_j``. Positive means the attack succeeded."""
    own = logits.gather(1, labels[:, None])[:, 0]
    other = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf")).amax(1)
    return own - other if targeted else other - own


def attack_loss(logits: torch.Tensor, labels: torch.Tensor, kind: str, targeted: bool) -> torch.Tensor:
    """Per-sample loss (N,) the attacker maximises (for targeted attacks ``labels`` are the targets)."""
    if kind == "ce":
        ce = F.cross_entropy(logits, labels, reduction="none")
        return -ce if targeted else ce
    return margin_loss(logits, labels, targeted)


def _check_choice(value, choices, what):
    if value not in choices:
        raise BackdoorlabError(f"unknown {what} {value!r}; valid: {valid_names(choices)}")


def _check_positive_int(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise BackdoorlabError(f"{what} must be an integer >= 1, got {value!r}")
    return int(value)


def _images(images: torch.Tensor) -> torch.Tensor:
    if images.dim() != 4:
        raise BackdoorlabError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    return to_float(images).detach()


def _norm(v: torch.Tensor) -> torch.Tensor:
    """Per-sample l2 norm, shape (N, 1, 1, 1)."""
    return v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)


class Attack:
    """Base class: holds the model, whether the attack is targeted, the batch size and the seed.

    Subclasses implement ``_attack(x, labels_or_targets, generator) -> x_adv`` on one chunk.
    """

    def __init__(self, model: nn.Module, target: int | None = None, batch_size: int = 500, seed: int = 0):
        if not isinstance(model, nn.Module):
            raise BackdoorlabError(f"an attack needs a torch model, got {type(model).__name__}")
        self.model = model
        self.target = None if target is None else int(target)
        self.batch_size = _check_positive_int(batch_size, "batch size")
        self.seed = int(seed)

    @property
    def targeted(self) -> bool:
        return self.target is not None

    def targets_for(self, labels: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor | None:
        """The per-image target labels (None for an untargeted attack)."""
        if targets is not None:
            targets = torch.as_tensor(targets, dtype=torch.long)
            if targets.shape != labels.shape:
                raise BackdoorlabError(f"targets have shape {tuple(targets.shape)}, labels {tuple(labels.shape)}")
            return targets
        if self.target is None:
            return None
        return torch.full_like(labels, self.target)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """Adversarial versions of ``images`` (N, C, H, W) with true ``labels`` (N,); see the module docstring.
        Each chunk is attacked on the model's device and comes back to the images' device."""
        x = _images(images)
        labels = torch.as_tensor(labels, dtype=torch.long)
        if len(labels) != len(x):
            raise BackdoorlabError(f"{len(x)} images but {len(labels)} labels")
        tgt = self.targets_for(labels, targets)
        g = torch.Generator().manual_seed(self.seed)
        out, device = [], model_device(self.model)
        with eval_mode(self.model), frozen(self.model):
            for i in range(0, len(x), self.batch_size):
                sl = slice(i, i + self.batch_size)
                adv = self._attack(to_device(x[sl], device), to_device(labels[sl], device),
                                   None if tgt is None else to_device(tgt[sl], device), g)
                out.append(to_device(adv, x.device))
        return torch.cat(out) if out else x.clone()

    def _attack(self, x, labels, targets, generator):  # pragma: no cover - abstract
        raise NotImplementedError

    def success(self, logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        """Per-sample success: the target is predicted (targeted) or the label is not (untargeted)."""
        pred = logits.argmax(1)
        return pred == targets if targets is not None else pred != labels

    def config(self) -> dict:
        """The hyperparameters, JSON-ready."""
        return {"attack": type(self).__name__.lower(), "target": self.target, "seed": self.seed}
