"""Adversarial neuron pruning, ANP (Wu and Wang, NeurIPS 2021, "Adversarial Neuron Perturbation Exposes
Backdoors in Neural Networks").

Threat model: the defender holds the suspect model and a small clean set, and knows nothing of the trigger.
Observation: a backdoored model collapses to the target label under small *multiplicative perturbations of its
neurons*, and the neurons that cause this are the backdoor's. ANP learns a mask m in [0, 1] per neuron (as in
the paper's code, a batch-norm channel, whose scale is multiplied by m; here also an output unit of a hidden
linear layer, whose weight row is multiplied by m, since small models such as small-cnn keep much of their
capacity in a fully connected layer without batch norm) on the clean budget, by
minimising

    alpha * CE(f(x; m)) + (1 - alpha) * max_{|delta|, |xi| <= eps} CE(f(x; m + delta, 1 + xi))

where delta perturbs each neuron's scale and xi its shift; the inner maximisation is a few signed-gradient steps
from a random start. Neurons whose mask ends low are then pruned (their batch-norm scale set to 0).

Paper defaults: eps 0.4, perturbation step 0.2 (one step), alpha 0.2, mask lr 0.2 (SGD, momentum 0.9), 2,000
iterations of batch 128, pruning threshold 0.2.

Choosing how much to prune without the trigger: with ``threshold="auto"`` (default) neurons are pruned in
increasing order of their mask value, as many as possible while accuracy on the budget's validation slice (never
used to learn the masks) stays within ``max_accuracy_drop`` of the unpruned model, and never a neuron whose mask
is above ``max_threshold``. A number instead is a fixed mask threshold. Choosing it by test ASR would use the
trigger, which the defender does not have.

Deviation from the paper's code: the model runs in eval mode while the masks are learned (batch norm uses its
running statistics, which are left untouched), so a small clean budget cannot shift them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..budget import CleanBudget
from ..config import Config
from ..device import model_device, to_device, to_host
from ..errors import BackdoorlabError
from ..metrics import accuracy, predict
from ..models.ensemble import Ensemble
from ..tensors import to_float
from ..train import seed_everything
from ..augment import augment
from .repair import REPAIRERS
from .stopping import last_within_drop, split_validation


@dataclass
class ANPConfig(Config):
    eps: float = 0.4
    step: float = 0.2
    perturb_steps: int = 1
    alpha: float = 0.2
    mask_lr: float = 0.2
    iterations: int = 2000
    batch_size: int = 128
    threshold: float | str = "auto"
    max_threshold: float = 0.9
    max_accuracy_drop: float = 0.02
    val_fraction: float = 0.1
    include_linear: bool = True
    augment: str = "none"
    seed: int = 0

    def validate(self):
        if self.eps < 0 or self.step < 0:
            raise BackdoorlabError(f"ANP perturbation bound and step must be >= 0, got {self.eps}, {self.step}")
        if not 0 <= self.alpha <= 1:
            raise BackdoorlabError(f"ANP alpha must lie in [0, 1], got {self.alpha}")
        if self.iterations < 1 or self.batch_size < 1:
            raise BackdoorlabError("ANP needs at least one iteration and a batch size >= 1")
        if self.threshold != "auto" and not (isinstance(self.threshold, (int, float)) and 0 <= self.threshold <= 1):
            raise BackdoorlabError(f"ANP threshold must be 'auto' or a number in [0, 1], got {self.threshold!r}")


def neuron_layers(model: nn.Module, include_linear: bool = True) -> list[tuple[str, nn.Module]]:
    """(name, module) of the layers whose output units are ANP's neurons: every affine batch-norm layer (one
    neuron per channel) and, with ``include_linear``, every hidden ``nn.Linear`` (one per output unit; the last
    linear layer, the classifier, is excluded; of an :class:`Ensemble`, each member's neurons)."""
    if isinstance(model, Ensemble):
        return [(f"members.{i}.{n}", m) for i, member in enumerate(model.members)
                for n, m in neuron_layers(member, include_linear)]
    found = [(n, m) for n, m in model.named_modules()
             if (isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine)
             or (include_linear and isinstance(m, nn.Linear))]
    linears = [i for i, (_, m) in enumerate(found) if isinstance(m, nn.Linear)]
    if linears:
        del found[linears[-1]]
    if not found:
        raise BackdoorlabError("ANP needs a model with affine batch-norm layers or hidden linear layers "
                               "(its neurons are their output units)")
    return found


def _per_unit(scale: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return scale.view(-1, *([1] * (like.dim() - 1)))


class _Perturbed:
    """Forward the model with batch-norm scales ``w * (m + delta)`` and shifts ``b * (1 + xi)``."""

    def __init__(self, model: nn.Module, layers):
        self.model, self.layers = model, layers
        self.masks = [torch.ones(m.weight.shape[0], device=m.weight.device) for _, m in layers]
        self.delta = [torch.zeros(m.weight.shape[0], device=m.weight.device) for _, m in layers]
        self.xi = [torch.zeros(m.weight.shape[0], device=m.weight.device) for _, m in layers]
        self.perturb = False
        self.names = {n: i for i, (n, _) in enumerate(layers)}
        self.params = dict(model.named_parameters())
        self.buffers = dict(model.named_buffers())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        params = dict(self.params)
        for i, (name, m) in enumerate(self.layers):
            scale = self.masks[i] + (self.delta[i] if self.perturb else 0)
            params[f"{name}.weight"] = m.weight.detach() * _per_unit(scale, m.weight)
            if m.bias is not None:
                shift = 1 + (self.xi[i] if self.perturb else 0)
                params[f"{name}.bias"] = m.bias.detach() * shift
        return torch.func.functional_call(self.model, {**params, **self.buffers}, (x,))


def learn_masks(model: nn.Module, budget: CleanBudget, cfg: ANPConfig, progress: bool = True) -> list[torch.Tensor]:
    """Learn one mask per batch-norm channel on the clean ``budget`` (see module docstring), on the model's device
    (batches and perturbations drawn on the host, as on a CPU run); the masks returned are on the host."""
    model = copy.deepcopy(model).eval()
    device = model_device(model)
    for p in model.parameters():
        p.requires_grad_(False)
    f = _Perturbed(model, neuron_layers(model, cfg.include_linear))
    masks = [m.requires_grad_(True) for m in f.masks]
    opt = torch.optim.SGD(masks, lr=cfg.mask_lr, momentum=0.9)
    g = seed_everything(cfg.seed)
    n = len(budget)
    perm, pos = torch.randperm(n, generator=g), 0
    for _ in tqdm(range(cfg.iterations), desc="ANP masks", disable=not progress, leave=False, dynamic_ncols=True):
        if pos + min(cfg.batch_size, n) > n:
            perm, pos = torch.randperm(n, generator=g), 0
        idx = perm[pos:pos + cfg.batch_size]
        pos += len(idx)
        xb, yb = augment(to_float(budget.x[idx]), cfg.augment, g), budget.y[idx]
        xb, yb = to_device(xb, device), to_device(yb, device)
        if cfg.eps > 0:
            # inner maximisation over the neuron perturbations, from a random start
            f.delta = [to_device((torch.rand(m.shape, generator=g) * 2 - 1) * cfg.eps, device).requires_grad_(True)
                       for m in masks]
            f.xi = [to_device((torch.rand(m.shape, generator=g) * 2 - 1) * cfg.eps, device).requires_grad_(True)
                    for m in masks]
            f.perturb = True
            for _ in range(cfg.perturb_steps):
                loss = F.cross_entropy(f(xb), yb)
                grads = torch.autograd.grad(loss, f.delta + f.xi)
                with torch.no_grad():
                    for v, gr in zip(f.delta + f.xi, grads):
                        v.add_(cfg.step * gr.sign()).clamp_(-cfg.eps, cfg.eps)
            f.delta = [d.detach() for d in f.delta]
            f.xi = [d.detach() for d in f.xi]
            f.masks = masks
            robust = F.cross_entropy(f(xb), yb)
        else:
            robust = torch.zeros((), device=device)
        f.perturb = False
        natural = F.cross_entropy(f(xb), yb)
        loss = cfg.alpha * natural + (1 - cfg.alpha) * robust
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for m in masks:
                m.clamp_(0, 1)
    return [to_host(m.detach().clone()) for m in masks]


@torch.no_grad()
def prune_neurons(model: nn.Module, masks: list[torch.Tensor], count: int, include_linear: bool = True) -> nn.Module:
    """A copy of ``model`` with the ``count`` neurons of lowest mask value pruned (their batch-norm scale or
    weight row set to 0, as a mask of 0 would)."""
    model = copy.deepcopy(model).eval()
    layers = neuron_layers(model, include_linear)
    flat = torch.cat(masks)
    order = torch.argsort(flat, stable=True)[:count]
    offsets = torch.cumsum(torch.tensor([0] + [len(m) for m in masks]), 0)
    for j in order.tolist():
        i = int(torch.searchsorted(offsets, torch.tensor(j), right=True)) - 1
        layers[i][1].weight[j - offsets[i]] = 0.0
    return model


@REPAIRERS.register("anp", ANPConfig,
                    "Adversarial neuron pruning (Wu and Wang 2021): prune the neurons whose perturbation "
                    "most easily breaks the model.")
def anp(model: nn.Module, budget: CleanBudget, cfg: ANPConfig | None = None, *,
        progress: bool = True) -> tuple[nn.Module, dict]:
    """Return (pruned copy of ``model``, info with the mask values, neurons pruned and the threshold used). The
    masks are learned on the budget's fit part; how many neurons to prune, with ``threshold="auto"``, is chosen on
    its validation slice (:mod:`.stopping`)."""
    cfg = cfg or ANPConfig()
    fit_part, val_part = split_validation(budget, cfg.val_fraction)
    masks = learn_masks(model, fit_part, cfg, progress)
    flat = torch.cat(masks)
    ordered = flat.sort().values
    base = accuracy(predict(model, val_part.x), val_part.y)
    curve = [(0, base)]
    if cfg.threshold == "auto":
        allowed = int((ordered <= cfg.max_threshold).sum())
        step = max(1, len(flat) // 200)

        def pruned_accuracy(k: int) -> float:
            return accuracy(predict(prune_neurons(model, masks, k, cfg.include_linear), val_part.x), val_part.y)

        count, scored = last_within_drop(range(step, allowed + 1, step), pruned_accuracy, base, cfg.max_accuracy_drop,
                                         progress=progress, desc="ANP prune")
        count, curve = count or 0, curve + scored
        threshold = float(ordered[count - 1]) if count else None
    else:
        count, threshold = int((flat < cfg.threshold).sum()), float(cfg.threshold)
    pruned = prune_neurons(model, masks, count, cfg.include_linear)
    info = {"neurons": len(flat), "pruned": count, "threshold": threshold,
            "validation_accuracy": {"before": base, "pruned": accuracy(predict(pruned, val_part.x), val_part.y)},
            "prune_curve": curve, "mask_quantiles": {q: float(flat.quantile(q)) for q in (0.01, 0.05, 0.25, 0.5)},
            "config": cfg.to_dict()}
    return pruned, info
