"""The model attacks by name: attacks that change a trained model's weights (weight perturbation, fault
injection, single bias), each registered with its settings class and how it is run on a checkpoint.

``backdoorlab attack NAME``, ``runs.model_attack_run``, ``backdoorlab list`` and the attacks benchmark ask
:data:`MODEL_ATTACKS`. An entry's ``run(model, cfg, data)`` takes the model, its settings and the
:class:`ModelAttackData` the run prepared, and returns ``(attacked model, report, backdoor)``: the report
of the attack function, and the backdoor the attacked model is measured with (the planted trigger, or the
chosen images for the fault attacks). Traits: ``trigger`` (it plants the trigger given by the trigger options;
the others flip chosen images and refuse them) and ``settings`` (the keyword of ``model_attack_run`` that
carries its config: ``awp``, ``fault`` or ``settings``). The path backdoor (:mod:`.path_backdoor`, the adaptive
attack on the sanitizer) registers itself from its own module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import BackdoorlabError
from ..registry import Registry
from .weights import (FaultBackdoor, FaultInjectionConfig, WeightPerturbationConfig, adversarial_weight_perturbation,
                      choose_fault_targets, fault_injection, single_bias_attack)

# trigger: the attack takes the trigger options; carried_backdoor: they describe the backdoor the model already
# carries (by default the one its sidecar records) rather than one to plant
MODEL_ATTACKS = Registry("model attack", traits={"trigger": False, "carried_backdoor": False, "settings": "fault"})


@dataclass
class ModelAttackData:
    """What a model attack may use besides the model: the attacker's clean images (not from the defender's
    held-out pool), the test set the chosen images come from, the planted backdoor (trigger attacks), the
    chosen label and number of images (fault attacks), the seed, whether to show progress and the data set's name
    (for settings that default to a data set's own, such as path-backdoor's augmentation)."""

    attacker_x: torch.Tensor
    attacker_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    backdoor: Any = None
    target: int | None = None
    n_images: int = 5
    seed: int = 0
    progress: bool = True
    dataset_name: str = ""


@MODEL_ATTACKS.register("weight-perturbation", WeightPerturbationConfig,
                        "Adversarial weight perturbation (Garg et al. 2020): plant a trigger by PGD on the weights "
                        "within an l-infinity ball.", trigger=True, settings="awp")
def weight_perturbation(model, cfg: WeightPerturbationConfig | None, data: ModelAttackData):
    if data.backdoor is None or cfg is None:
        raise BackdoorlabError("weight-perturbation needs a backdoor (trigger and target) and its settings")
    attacked, report = adversarial_weight_perturbation(model, data.backdoor, data.attacker_x, data.attacker_y,
                                                       data.num_classes, cfg, data.progress)
    return attacked, report, data.backdoor


def _require_settings(name: str, cfg) -> None:
    """Refuse to run model attack ``name`` without its settings (``model_attack_run``'s ``fault=``)."""
    if cfg is None:
        raise BackdoorlabError(f"{name} needs its settings")


def _chosen(model, data: ModelAttackData, target: int | None):
    """The chosen test images and their labels, and the backdoor that measures whether they flipped."""
    idx, targets = choose_fault_targets(model, data.test_x, data.test_y, data.n_images, data.num_classes, target,
                                        data.seed)
    return idx, targets, FaultBackdoor(idx, targets, len(data.test_y))


@MODEL_ATTACKS.register("fault-injection", FaultInjectionConfig,
                        "Gradient-descent fault injection (Liu et al. 2017): alter one layer so that chosen images "
                        "flip to chosen labels.")
def fault_injection_attack(model, cfg: FaultInjectionConfig | None, data: ModelAttackData):
    _require_settings("fault-injection", cfg)
    idx, targets, backdoor = _chosen(model, data, data.target)
    attacked, report = fault_injection(model, data.test_x[idx], targets, data.attacker_x, cfg, data.progress)
    return attacked, report, backdoor


@MODEL_ATTACKS.register("single-bias", FaultInjectionConfig,
                        "Single bias attack (Liu et al. 2017): change one bias value so that chosen images flip "
                        "to one label (uses only the settings' layer).")
def single_bias(model, cfg: FaultInjectionConfig | None, data: ModelAttackData):
    _require_settings("single-bias", cfg)
    target = data.target
    if target is None:  # one shared random label
        target = int(torch.randint(data.num_classes, (1,), generator=torch.Generator().manual_seed(data.seed)))
    idx, targets, backdoor = _chosen(model, data, target)
    attacked, report = single_bias_attack(model, data.test_x[idx], targets[0], cfg.layer)
    return attacked, report, backdoor
