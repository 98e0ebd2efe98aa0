"""The training loop: SGD with momentum, one-cycle or cosine schedule, batched augmentation, seeded.

``fit`` is the one loop. It takes a loss function ``loss_fn(images, labels) -> (loss, logits)`` so that the same
loop trains a model (:func:`train_model`) and a curve's control points (see ``curves.py``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .augment import AUGMENTATIONS, augment
from .device import autocast_settings, params_device, to_device
from .errors import BackdoorlabError, valid_names
from .tensors import channels_last, model_channels_last, to_float

SCHEDULES = ("onecycle", "cosine", "constant")


@dataclass
class TrainConfig:
    """Hyperparameters of one training run. ``lr`` is the peak learning rate."""

    epochs: int = 3
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    augment: str = "none"
    seed: int = 0
    nesterov: bool = True
    channels_last: bool = True  # see channels_last(): faster convolutions on CPU
    steps: int | None = None  # if given, train for this many optimizer steps instead of ``epochs`` epochs
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise BackdoorlabError(f"unknown schedule {self.schedule!r}; valid: {valid_names(SCHEDULES)}")
        if self.augment not in AUGMENTATIONS:
            raise BackdoorlabError(f"unknown augmentation {self.augment!r}; valid: {valid_names(AUGMENTATIONS)}")
        if self.epochs < 0 or (self.steps is not None and self.steps < 0):
            raise BackdoorlabError("the number of epochs or steps must be >= 0")
        if self.batch_size < 1 or self.lr <= 0:
            raise BackdoorlabError("batch size must be >= 1 and learning rate > 0")

    def to_dict(self) -> dict:
        return asdict(self)


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global generator (weight init, dropout) and return a generator for data order/augmentation."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _scheduler(opt, cfg: TrainConfig, total_steps: int):
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(total_steps, 1),
                                                   pct_start=0.15, anneal_strategy="linear",
                                                   cycle_momentum=False, div_factor=10.0, final_div_factor=100.0)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def fit(params, loss_fn, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, *, progress: bool = True,
        desc: str = "train", generator: torch.Generator | None = None, batch_hook=None) -> dict:
    """Minimise ``loss_fn`` over mini-batches of (x, y) by SGD on ``params``.

    Args:
        params: the tensors to optimise (an iterable of parameters or of param-group dicts).
        loss_fn: ``loss_fn(images, labels) -> (loss, logits)`` with float images (B, C, H, W) in [0, 1].
        x: uint8 or float images (N, C, H, W); y: int64 labels (N,).
        batch_hook: optional ``batch_hook(images, labels, indices) -> (images, labels)``, applied to each
            augmented float batch (``indices`` index ``x``); attacks that control training use it (triggers
            stamped after augmentation, the triggerless backdoor's batches).
    Batches are drawn, augmented and hooked on the host, then moved to the device of ``params`` (see device.py),
    so a run on CPU and one on a GPU see the same images; inside a ``device.mixed_precision`` block the loss runs
    under autocast.
    Returns:
        history: ``{"loss": [...], "accuracy": [...]}`` per epoch (training batches, as augmented), ``"seconds"``.
    """
    n = len(y)
    if n == 0:
        raise BackdoorlabError("cannot train on an empty data set")
    g = generator if generator is not None else torch.Generator().manual_seed(cfg.seed)
    params = list(params)
    device = params_device(params)
    amp = autocast_settings(device)
    scaler = torch.amp.GradScaler(device.type) if amp is not None and amp[1] else None
    steps_per_epoch = max(1, n // cfg.batch_size) if n >= cfg.batch_size else 1
    total = cfg.steps if cfg.steps is not None else cfg.epochs * steps_per_epoch
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=cfg.nesterov and cfg.momentum > 0)
    sched = _scheduler(opt, cfg, total)
    history = {"loss": [], "accuracy": []}
    start, step = time.time(), 0
    bar = tqdm(total=total, desc=desc, disable=not progress, unit="step", leave=False, dynamic_ncols=True)
    while step < total:
        perm = torch.randperm(n, generator=g)
        ep_loss, ep_correct, ep_seen = 0.0, 0, 0
        for b in range(steps_per_epoch):
            if step >= total:
                break
            idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            xb = augment(to_float(x[idx]), cfg.augment, g)
            yb = y[idx]
            if batch_hook is not None:
                xb, yb = batch_hook(xb, yb, idx)
            if cfg.channels_last:
                xb = channels_last(xb)
            xb, yb = to_device(xb, device), to_device(yb, device)
            if amp is None:
                loss, logits = loss_fn(xb, yb)
            else:
                with torch.autocast(device.type, dtype=amp[0]):
                    loss, logits = loss_fn(xb, yb)
            if not torch.isfinite(loss):
                bar.close()
                raise BackdoorlabError(f"training diverged at step {step} (loss {loss.item()}); lower the learning rate")
            opt.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                opt.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            sched.step()
            step += 1
            ep_loss += loss.item() * len(yb)
            ep_correct += (logits.argmax(1) == yb).sum().item()
            ep_seen += len(yb)
            bar.update(1)
            if step % 10 == 0 or step == total:
                bar.set_postfix(loss=f"{ep_loss / ep_seen:.3f}", acc=f"{ep_correct / ep_seen:.3f}")
        history["loss"].append(ep_loss / max(ep_seen, 1))
        history["accuracy"].append(ep_correct / max(ep_seen, 1))
    bar.close()
    if batch_hook is not None and hasattr(batch_hook, "finish"):
        batch_hook.finish()
    history["seconds"] = time.time() - start
    history["steps"] = step
    return history


def train_model(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, *,
                progress: bool = True, desc: str = "train", batch_hook=None) -> dict:
    """Train ``model`` in place with cross-entropy on uint8 images ``x`` (N, C, H, W) and labels ``y`` (N,)."""
    g = seed_everything(cfg.seed)
    if cfg.channels_last:
        model_channels_last(model)
    model.train()

    def loss_fn(xb, yb):
        logits = model(xb)
        return F.cross_entropy(logits, yb), logits

    history = fit(model.parameters(), loss_fn, x, y, cfg, progress=progress, desc=desc, generator=g,
                  batch_hook=batch_hook)
    model.to(memory_format=torch.contiguous_format)
    model.eval()
    return history

