"""Fine-pruning (Liu, Dolan-Gavitt and Garg, RAID 2018): prune dormant channels of the last convolutional layer,
then fine-tune.

Threat model: the defender holds the suspect model and a small clean set, and knows nothing of the trigger. The
paper's observation is that backdoor behaviour lives in neurons of the last convolutional layer that clean inputs
leave dormant; pruning them in increasing order of mean clean activation, until clean validation accuracy falls,
removes much of the backdoor, and fine-tuning on clean data removes more (and recovers accuracy).

Which layer: the last module of the model's ``body`` whose output is a 4-D feature map and which is not a pooling
layer (small-cnn: the second conv-BN-ReLU block; resnet20: the last residual block; preact-resnet18: the final
BN-ReLU; vgg16-bn: the last conv-BN-ReLU), so activations are measured after the non-linearity. While pruning and
fine-tuning, a forward hook multiplies that output by a 0/1 channel mask. Every module between it and the first
``nn.Linear`` after it (pooling, flatten, ReLU, dropout) maps a zero channel to zero features, so at the end the
mask is *folded* into that linear layer by zeroing its input columns: the returned model is a plain model of the
same architecture, with no hook, and computes exactly what the masked model computed.

Stopping rule (clean data only): channels are pruned in increasing order of mean activation on the fit part of
the budget, as long as accuracy on the budget's validation slice stays within ``max_accuracy_drop`` of the
unpruned model (the paper prunes until validation accuracy drops by 4%).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..budget import CleanBudget
from ..config import Config, at_least, interval, option
from ..device import model_device, to_device, to_host
from ..errors import BackdoorlabError
from ..metrics import accuracy, predict
from ..tensors import to_float
from .finetune import finetune, finetune_recipe
from .repair import REPAIRERS
from .stopping import last_within_drop, split_validation

POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
ZERO_PRESERVING = POOLS + (nn.Flatten, nn.ReLU, nn.Dropout, nn.Identity)


def _body_children(model: nn.Module) -> list[tuple[str, nn.Module]]:
    body = getattr(model, "body", None)
    if not isinstance(body, nn.Sequential):
        raise BackdoorlabError("fine-pruning needs a model with a sequential `body` (the registry's architectures); "
                               f"got {type(model).__name__}")
    return [(f"body.{name}", m) for name, m in body.named_children()]


@torch.no_grad()
def last_feature_layer(model: nn.Module, example: torch.Tensor) -> tuple[str, nn.Module, int]:
    """(name, module, channels) of the last non-pooling module of ``model.body`` with a 4-D output."""
    children = _body_children(model)
    shapes = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=name: shapes.__setitem__(n, tuple(o.shape)))
             for name, m in children]
    try:
        model.eval()
        model(to_device(to_float(example[:2]), model_device(model)))
    finally:
        for h in hooks:
            h.remove()
    found = [(n, m) for n, m in children if len(shapes.get(n, ())) == 4 and not isinstance(m, POOLS)]
    if not found:
        raise BackdoorlabError("fine-pruning found no convolutional feature map in the model's body")
    name, module = found[-1]
    return name, module, shapes[name][1]


def _next_linear(model: nn.Module, layer_name: str) -> tuple[nn.Linear, list[nn.Module]]:
    """The first nn.Linear after ``layer_name`` (in the body, else ``model.fc``) and the modules in between."""
    children = _body_children(model)
    i = [n for n, _ in children].index(layer_name)
    between = []
    for _, m in children[i + 1:]:
        if isinstance(m, nn.Linear):
            return m, between
        between.append(m)
    return model.fc, between


class ChannelMask:
    """A 0/1 mask over the channels of one layer's output, applied by a forward hook while attached. The mask
    stays on the host and meets each output on its device."""

    def __init__(self, module: nn.Module, channels: int):
        self.module, self.mask = module, torch.ones(channels)
        self.handle = module.register_forward_hook(lambda mod, i, o: o * self.mask.view(1, -1, 1, 1).to(o))

    def remove(self) -> None:
        self.handle.remove()


@torch.no_grad()
def mean_channel_activation(model: nn.Module, module: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Mean over images and positions of each channel of ``module``'s output on uint8/float images ``x`` (on the
    host)."""
    total, count = None, 0
    store = {}
    h = module.register_forward_hook(lambda mod, i, o: store.__setitem__("out", o))
    try:
        model.eval()
        device = model_device(model)
        for i in range(0, len(x), batch_size):
            model(to_device(to_float(x[i:i + batch_size]), device))
            s = store["out"].sum(dim=(0, 2, 3))
            total = s if total is None else total + s
            count += store["out"].shape[0] * store["out"].shape[2] * store["out"].shape[3]
    finally:
        h.remove()
    return to_host(total / count)


@dataclass
class FinePruningConfig(Config):
    """``max_accuracy_drop``: validation-accuracy drop (fraction) allowed while pruning (the paper's 4%; the rule
    of :mod:`.stopping`); ``max_prune_fraction``: never prune more than this fraction of the channels;
    ``finetune_steps``: the clean fine-tuning afterwards (0 steps: pruning only), with the recipe of
    :class:`~.finetune.FinetuneConfig` (``lr`` ... ``seed``)."""

    max_accuracy_drop: float = option(0.04, check=interval("[0, 1)"))
    max_prune_fraction: float = option(0.95, check=interval("(0, 1)"))
    val_fraction: float = option(0.1, check=interval("(0, 1)"))
    finetune_steps: int = option(1000, check=at_least(0))
    lr: float = 0.01
    batch_size: int = 128
    weight_decay: float = 5e-4
    augment: str = "none"
    seed: int = 0


@REPAIRERS.register("fine-pruning", FinePruningConfig,
                    "Fine-pruning (Liu et al. 2018): prune the last conv layer's channels that clean images "
                    "leave dormant, then fine-tune.")
def fine_prune(model: nn.Module, budget: CleanBudget, cfg: FinePruningConfig | None = None, *,
               progress: bool = True) -> tuple[nn.Module, dict]:
    """Return (pruned and fine-tuned copy of ``model``, info dict with the layer, channels pruned, accuracies).
    The channels are ranked on the budget's fit part and pruned as far as its validation slice allows
    (:mod:`.stopping`); the fine-tuning afterwards uses the whole budget."""
    cfg = cfg or FinePruningConfig()
    fit_part, val_part = split_validation(budget, cfg.val_fraction)
    model = copy.deepcopy(model).eval()
    name, layer, channels = last_feature_layer(model, fit_part.x)
    linear, between = _next_linear(model, name)
    if not all(isinstance(m, ZERO_PRESERVING) for m in between):
        raise BackdoorlabError(f"fine-pruning cannot fold a mask on {name}: "
                               f"{type(next(m for m in between if not isinstance(m, ZERO_PRESERVING))).__name__} "
                               "between it and the next linear layer does not map zero to zero")
    order = torch.argsort(mean_channel_activation(model, layer, fit_part.x))
    mask = ChannelMask(layer, channels)
    try:
        base = accuracy(predict(model, val_part.x), val_part.y)
        limit = int(cfg.max_prune_fraction * channels)
        step = max(1, channels // 64)

        def pruned_accuracy(k: int) -> float:
            mask.mask[:] = 1.0
            mask.mask[order[:k]] = 0.0
            return accuracy(predict(model, val_part.x), val_part.y)

        pruned, scored = last_within_drop(range(step, limit + 1, step), pruned_accuracy, base, cfg.max_accuracy_drop,
                                          progress=progress, desc="fine-pruning: prune")
        pruned, curve = pruned or 0, [(0, base), *scored]
        pruned_acc = pruned_accuracy(pruned)
        if cfg.finetune_steps > 0:
            tc = finetune_recipe(cfg, cfg.finetune_steps)
            tuned = finetune(model, budget.x, budget.y, tc, progress=progress, desc="fine-pruning: fine-tune")
            # the deep copy carries a copy of the hook; drop it and fold instead
            tuned_layer = dict(tuned.named_modules())[name]
            tuned_layer._forward_hooks.clear()
            model = tuned
            linear, _ = _next_linear(model, name)
    finally:
        mask.remove()
    fold_channel_mask(linear, mask.mask, channels)
    info = {"layer": name, "channels": channels, "pruned": int(pruned), "pruned_channels": order[:pruned].tolist(),
            "validation_accuracy": {"before": base, "pruned": pruned_acc}, "prune_curve": curve,
            "config": cfg.to_dict()}
    return model.eval(), info


@torch.no_grad()
def fold_channel_mask(linear: nn.Linear, mask: torch.Tensor, channels: int) -> None:
    """Zero the input columns of ``linear`` that read masked channels (flattened channel-major)."""
    if linear.in_features % channels:
        raise BackdoorlabError(f"cannot fold a {channels}-channel mask into a linear layer with "
                               f"{linear.in_features} inputs")
    per = linear.in_features // channels
    keep = mask.repeat_interleave(per).to(linear.weight)
    linear.weight.mul_(keep.view(1, -1))
