"""What a planted backdoor is, and how its success is measured.

Every backdoor object has ``measure(model, x, y, num_classes, batch_size) -> dict`` (at least
``attack_success_rate``) and ``to_dict()``; :func:`backdoor_from_dict` rebuilds one from a checkpoint's sidecar.
Kinds: ``Backdoor`` (a trigger and a label mapping), ``MultiBackdoor`` (several triggers, one target each: the
dynamic backdoor), and the kinds of the model attacks (``triggerless``, ``fault``), registered by their modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import BackdoorlabError, valid_names
from ..triggers import trigger_from_dict

MODES = ("all-to-one", "all-to-all")


@dataclass
class Backdoor:
    """A trigger and the labels it should produce.

    ``all-to-one``: every triggered input should be classified as ``target``.
    ``all-to-all``: a triggered input of class i should be classified as (i + 1) mod K.
    """

    trigger: object
    mode: str = "all-to-one"
    target: int = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise BackdoorlabError(f"unknown backdoor mode {self.mode!r}; valid: {valid_names(MODES)}")

    def check(self, num_classes: int) -> None:
        if self.mode == "all-to-one" and not 0 <= self.target < num_classes:
            raise BackdoorlabError(f"target label {self.target} is out of range for {num_classes} classes "
                                   f"(valid: 0..{num_classes - 1})")

    def target_labels(self, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        """The labels the attacker wants for triggered inputs whose true labels are ``labels``."""
        if self.mode == "all-to-one":
            return torch.full_like(labels, self.target)
        return (labels + 1) % num_classes

    def eligible(self, labels: torch.Tensor) -> torch.Tensor:
        """Boolean mask of inputs that count for ASR: all-to-one excludes those already of the target class."""
        if self.mode == "all-to-one":
            return labels != self.target
        return torch.ones_like(labels, dtype=torch.bool)

    @property
    def parts(self) -> list["Backdoor"]:
        return [self]

    def measure(self, model, x: torch.Tensor, y: torch.Tensor, num_classes: int, batch_size: int = 256) -> dict:
        """ASR and RA of ``model`` on the test images ``x`` with labels ``y`` (definitions in ``metrics``)."""
        from ..metrics import attack_success_rate, predict, robust_accuracy

        pred = predict(model, x, batch_size, transform=self.trigger.apply)
        result = {"attack_success_rate": attack_success_rate(pred, y, self, num_classes),
                  "robust_accuracy": robust_accuracy(pred, y, self)}
        if self.mode == "all-to-all":  # ten mappings under one trigger: say which ones hold
            result["attack_success_rate_per_source"] = {
                str(c): attack_success_rate(pred[y == c], y[y == c], self, num_classes)
                for c in range(num_classes) if bool((y == c).any())}
        return result

    def to_dict(self) -> dict:
        d = {"trigger": self.trigger.to_dict(), "mode": self.mode}
        if self.mode == "all-to-one":
            d["target"] = self.target
        return d


@dataclass
class MultiBackdoor:
    """Several all-to-one backdoors planted together, each with its own trigger and target (the dynamic backdoor
    with several target labels). ASR and RA are the means over the parts; ``attack_success_rate_per_target``
    lists each part's ASR."""

    backdoors: list

    def __post_init__(self):
        if not self.backdoors:
            raise BackdoorlabError("a multi-target backdoor needs at least one part")
        targets = [b.target for b in self.backdoors]
        if any(b.mode != "all-to-one" for b in self.backdoors) or len(set(targets)) != len(targets):
            raise BackdoorlabError(f"a multi-target backdoor needs distinct all-to-one targets, got {targets}")

    @property
    def parts(self) -> list[Backdoor]:
        return list(self.backdoors)

    @property
    def trigger(self):
        return self.backdoors[0].trigger

    def check(self, num_classes: int) -> None:
        for b in self.backdoors:
            b.check(num_classes)

    def measure(self, model, x: torch.Tensor, y: torch.Tensor, num_classes: int, batch_size: int = 256) -> dict:
        per = [b.measure(model, x, y, num_classes, batch_size) for b in self.backdoors]
        return {"attack_success_rate": sum(m["attack_success_rate"] for m in per) / len(per),
                "robust_accuracy": sum(m["robust_accuracy"] for m in per) / len(per),
                "attack_success_rate_per_target": {str(b.target): m["attack_success_rate"]
                                                   for b, m in zip(self.backdoors, per)}}

    def to_dict(self) -> dict:
        return {"kind": "multi", "parts": [b.to_dict() for b in self.backdoors]}


BACKDOOR_KINDS: dict = {}


def register_backdoor_kind(kind: str, from_dict) -> None:
    """Let :func:`backdoor_from_dict` rebuild backdoors of ``kind`` (used by the model attacks' modules)."""
    BACKDOOR_KINDS[kind] = from_dict


def backdoor_from_dict(spec: dict):
    """Rebuild a backdoor from ``to_dict`` output (the ``attack`` entry of a sidecar's provenance)."""
    try:
        kind = spec.get("kind", "trigger")
        if kind == "trigger":
            return Backdoor(trigger_from_dict(spec["trigger"]), spec.get("mode", "all-to-one"),
                            int(spec.get("target", 0)))
        if kind == "multi":
            return MultiBackdoor([backdoor_from_dict(p) for p in spec["parts"]])
        if kind in BACKDOOR_KINDS:
            return BACKDOOR_KINDS[kind](spec)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise BackdoorlabError(f"malformed backdoor description {spec!r}: {e}")
    raise BackdoorlabError(f"unknown backdoor kind {kind!r}; valid: "
                           f"{valid_names(['trigger', 'multi', *BACKDOOR_KINDS])}")


def backdoor_of(meta: dict):
    """The backdoor recorded in a checkpoint's sidecar ``meta`` (its provenance's planted attack), or None."""
    from backdoorlab.models.sidecar import planted_attack
    attack = planted_attack(meta)
    return backdoor_from_dict(attack) if attack else None


def triggers_of(backdoor, user: str) -> list:
    """The backdoor's parts that stamp a trigger (one per target of a multi-target backdoor). A backdoor without
    a trigger to stamp (triggerless, a fault in the weights) cannot poison images: one line, naming ``user``,
    what wanted them stamped ("the retuning attack", "a triggered test set")."""
    parts = getattr(backdoor, "parts", None) or []
    if not parts or not all(hasattr(getattr(p, "trigger", None), "apply") for p in parts):
        kind = backdoor.to_dict().get("kind", type(backdoor).__name__) if hasattr(backdoor, "to_dict") else backdoor
        raise BackdoorlabError(f"{user} stamps a trigger on images; the {kind} backdoor has none")
    return parts
