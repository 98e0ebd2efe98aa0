"""Clean accuracy (CA), attack success rate (ASR) and robust accuracy (RA).

Definitions (also in docs/metrics.md):
- CA: accuracy on the full clean test set.
- ASR, all-to-one: among test images whose true label is not the target, the fraction classified as the target
  once the trigger is applied. All-to-all (label i -> i+1 mod K): among all test images, the fraction classified
  as their mapped label once triggered.
- RA: among the same triggered test images as ASR, the fraction classified as their true label.
"""

from __future__ import annotations

import torch

from .device import model_device, to_device, to_host
from .tensors import channels_last, model_channels_last, to_float


def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 256, transform=None) -> torch.Tensor:
    """Predicted labels (N,) for uint8 or float images ``x`` (N, C, H, W); ``transform`` maps float batches."""
    logits = predict_logits(model, x, batch_size, transform)
    return logits.argmax(1) if len(logits) else torch.empty(0, dtype=torch.long)


@torch.no_grad()
def predict_logits(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 256, transform=None) -> torch.Tensor:
    """Logits (N, K) of ``model`` in eval mode for uint8 or float images ``x`` (N, C, H, W); ``transform`` maps
    float batches (on the host, as on a CPU run). Each batch runs on the model's device; the logits come back on
    the host."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    if x.dim() == 4:
        model_channels_last(model)  # in place: faster convolutions (see train.channels_last)
    out = []
    for i in range(0, len(x), batch_size):
        xb = to_float(x[i:i + batch_size])
        if transform is not None:
            xb = transform(xb)
        out.append(to_host(model(to_device(channels_last(xb), device)).float()))
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``pred`` equal to ``labels``, exactly k / n in double precision (a float32 mean would put 95 of
    100 a hair below 0.95, and tolerance rules such as "within 4 points of the best" would drop the boundary)."""
    return int((pred == labels).sum()) / len(labels) if len(labels) else float("nan")


def attack_success_rate(pred_triggered: torch.Tensor, labels: torch.Tensor, backdoor, num_classes: int) -> float:
    """ASR from predictions on triggered images and their true labels (see the module docstring)."""
    keep = backdoor.eligible(labels)
    return accuracy(pred_triggered[keep], backdoor.target_labels(labels, num_classes)[keep])


def robust_accuracy(pred_triggered: torch.Tensor, labels: torch.Tensor, backdoor) -> float:
    """RA: fraction of the (ASR-eligible) triggered images still classified as their true label."""
    keep = backdoor.eligible(labels)
    return accuracy(pred_triggered[keep], labels[keep])


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, backdoor=None, num_classes: int | None = None,
             batch_size: int = 256) -> dict:
    """CA, and with a ``backdoor`` ASR and RA, of ``model`` on images ``x`` (N, C, H, W) with labels ``y``.

    Runs under a fixed random seed (restored afterwards), so that models with dropout active at inference (the
    triggerless backdoor) give the same figures every time."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        result = {"clean_accuracy": accuracy(predict(model, x, batch_size), y), "n_test": len(y)}
        if backdoor is not None:
            num_classes = num_classes or int(y.max()) + 1
            result.update(backdoor.measure(model, x, y, num_classes, batch_size))
    return result
