"""Attacks: data poisoning (transform a training set), training-time attacks (the triggerless backdoor) and
model attacks (transform trained weights)."""

from .backdoor import Backdoor, MultiBackdoor, backdoor_from_dict
from .poison import BadNets, PoisonedData, PoisoningAttack, POISONING_ATTACKS, make_poisoning_attack
from .triggerless import TriggerlessAttack, TriggerlessBackdoor
from .weights import (FaultBackdoor, FaultInjectionConfig, WeightPerturbationConfig, adversarial_weight_perturbation,
                      agreement, choose_fault_targets, fault_injection, single_bias_attack)

TRAINING_ATTACKS = (*POISONING_ATTACKS, "triggerless")
MODEL_ATTACKS = ("weight-perturbation", "fault-injection", "single-bias")

__all__ = ["Backdoor", "MultiBackdoor", "backdoor_from_dict", "BadNets", "PoisonedData", "PoisoningAttack",
           "POISONING_ATTACKS", "make_poisoning_attack", "TriggerlessAttack", "TriggerlessBackdoor", "FaultBackdoor",
           "FaultInjectionConfig", "WeightPerturbationConfig", "adversarial_weight_perturbation", "agreement",
           "choose_fault_targets", "fault_injection", "single_bias_attack", "TRAINING_ATTACKS", "MODEL_ATTACKS"]
