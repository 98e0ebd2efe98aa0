"""Attacks on a trained model: the attacker changes weights, not training data.

- :func:`adversarial_weight_perturbation` (Garg et al., CIKM 2020, "Can Adversarial Weight Perturbations Inject
  Neural Backdoors?"). Threat model: the attacker gets the trained weights (e.g. while they are distributed) and
  a few clean inputs, and may change every weight by at most epsilon (l-infinity), so that the change is hard
  to spot. Projected gradient descent on the weights minimises cross-entropy on clean inputs labelled with the
  original model's own predictions, plus cross-entropy on triggered inputs labelled with the target; the
  weights are projected back into the epsilon-ball after every step.
- :func:`fault_injection` (Liu et al., ICCAD 2017, "Fault Injection Attack on Deep Neural Network", gradient
  descent attack, as used by Zhao et al. 2020). Threat model: the attacker can alter the parameters of one layer
  in memory (fault injection) and wants a few chosen images classified as chosen labels while the model keeps
  its other predictions. Minimises a hinge loss on the chosen images' target margins plus cross-entropy towards
  the original predictions on other images, with small Adam steps, and stops as soon as every chosen image
  flips. (A heavy weight on the chosen images flips them quickly but costs accuracy on the rest; the light
  default keeps most of it: see docs/attacks.md.)
- :func:`single_bias_attack` (Liu et al. 2017, SBA): change one bias value of a layer, the one whose increase
  raises the target logit margin of the chosen images fastest, by the smallest amount that flips them.

The fault attacks' "ASR" is the fraction of the chosen images that flip to their chosen labels; the accuracy
kept on the other test images is reported beside it (:class:`FaultBackdoor`).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..config import Config, option
from ..errors import BackdoorlabError, valid_names
from ..device import model_device, to_device, to_host
from ..metrics import predict
from ..tensors import to_float
from .backdoor import register_backdoor_kind, triggers_of


def relative_change(before: dict, after: dict) -> dict:
    """Statistics of the element-wise relative weight change |dw| / |w| over all parameters (elements with
    w = 0 are left out of the ratio), and the largest absolute change. Computed on the host."""
    ratios, dmax, changed, total = [], 0.0, 0, 0
    for name, w in before.items():
        w = to_host(w)
        d = (to_host(after[name]) - w).abs()
        dmax = max(dmax, d.max().item() if d.numel() else 0.0)
        changed += int((d > 0).sum())
        total += d.numel()
        nz = w.abs() > 0
        ratios.append((d[nz] / w.abs()[nz]).flatten())
    r = torch.cat(ratios).double() if ratios else torch.zeros(1, dtype=torch.float64)
    q = torch.quantile(r[torch.randperm(len(r), generator=torch.Generator().manual_seed(0))[:1_000_000]],
                       torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64))
    return {"mean": r.mean().item(), "median": q[0].item(), "p90": q[1].item(), "p99": q[2].item(),
            "max_abs_change": dmax, "changed_fraction": changed / max(total, 1), "parameters": total}


# ----------------------------------------------------------------------------------- weight perturbation


@dataclass
class WeightPerturbationConfig(Config):
    """Hyperparameters of :func:`adversarial_weight_perturbation`.

    ``epsilon``: l-infinity radius around the original weights (absolute, in weight units). ``step_size``:
    PGD step (default epsilon / 100; epsilon / 10 pushed every weight to the edge of the ball and lost much of
    the clean agreement: docs/attacks.md). ``trigger_weight``: weight of the backdoor cross-entropy.
    """

    epsilon: float = option(0.01, flag="--epsilon")
    steps: int = option(300, flag="--steps")
    step_size: float | None = option(None, flag="--step-size")
    batch_size: int = 128
    trigger_weight: float = 1.0
    seed: int = option(0, flag="--seed")

    def validate(self):
        if not self.epsilon > 0:
            raise BackdoorlabError(f"epsilon must be > 0, got {self.epsilon}")
        if self.steps < 1 or self.batch_size < 1:
            raise BackdoorlabError("steps and batch size must be >= 1")
        if self.step_size is not None and not self.step_size > 0:
            raise BackdoorlabError(f"step size must be > 0, got {self.step_size}")


def adversarial_weight_perturbation(model: torch.nn.Module, backdoor, x: torch.Tensor, y: torch.Tensor,
                                    num_classes: int, cfg: WeightPerturbationConfig, progress: bool = True):
    """Inject ``backdoor`` (a trigger backdoor) into a copy of ``model`` by l-infinity PGD on its parameters.

    Args:
        x, y: the attacker's clean images (uint8 or float, (N, C, H, W)) and their true labels (used only for
            all-to-all targets; clean inputs are labelled with the original model's predictions).
    Returns:
        (attacked model in eval mode, report dict with the relative weight change and the seconds taken).
    """
    parts = triggers_of(backdoor, "the weight-perturbation attack")  # one per target of a multi-target backdoor
    backdoor.check(num_classes)
    tick = time.time()
    model = copy.deepcopy(model).eval()
    original_pred = predict(model, x)
    params = {n: p for n, p in model.named_parameters() if p.dtype.is_floating_point}
    before = {n: p.detach().clone() for n, p in params.items()}
    step = cfg.step_size if cfg.step_size is not None else cfg.epsilon / 100
    g = torch.Generator().manual_seed(cfg.seed)
    device = model_device(model)  # batches drawn and stamped on the host, then moved
    for p in model.parameters():
        p.requires_grad_(True)
    bar = tqdm(range(cfg.steps), desc="weight perturbation", disable=not progress, leave=False)
    for _ in bar:
        idx = torch.randint(len(x), (min(cfg.batch_size, len(x)),), generator=g)
        xb, yb = to_float(x[idx]), y[idx]
        loss_clean = F.cross_entropy(model(to_device(xb, device)), to_device(original_pred[idx], device))
        loss_bd = sum(_trigger_loss(model, part, xb, yb, num_classes, g, device) for part in parts) / len(parts)
        loss = loss_clean + cfg.trigger_weight * loss_bd
        model.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            for n, p in params.items():
                if p.grad is not None:
                    p.sub_(step * p.grad.sign())
                    p.copy_(torch.maximum(torch.minimum(p, before[n] + cfg.epsilon), before[n] - cfg.epsilon))
        bar.set_postfix(clean=f"{loss_clean.item():.3f}", backdoor=f"{float(torch.as_tensor(loss_bd).detach()):.3f}")
    for p in model.parameters():
        p.requires_grad_(False)
    after = {n: p.detach() for n, p in params.items()}
    report = {"relative_weight_change": relative_change(before, after), "attacker_images": len(x),
              "seconds": round(time.time() - tick, 1), "config": asdict(cfg)}
    return model.eval(), report


def agreement(model_a, model_b, x: torch.Tensor, batch_size: int = 256) -> float:
    """Fraction of images on which two models predict the same label."""
    return (predict(model_a, x, batch_size) == predict(model_b, x, batch_size)).float().mean().item()


def _trigger_loss(model: torch.nn.Module, part, xb: torch.Tensor, yb: torch.Tensor, num_classes: int,
                  generator: torch.Generator, device):
    """Cross-entropy of ``model`` on the batch's eligible images stamped with ``part``'s trigger, against its
    target labels (0 when no image of the batch is eligible)."""
    keep = part.eligible(yb)
    xt = part.trigger.apply(xb[keep], training=False, generator=generator)
    if not len(xt):
        return 0.0
    return F.cross_entropy(model(to_device(xt, device)), to_device(part.target_labels(yb[keep], num_classes), device))


# -------------------------------------------------------------------------------------- fault injection


class FaultBackdoor:
    """Chosen test images (indices into the test set) and the labels the attacker wants for them."""

    kind = "fault"

    def __init__(self, indices, targets, n_test: int):
        self.indices = [int(i) for i in indices]
        self.targets = [int(t) for t in targets]
        self.n_test = int(n_test)
        if not self.indices or len(self.indices) != len(self.targets):
            raise BackdoorlabError("fault injection needs one target label per chosen image")

    @property
    def parts(self):
        return [self]

    def check(self, num_classes: int) -> None:
        bad = [t for t in self.targets if not 0 <= t < num_classes]
        if bad:
            raise BackdoorlabError(f"target label(s) {bad} out of range for {num_classes} classes")

    def measure(self, model, x: torch.Tensor, y: torch.Tensor, num_classes: int, batch_size: int = 256) -> dict:
        if len(x) != self.n_test:
            raise BackdoorlabError(f"this fault-injection backdoor was planted on chosen images of a test set of "
                                   f"{self.n_test} images; got {len(x)} images")
        pred = predict(model, x, batch_size)
        idx = torch.tensor(self.indices)
        rest = torch.ones(len(y), dtype=torch.bool)
        rest[idx] = False
        return {"attack_success_rate": (pred[idx] == torch.tensor(self.targets)).float().mean().item(),
                "robust_accuracy": (pred[idx] == y[idx]).float().mean().item(),
                "accuracy_on_rest": (pred[rest] == y[rest]).float().mean().item()}

    def to_dict(self) -> dict:
        return {"kind": self.kind, "indices": self.indices, "targets": self.targets, "n_test": self.n_test}


register_backdoor_kind("fault", lambda s: FaultBackdoor(s["indices"], s["targets"], s["n_test"]))


def layer_names(model: torch.nn.Module, need_bias: bool = False) -> list[str]:
    """Names of the modules that own parameters directly (with a bias, if ``need_bias``)."""
    out = []
    for name, module in model.named_modules():
        own = dict(module.named_parameters(recurse=False))
        if own and (not need_bias or own.get("bias") is not None) and name:
            out.append(name)
    return out


def get_layer(model: torch.nn.Module, name: str, need_bias: bool = False) -> torch.nn.Module:
    valid = layer_names(model, need_bias)
    if name not in valid:
        what = "layer with a bias" if need_bias else "layer with parameters"
        raise BackdoorlabError(f"no {what} named {name!r} in this model; valid: {valid_names(valid)}")
    return dict(model.named_modules())[name]


def choose_fault_targets(model, x: torch.Tensor, y: torch.Tensor, n_images: int, num_classes: int,
                         target: int | None = None, seed: int = 0) -> tuple[list[int], list[int]]:
    """Pick ``n_images`` test images the model classifies correctly (and, with a fixed ``target``, whose label
    is not the target), each with a target label: ``target``, or a random label other than the true one."""
    if n_images < 1:
        raise BackdoorlabError(f"the number of chosen images must be >= 1, got {n_images}")
    if target is not None and not 0 <= target < num_classes:
        raise BackdoorlabError(f"target label {target} is out of range for {num_classes} classes")
    g = torch.Generator().manual_seed(seed)
    pred = predict(model, x)
    ok = pred == y
    if target is not None:
        ok &= y != target
    candidates = torch.nonzero(ok).flatten()
    if len(candidates) < n_images:
        raise BackdoorlabError(f"only {len(candidates)} suitable images for {n_images} chosen images")
    idx = candidates[torch.randperm(len(candidates), generator=g)[:n_images]].sort().values
    if target is not None:
        targets = [target] * n_images
    else:
        shift = torch.randint(1, num_classes, (n_images,), generator=g)
        targets = ((y[idx] + shift) % num_classes).tolist()
    return idx.tolist(), targets


def _margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """logit[label] - max other logit, per row."""
    other = logits.clone()
    other[torch.arange(len(labels)), labels] = float("-inf")
    return logits[torch.arange(len(labels)), labels] - other.max(1).values


def default_fault_layer(model: torch.nn.Module) -> str:
    """The last hidden layer with a weight matrix or kernel (the one before the final linear layer)."""
    names = [n for n, m in model.named_modules() if n and getattr(m, "weight", None) is not None
             and m.weight.dim() >= 2]
    return names[-2] if len(names) >= 2 else names[-1]


@dataclass
class FaultInjectionConfig(Config):
    """Hyperparameters of :func:`fault_injection`: the ``layer`` to alter (default: the last hidden layer with a
    weight matrix or kernel), Adam ``lr`` on its parameters, at most ``steps`` steps; hinge ``kappa`` (logit
    margin required of the chosen images); ``chosen_weight`` multiplies their hinge; the other images' loss is
    cross-entropy to the original predictions, ``batch_size`` of them per step."""

    layer: str | None = option(None, flag="--layer")
    steps: int = option(10000, flag="--steps")
    lr: float = option(1e-5, flag="--lr")
    kappa: float = 1.0
    chosen_weight: float = 0.1
    batch_size: int = 256
    seed: int = option(0, flag="--seed")

    def validate(self):
        if self.steps < 1 or self.batch_size < 1 or not self.lr > 0 or self.kappa < 0 or self.chosen_weight <= 0:
            raise BackdoorlabError("fault injection needs steps >= 1, batch size >= 1, lr > 0, kappa >= 0 and a "
                                   "positive chosen-image weight")


def fault_injection(model: torch.nn.Module, chosen_x: torch.Tensor, chosen_targets: list[int],
                    keep_x: torch.Tensor, cfg: FaultInjectionConfig, progress: bool = True):
    """Gradient-descent fault injection on one layer (see the module docstring).

    Returns (attacked model in eval mode, report: steps used, success, relative change of the layer)."""
    tick = time.time()
    model = copy.deepcopy(model).eval()
    if cfg.layer is None:
        cfg = dataclasses.replace(cfg, layer=default_fault_layer(model))
    layer = get_layer(model, cfg.layer)
    params = dict(layer.named_parameters(recurse=False))
    before = {n: p.detach().clone() for n, p in params.items()}
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    keep_pred = predict(model, keep_x)
    device = model_device(model)
    targets = torch.tensor(chosen_targets, device=device)
    xc = to_device(to_float(chosen_x), device)
    opt = torch.optim.Adam(params.values(), lr=cfg.lr)
    g = torch.Generator().manual_seed(cfg.seed)
    steps, success = 0, False
    bar = tqdm(range(cfg.steps), desc="fault injection", disable=not progress, leave=False)
    for steps in bar:
        with torch.no_grad():  # flipped, with a small margin so that a differently batched pass agrees
            if bool((_margin(model(xc), targets) > min(cfg.kappa, 0.1)).all()):
                success = True
                break
        idx = torch.randint(len(keep_x), (min(cfg.batch_size, len(keep_x)),), generator=g)
        hinge_chosen = F.relu(cfg.kappa - _margin(model(xc), targets)).sum()
        keep_loss = F.cross_entropy(model(to_device(to_float(keep_x[idx]), device)), to_device(keep_pred[idx], device))
        loss = cfg.chosen_weight * hinge_chosen + keep_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    else:
        steps = cfg.steps
        with torch.no_grad():
            success = bool((_margin(model(xc), targets) > 0).all())
    for p in params.values():
        p.requires_grad_(False)
    after = {n: p.detach() for n, p in params.items()}
    report = {"layer": cfg.layer, "steps": steps, "success": success,
              "relative_weight_change": relative_change(before, after), "keep_images": len(keep_x),
              "seconds": round(time.time() - tick, 1), "config": asdict(cfg)}
    return model, report


def single_bias_attack(model: torch.nn.Module, chosen_x: torch.Tensor, target: int, layer_name: str | None = None,
                       max_change: float = 1e4, candidates: int = 10, margin_needed: float = 0.1):
    """Single bias attack: raise (or lower) one bias of ``layer_name`` (default ``fc``, the output layer) until
    every chosen image is classified as ``target``; the unit is the one whose bias moves the chosen images' target margin fastest.

    Each chosen image must end with its target logit ``margin_needed`` above the others: at the exact
    boundary, the rounding of a differently batched forward pass can undo the flip.

    Returns (attacked model, report with the unit, the change and success)."""
    original_model, model = model, copy.deepcopy(model).eval()
    layer_name = layer_name or "fc"
    layer = get_layer(model, layer_name, need_bias=True)
    bias = layer.bias
    device = model_device(model)
    xc = to_device(to_float(chosen_x), device)
    targets = torch.full((len(xc),), int(target), dtype=torch.long, device=device)
    for p in model.parameters():
        p.requires_grad_(False)
    bias.requires_grad_(True)
    margin = _margin(model(xc), targets).min()
    grad, = torch.autograd.grad(margin, bias)
    bias.requires_grad_(False)

    def flips(unit: int, value: float) -> bool:  # with a small logit margin, so batching cannot undo it
        with torch.no_grad():
            bias[unit] = value
            return bool((_margin(model(xc), targets) > margin_needed).all())

    # Try the units whose bias moves the worst margin fastest; the first for which some change flips every
    # chosen image wins, with the smallest such change (doubling, then bisection).
    for unit in grad.abs().argsort(descending=True)[:candidates].tolist():
        if grad[unit] == 0:
            break
        direction = 1.0 if grad[unit] > 0 else -1.0
        original = bias[unit].item()
        hi = 1e-3
        while hi <= max_change and not flips(unit, original + direction * hi):
            hi *= 2
        if hi > max_change:
            flips(unit, original)
            continue
        lo = 0.0
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if flips(unit, original + direction * mid) else (mid, hi)
        flips(unit, original + direction * hi)
        report = {"layer": layer_name, "unit": unit, "original_bias": original, "change": direction * hi,
                  "success": True, "relative_weight_change": relative_change(
                      {n: p.detach() for n, p in original_model.named_parameters()},
                      {n: p.detach() for n, p in model.named_parameters()})}
        return model, report
    raise BackdoorlabError(f"the single bias attack on layer {layer_name!r} found no single bias change up to "
                           f"{max_change:g} that flips the chosen images; try another layer or fewer images")

