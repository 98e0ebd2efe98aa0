"""Clean and robust accuracy of a model under any evasion attack (the measurement every evasion command and
benchmark reports)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..device import model_device, to_device, to_host
from ..errors import BackdoorlabError
from ..tensors import to_float
from .base import eval_mode


def robust_accuracy(model: nn.Module, attack, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500,
                    progress: bool = False, target: int | None = None) -> dict:
    """Clean and robust accuracy, and mean cross-entropy losses, of ``model`` on images ``x`` with labels ``y``.

    ``attack`` is a callable ``attack(images, labels) -> images`` (any attack object, or a defended pipeline's
    attack). Robust accuracy: the fraction of images classified correctly both as they are and after the attack
    (an image misclassified when clean counts as non-robust). ``robust_loss``: the mean cross-entropy on the
    attacked images. Returns ``{"clean_accuracy", "robust_accuracy", "clean_loss", "robust_loss", "n"}``, and
    with a ``target`` class also ``attack_success_rate``: among images of other classes, the fraction classified as
    ``target`` once attacked.
    """
    from tqdm.auto import tqdm

    n = len(y)
    if n == 0:
        raise BackdoorlabError("no images to evaluate")
    correct = clean_loss = adv_correct = adv_loss = hits = eligible = 0.0
    device = model_device(model)
    with eval_mode(model):  # the model runs on its device; images, logits and the tallies stay on the host
        for i in tqdm(range(0, n, batch_size), desc="attack", disable=not progress, leave=False):
            xb, yb = to_float(x[i:i + batch_size]), y[i:i + batch_size]
            with torch.no_grad():
                logits = to_host(model(to_device(xb, device)))
            ok = logits.argmax(1) == yb
            correct += ok.sum().item()
            clean_loss += F.cross_entropy(logits, yb, reduction="sum").item()
            xa = attack(xb, yb)
            with torch.no_grad():
                la = to_host(model(to_device(xa, device)))
            adv_correct += (ok & (la.argmax(1) == yb)).sum().item()
            adv_loss += F.cross_entropy(la, yb, reduction="sum").item()
            if target is not None:
                keep = yb != target
                eligible += keep.sum().item()
                hits += (la.argmax(1)[keep] == target).sum().item()
    out = {"clean_accuracy": correct / n, "robust_accuracy": adv_correct / n, "clean_loss": clean_loss / n,
           "robust_loss": adv_loss / n, "n": n}
    if target is not None:
        out["attack_success_rate"] = hits / eligible if eligible else float("nan")
    return out
