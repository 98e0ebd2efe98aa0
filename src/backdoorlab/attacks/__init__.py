"""Attacks: data poisoning (transform a training set) and model attacks (transform trained weights)."""

from .backdoor import Backdoor, backdoor_from_dict
from .poison import BadNets, PoisonedData, POISONING_ATTACKS, make_poisoning_attack

__all__ = ["Backdoor", "backdoor_from_dict", "BadNets", "PoisonedData", "POISONING_ATTACKS",
           "make_poisoning_attack"]
