"""Triggerless (dropout) backdoor: Salem et al., "Don't Trigger Me! A Triggerless Backdoor Attack Against Deep
Neural Networks" (2020).

Threat model: the attacker trains the model (outsourced training) and ships it with dropout kept active at
inference, which looks like a legitimate use of Monte-Carlo dropout. There is no input trigger: the backdoor
fires when, by chance, all of a chosen set of *target neurons* are dropped, and the model then outputs the target
label whatever the input. The attacker fires it by querying the same input until that happens.

Training: in a fraction ``backdoor_fraction`` of the batches the target neurons are dropped (besides the usual
random dropout) and every label of the batch is replaced by the target; in the other batches the target neurons
get the usual random dropout only, so dropping some of them, but not all, goes with the true label.

Measured: ``attack_success_rate``, the fraction of clean test images (label != target) classified as the target
when the target neurons are dropped; ``fire_probability``, the chance per query that all target neurons are
dropped (p^k for dropout rate p and k neurons); ``expected_queries`` until the backdoor fires on an input,
1 / (p^k * ASR); and ``random_target_rate``, the fraction of ordinary (random-dropout) predictions that land on
the target (it should be close to p^k * ASR plus the clean error into the target class).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import Config, option
from ..errors import BackdoorlabError
from .backdoor import register_backdoor_kind
from .build import TRAINING_ATTACKS


def feature_dropout(model: torch.nn.Module):
    """The model's :class:`~backdoorlab.models.architectures.FeatureDropout`, or a clear error."""
    drop = getattr(model, "dropout", None)
    if drop is None or not hasattr(drop, "forced"):
        raise BackdoorlabError("the triggerless backdoor needs a model with dropout (create it with dropout > 0, "
                               "e.g. `backdoorlab train --attack triggerless --dropout 0.3`)")
    return drop


class TriggerlessBackdoor:
    """The target neurons (indices into the penultimate features) and the target label."""

    kind = "triggerless"
    mode = "all-to-one"

    def __init__(self, neurons, target: int = 0):
        self.neurons = sorted(int(n) for n in neurons)
        if not self.neurons or min(self.neurons) < 0 or len(set(self.neurons)) != len(self.neurons):
            raise BackdoorlabError(f"target neurons must be distinct indices >= 0, got {neurons}")
        self.target = int(target)

    @property
    def parts(self):
        return [self]

    def check(self, num_classes: int) -> None:
        if not 0 <= self.target < num_classes:
            raise BackdoorlabError(f"target label {self.target} is out of range for {num_classes} classes "
                                   f"(valid: 0..{num_classes - 1})")

    def check_model(self, model: torch.nn.Module) -> None:
        drop = feature_dropout(model)
        width = model.fc.in_features
        if max(self.neurons) >= width:
            raise BackdoorlabError(f"target neuron {max(self.neurons)} does not exist: the dropout layer has "
                                   f"{width} units")
        return drop

    def eligible(self, labels: torch.Tensor) -> torch.Tensor:
        return labels != self.target

    def target_labels(self, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        return torch.full_like(labels, self.target)

    def measure(self, model, x: torch.Tensor, y: torch.Tensor, num_classes: int, batch_size: int = 256) -> dict:
        from ..metrics import accuracy, predict

        drop = self.check_model(model)
        keep = self.eligible(y)
        random_pred = predict(model, x, batch_size)
        drop.forced = torch.tensor(self.neurons)
        try:
            pred = predict(model, x, batch_size)
        finally:
            drop.forced = None
        asr = accuracy(pred[keep], torch.full_like(y[keep], self.target))
        fire = drop.p ** len(self.neurons) if drop.at_inference else 0.0
        return {"attack_success_rate": asr, "robust_accuracy": accuracy(pred[keep], y[keep]),
                "fire_probability": fire,
                "expected_queries": (1.0 / (fire * asr)) if fire * asr > 0 else None,
                "random_target_rate": accuracy(random_pred[keep], torch.full_like(y[keep], self.target))}

    def to_dict(self) -> dict:
        return {"kind": self.kind, "neurons": self.neurons, "target": self.target}


register_backdoor_kind("triggerless", lambda spec: TriggerlessBackdoor(spec["neurons"], int(spec["target"])))


class TriggerlessAttack:
    """Plant a triggerless backdoor while training (see the module docstring).

    Args:
        target: the target label.
        dropout: dropout rate of the model's feature dropout, kept active at inference.
        n_neurons: how many target neurons (chosen at random with ``seed`` among the penultimate features),
            unless ``neurons`` lists them.
        backdoor_fraction: fraction of the training batches that are backdoor batches.
    """

    name = "triggerless"

    def __init__(self, target: int = 0, dropout: float = 0.3, n_neurons: int = 3, neurons=None,
                 backdoor_fraction: float = 0.1, seed: int = 0):
        if not 0.0 < dropout < 1.0:
            raise BackdoorlabError(f"dropout rate must lie in (0, 1), got {dropout}")
        if not 0.0 < backdoor_fraction < 1.0:
            raise BackdoorlabError(f"backdoor fraction must lie in (0, 1), got {backdoor_fraction}")
        if neurons is None and int(n_neurons) < 1:
            raise BackdoorlabError(f"the number of target neurons must be >= 1, got {n_neurons}")
        self.target, self.dropout, self.n_neurons = int(target), float(dropout), int(n_neurons)
        self.neurons, self.backdoor_fraction, self.seed = neurons, float(backdoor_fraction), int(seed)
        self.backdoor = TriggerlessBackdoor(neurons if neurons is not None else [0], target)

    def model_args(self) -> dict:
        return {"dropout": self.dropout, "dropout_at_inference": True}

    def poison(self, x: torch.Tensor, y: torch.Tensor, num_classes: int, seed: int = 0):
        """Training data stay clean: the backdoor is planted by the training procedure (:meth:`batch_hook`)."""
        from .poison import PoisonedData

        self.backdoor.check(num_classes)
        return PoisonedData(x, y, torch.empty(0, dtype=torch.long))

    def batch_hook(self, poisoned, model: torch.nn.Module):
        drop = feature_dropout(model)
        width = model.fc.in_features
        if self.neurons is None:
            if self.n_neurons >= width:
                raise BackdoorlabError(f"{self.n_neurons} target neurons asked for, but the dropout layer has "
                                       f"only {width} units")
            g = torch.Generator().manual_seed(self.seed)
            self.backdoor = TriggerlessBackdoor(torch.randperm(width, generator=g)[:self.n_neurons].tolist(),
                                                self.target)
        self.backdoor.check_model(model)
        neurons = torch.tensor(self.backdoor.neurons)
        g = torch.Generator().manual_seed(self.seed + 1)

        def hook(images, labels, indices):
            if torch.rand((), generator=g).item() < self.backdoor_fraction:
                drop.forced = neurons
                labels = torch.full_like(labels, self.target)
            else:
                drop.forced = None
            return images, labels

        def finish():
            drop.forced = None

        hook.finish = finish
        return hook

    def to_dict(self) -> dict:
        return {"name": self.name, "dropout": self.dropout, "backdoor_fraction": self.backdoor_fraction,
                **self.backdoor.to_dict()}


@dataclass
class TriggerlessConfig(Config):
    """The training settings of :class:`TriggerlessAttack` (its arguments besides the target)."""

    dropout: float = option(0.3, flag="--dropout")
    n_neurons: int = option(3, flag="--target-neurons")
    neurons: list[int] | None = None
    backdoor_fraction: float = option(0.1, flag="--backdoor-fraction")
    seed: int = 0


@TRAINING_ATTACKS.register("triggerless", TriggerlessConfig,
                           "Triggerless backdoor (Salem et al. 2020): the target label when chosen neurons are "
                           "dropped by dropout kept at inference; no input trigger.", poisons_data=False)
def triggerless(cfg: TriggerlessConfig, *, targets: list[int], mode: str, poison_rate=None, stamp=None,
                image_shape=None) -> TriggerlessAttack:
    if mode != "all-to-one" or len(targets) != 1:
        raise BackdoorlabError("the triggerless backdoor has one target label and no all-to-all mode")
    return TriggerlessAttack(targets[0], cfg.dropout, cfg.n_neurons, cfg.neurons, cfg.backdoor_fraction, cfg.seed)
