"""Attacks: data poisoning (transform a training set), training-time attacks (the triggerless backdoor) and
model attacks (transform trained weights).

Importing the package registers every training-time attack in ``TRAINING_ATTACKS``, in the order
``backdoorlab list`` shows them (each module registers its own), and every model attack in ``MODEL_ATTACKS``
(``model_attacks.py``).
"""

# the training-time attacks' modules, which register them, in listing order
from . import badnets, blended, dynamic, triggerless  # noqa: F401
from .backdoor import Backdoor, MultiBackdoor, backdoor_from_dict
from .build import TRAINING_ATTACKS, build_attack, make_poisoning_attack
from .model_attacks import MODEL_ATTACKS, ModelAttackData
from .poison import BadNets, PoisonedData, PoisoningAttack
from .triggerless import TriggerlessAttack, TriggerlessBackdoor
from .weights import (FaultBackdoor, FaultInjectionConfig, WeightPerturbationConfig, adversarial_weight_perturbation,
                      agreement, choose_fault_targets, fault_injection, single_bias_attack)

POISONING_ATTACKS = tuple(TRAINING_ATTACKS.names(poisons_data=True))

__all__ = ["Backdoor", "MultiBackdoor", "backdoor_from_dict", "BadNets", "PoisonedData", "PoisoningAttack",
           "POISONING_ATTACKS", "make_poisoning_attack", "build_attack", "TriggerlessAttack", "TriggerlessBackdoor",
           "FaultBackdoor", "FaultInjectionConfig", "WeightPerturbationConfig", "adversarial_weight_perturbation",
           "agreement", "choose_fault_targets", "fault_injection", "single_bias_attack", "TRAINING_ATTACKS",
           "MODEL_ATTACKS", "ModelAttackData"]
