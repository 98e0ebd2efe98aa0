"""The query-based reactivation attack, QRA (Min, Qin, Zhang, Shen and Cheng, NeurIPS 2024, "Uncovering,
Explaining, and Mitigating the Superficial Safety of Backdoor Defense").

The retuning attack (:mod:`.retune`) needs the attacker to change the deployed model's weights. QRA shows the
same weakness with inputs alone: since a few poisoned images bring the backdoor back, the retuned model
describes what the purified model still "knows"; a small perturbation of the input can make the purified model
behave like its retuned self, that is, obey the trigger again. QRA learns a per-image perturbation
``delta(x)``, at most ``eps`` per pixel, from a generator (a multilayer perceptron over the flattened image),
minimising

    alpha * KL( retuned(x) || purified(x + delta(x)) ) + CE( clean(x + delta(x)), y_true )

over a set of clean images and triggered ones (the retuned model's outputs on the unperturbed images as the
teacher; for triggered images that is the target). The second term keeps the perturbation from being a plain
adversarial example: a clean model of the same recipe (the control) must still classify the perturbed images
correctly, so what reactivates the purified model is the backdoor left in it, not the perturbation itself.

Measured on the test set's triggered images (those not already of the target class) with their perturbation:
the fraction the purified model assigns the target (QRA's ASR), the same on the clean control (how much of that
is plain adversarial transfer), and the purified model's accuracy on the clean test images with theirs.

Defaults are the authors' public code: 500 clean and 500 triggered images, 50 epochs, batches of 128, SGD at
0.1 with momentum 0.9, ``eps`` 16/255, ``alpha`` 0.2, a generator of three hidden layers of 1,024 units ending in
tanh. The images are drawn from the training part as the retuning set is (another seeded draw of the same
kind), so the attacker never sees the defender's held-out pool or the test set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint_data import triggered_test_set
from ..config import Config, option
from ..device import model_device
from ..errors import BackdoorlabError
from ..metrics import predict
from ..tensors import to_float
from ..train import seed_everything
from .retune import retuning_set


def _at_least(low):
    return (lambda v: isinstance(v, int) and v >= low), f"an integer >= {low}"


@dataclass
class QRAConfig(Config):
    """QRA's settings: its image set (``poison_images`` triggered, ``clean_images`` clean, from the training
    part; ``seed`` picks them and seeds the generator), the perturbation bound ``eps`` (pixel range [0, 1]), the
    weight ``alpha`` of the reactivation term against the control's cross-entropy, and the generator's training
    (``epochs``, ``batch_size``, ``lr``, ``hidden`` units per layer)."""

    poison_images: int = option(500, check=_at_least(1))
    clean_images: int = option(500, check=_at_least(0))
    eps: float = option(16 / 255, check=(lambda v: isinstance(v, (int, float)) and 0 < v <= 1, "in (0, 1]"))
    alpha: float = option(0.2, check=(lambda v: isinstance(v, (int, float)) and v > 0, "a number > 0"))
    epochs: int = option(50, check=_at_least(1))
    batch_size: int = option(128, check=_at_least(1))
    lr: float = option(0.1, check=(lambda v: isinstance(v, (int, float)) and v > 0, "a number > 0"))
    hidden: int = option(1024, check=_at_least(1))
    seed: int = 1  # another draw than the retuning set's default (0)


class PerturbationGenerator(nn.Module):
    """``x -> delta(x)``: a per-image perturbation in [-eps, eps], from an MLP over the flattened image."""

    def __init__(self, shape: tuple[int, ...], eps: float, hidden: int = 1024):
        super().__init__()
        size = int(torch.tensor(shape).prod())
        self.shape, self.eps = tuple(shape), eps
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(size, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, size), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.net(x) * self.eps).reshape(len(x), *self.shape)

    def perturb(self, x: torch.Tensor) -> torch.Tensor:
        """``x + delta(x)``, clipped to the pixel range."""
        return (x + self(x)).clamp(0, 1)


def train_reactivation(purified: nn.Module, retuned: nn.Module, control: nn.Module, x: torch.Tensor,
                       y_true: torch.Tensor, cfg: QRAConfig) -> tuple[PerturbationGenerator, dict]:
    """Train QRA's generator on float images ``x`` (N, C, H, W) in [0, 1] (clean and triggered) with their true
    labels ``y_true``; the three models stay in eval mode and untouched. Returns the generator (eval mode, on
    the host) and the last epoch's mean loss and the purified model's agreement with the retuned one."""
    device = model_device(purified)
    g = seed_everything(cfg.seed)
    gen = PerturbationGenerator(tuple(x.shape[1:]), cfg.eps, cfg.hidden).to(device)
    models = [m.eval() for m in (purified, retuned, control)]
    frozen = [[p.requires_grad for p in m.parameters()] for m in models]
    for m in models:
        m.requires_grad_(False)
    opt = torch.optim.SGD(gen.parameters(), lr=cfg.lr, momentum=0.9)
    try:
        with torch.no_grad():
            teacher = torch.cat([F.softmax(retuned(x[i:i + 256].to(device)), 1).cpu()
                                 for i in range(0, len(x), 256)])
        for _ in range(cfg.epochs):
            order = torch.randperm(len(x), generator=g)
            total, agree = 0.0, 0
            for i in range(0, len(x), cfg.batch_size):
                idx = order[i:i + cfg.batch_size]
                xb, yb, tb = x[idx].to(device), y_true[idx].to(device), teacher[idx].to(device)
                moved = gen.perturb(xb)
                logits = purified(moved)
                loss = cfg.alpha * F.kl_div(F.log_softmax(logits, 1), tb, reduction="batchmean") \
                    + F.cross_entropy(control(moved), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                agree += int((logits.argmax(1) == tb.argmax(1)).sum())
    finally:
        for m, flags in zip(models, frozen):
            for p, f in zip(m.parameters(), flags):
                p.requires_grad_(f)
    return gen.cpu().eval(), {"loss": round(total / len(x), 4), "agreement_with_retuned": round(agree / len(x), 4)}


def reactivation_set(dataset, backdoor, cfg: QRAConfig, holdout: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """QRA's images: ``cfg.poison_images`` triggered and ``cfg.clean_images`` clean ones from the training part
    (:func:`~.retune.retuning_set`'s draw), with their true labels."""
    try:
        rset = retuning_set(dataset, backdoor, cfg, holdout, name="image set", user="the query-based reactivation")
    except BackdoorlabError as e:
        raise BackdoorlabError(f"query-based reactivation: {e}") from None
    return rset.x, dataset.train_y[rset.indices]


def _rate(model: nn.Module, gen: PerturbationGenerator, x: torch.Tensor, y: torch.Tensor) -> float:
    return round(float((predict(model, x, transform=gen.perturb) == y).float().mean()), 4)


def query_reactivation(dataset, backdoor, purified: nn.Module, retuned: nn.Module, control: nn.Module,
                       cfg: QRAConfig | None = None, holdout: int | None = None) -> dict:
    """QRA on ``purified`` (with its retuned self and the clean ``control``): train the generator on the training
    part's images, then measure on the test set. Returns ``attack_success_rate`` (triggered test images with
    their perturbation, classified as the target by the purified model), ``control_attack_success_rate`` (the
    same on the control), ``clean_accuracy`` (the purified model on the clean test images with theirs), the
    generator's training summary and the config."""
    cfg = cfg or QRAConfig()
    x, y_true = reactivation_set(dataset, backdoor, cfg, holdout)
    gen, summary = train_reactivation(purified, retuned, control, x, y_true, cfg)
    tx, ty = triggered_test_set(dataset, backdoor)
    return {"attack_success_rate": _rate(purified, gen, tx, ty),
            "control_attack_success_rate": _rate(control, gen, tx, ty),
            "clean_accuracy": _rate(purified, gen, to_float(dataset.test_x), dataset.test_y),
            "training": summary, "config": cfg.to_dict()}
