"""Attacks: data poisoning (transform a training set), training-time attacks (the triggerless backdoor) and
model attacks (transform trained weights).

Importing the package imports every module in it (:func:`~backdoorlab.registry.import_plugins`), which
registers every training-time attack in ``TRAINING_ATTACKS`` and every model attack in ``MODEL_ATTACKS`` (each
module registers its own): a new attack is one new file.
"""

from ..registry import import_plugins

# every module of the package, which registers its attack; the built-in training-time attacks in listing order
import_plugins(__name__, first=("badnets", "blended", "dynamic", "triggerless"))
from .backdoor import Backdoor, MultiBackdoor, backdoor_from_dict, backdoor_of
from .build import TRAINING_ATTACKS, build_attack, make_poisoning_attack
from .model_attacks import MODEL_ATTACKS, ModelAttackData
from .poison import BadNets, PoisonedData, PoisoningAttack
from .triggerless import TriggerlessAttack, TriggerlessBackdoor
from .weights import (FaultBackdoor, FaultInjectionConfig, WeightPerturbationConfig, adversarial_weight_perturbation,
                      agreement, choose_fault_targets, fault_injection, single_bias_attack)

POISONING_ATTACKS = tuple(TRAINING_ATTACKS.names(poisons_data=True))

__all__ = ["Backdoor", "MultiBackdoor", "backdoor_from_dict", "backdoor_of", "BadNets", "PoisonedData", "PoisoningAttack",
           "POISONING_ATTACKS", "make_poisoning_attack", "build_attack", "TriggerlessAttack", "TriggerlessBackdoor",
           "FaultBackdoor", "FaultInjectionConfig", "WeightPerturbationConfig", "adversarial_weight_perturbation",
           "agreement", "choose_fault_targets", "fault_injection", "single_bias_attack", "TRAINING_ATTACKS",
           "MODEL_ATTACKS", "ModelAttackData"]
