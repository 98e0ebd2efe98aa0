"""The retuning attack (RA): does a repaired model relearn its backdoor from a handful of poisoned images?

Min et al. (NeurIPS 2024, "Uncovering, Explaining, and Mitigating the Superficial Safety of Backdoor Defense",
arXiv 2410.09838) fine-tune a purified model on a small *retuning set*: a few images carrying the trigger,
labelled with the attacker's target, among clean images. A defense that only hid the backdoor (low ASR, the
backdoor's features still in the weights) gets it back within a few steps; a model that never had one learns
much less from so few poisoned images. So the retuned ASR is compared with that of a clean model of the same
recipe retuned the same way (the *control*, see ``runs/retune.py``).

The attacker holds images of the training part (what an endpoint may be trained and poisoned on,
:func:`budget.training_part`), never the defender's held-out pool: :func:`retuning_set` draws from there.

Defaults (:class:`RetuneConfig`), the RA setting of the authors' public code (its README's example and the
defaults of its retuning script): a retuning set of 2% of the CIFAR-10 training set, 1,000 images, of which 5
carry the trigger; 5 epochs of SGD with momentum 0.9, learning rate 0.01, constant, no weight decay, batch 128.
Here the set is 5 poisoned + 995 clean images on every data set, and its clean images are not augmented (the
authors' are, with their training transform).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..attacks.backdoor import triggers_of
from ..budget import default_holdout, holdout_split
from ..config import Config, at_least, option
from ..errors import BackdoorlabError
from ..tensors import to_float
from ..train import TrainConfig
from .finetune import finetune


@dataclass
class RetuneConfig(Config):
    """The retuning attack's settings: its retuning set (``poison_images`` triggered images labelled with the
    target, ``clean_images`` clean ones) and its fine-tuning recipe (``epochs`` over the set, or ``steps``
    optimizer steps when given; SGD with momentum 0.9 (not Nesterov's) at the constant rate ``lr``)."""

    poison_images: int = option(5, check=at_least(1))
    clean_images: int = option(995, check=at_least(0))
    epochs: int = option(5, check=at_least(1))
    steps: int | None = option(None, check=(lambda v: v is None or v >= 1, ">= 1 (or none: use epochs)"))
    lr: float = option(0.01, check=(lambda v: v > 0, "> 0"))
    batch_size: int = option(128, check=at_least(1))
    weight_decay: float = option(0.0, check=at_least(0))
    seed: int = 0

    def train_config(self) -> TrainConfig:
        """The recipe of :func:`finetune`: ``steps`` steps, else ``epochs`` epochs of the retuning set."""
        return TrainConfig(epochs=self.epochs, steps=self.steps, lr=self.lr, batch_size=self.batch_size,
                           weight_decay=self.weight_decay, schedule="constant", nesterov=False, seed=self.seed)


@dataclass
class RetuningSet:
    """The attacker's retuning set: float images in [0, 1] (N, C, H, W), the labels trained on, and for each
    image its index in the data set's training images and whether it carries the trigger."""

    x: torch.Tensor
    y: torch.Tensor
    indices: torch.Tensor
    poisoned: torch.Tensor  # bool (N,)

    def __len__(self) -> int:
        return len(self.y)


def retuning_set(dataset, backdoor, cfg: RetuneConfig, holdout: int | None = None, *,
                 name: str = "retuning set", user: str = "the retuning attack") -> RetuningSet:
    """Draw the retuning set of ``cfg`` from the images the attacker may hold: the training part of
    ``dataset`` (its held-out pool of ``holdout`` images left out; None: the data set's default pool).

    One seeded permutation (``cfg.seed``) of the training part: the first ``poison_images`` images the backdoor
    applies to (for all-to-one, those not already of the target class) get the trigger (parts of a multi-target
    backdoor in turn) and the target label; the next ``clean_images`` of the rest stay as they are. ``name`` and
    ``user``: what the set is called and who draws it, in the one-line errors (another attack draws its own
    image set the same way)."""
    parts = triggers_of(backdoor, user)
    holdout = default_holdout(dataset.name) if holdout is None else holdout
    part_idx, _ = holdout_split(len(dataset.train_y), holdout)
    need = cfg.poison_images + cfg.clean_images
    if need > len(part_idx):
        article = "an" if name[0] in "aeiou" else "a"
        raise BackdoorlabError(f"{article} {name} of {cfg.poison_images} poisoned + {cfg.clean_images} clean images "
                               f"is larger than the {len(part_idx)} training images the attacker may hold in "
                               f"{dataset.name}")
    order = part_idx[torch.randperm(len(part_idx), generator=torch.Generator().manual_seed(cfg.seed))]
    labels = dataset.train_y[order]
    eligible = torch.ones(len(order), dtype=torch.bool)
    for p in parts:
        eligible &= p.eligible(labels)
    chosen = torch.nonzero(eligible).flatten()[:cfg.poison_images]
    if len(chosen) < cfg.poison_images:
        raise BackdoorlabError(f"only {len(chosen)} training images of {dataset.name} can carry the trigger (not "
                               f"already of the target class); the {name} asks for {cfg.poison_images}")
    rest = torch.ones(len(order), dtype=torch.bool)
    rest[chosen] = False
    clean = torch.nonzero(rest).flatten()[:cfg.clean_images]
    poison_idx, clean_idx = order[chosen], order[clean]
    g = torch.Generator().manual_seed(cfg.seed)
    xs, ys = [], []
    for i, p in enumerate(parts):  # multi-target: the poisoned images go to the parts in turn
        mine = poison_idx[i::len(parts)]
        if len(mine):
            xs.append(p.trigger.apply(to_float(dataset.train_x[mine]), training=False, generator=g))
            ys.append(p.target_labels(dataset.train_y[mine], dataset.num_classes))
    poison_idx = torch.cat([poison_idx[i::len(parts)] for i in range(len(parts))])
    x = torch.cat([*xs, to_float(dataset.train_x[clean_idx])])
    y = torch.cat([*ys, dataset.train_y[clean_idx]])
    poisoned = torch.cat([torch.ones(len(poison_idx), dtype=torch.bool), torch.zeros(len(clean_idx), dtype=torch.bool)])
    return RetuningSet(x.clamp_(0, 1), y, torch.cat([poison_idx, clean_idx]), poisoned)


def retune(model: nn.Module, retune_x: torch.Tensor, retune_y: torch.Tensor, cfg: RetuneConfig, *,
           progress: bool = True) -> nn.Module:
    """The retuning attack: a copy of ``model`` fine-tuned on the retuning set (images ``retune_x``, uint8 or
    float in [0, 1], labels ``retune_y``) with ``cfg``'s recipe, through the one training loop, seeded, on the
    model's device. The model given is left as it was."""
    if len(retune_y) == 0:
        raise BackdoorlabError("the retuning set is empty")
    return finetune(model, retune_x, retune_y, cfg.train_config(), progress=progress, desc="retune")
