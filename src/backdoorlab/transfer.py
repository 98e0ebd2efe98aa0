"""Transfer learning, as a victim does it with a downloaded teacher: the teacher's layers kept, a new classifier
for the student's classes, every layer but the last K frozen (``models.layers`` says what a layer is), the rest
trained on the student's data. And what the teacher's planted backdoor becomes in the student
(:func:`student_backdoor`), so that the student's sidecar records a backdoor that ``evaluate``, ``scan`` and
``sanitize`` measure without being told the trigger.

Frozen means bit for bit: the frozen layers' parameters get no gradient and their modules stay in eval mode, so
their batch-norm statistics are the teacher's too.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

from .attacks.any_target import AnyTargetBackdoor
from .attacks.backdoor import Backdoor, backdoor_from_dict
from .errors import BackdoorlabError
from .models.layers import freeze_all_but, layer_names
from .models.registry import create_model
from .models.sidecar import planted_attack
from .tensors import model_channels_last
from .triggers import trigger_from_dict
from .train import TrainConfig, fit, seed_everything


def student_model(teacher: torch.nn.Module, num_classes: int, seed: int = 0) -> torch.nn.Module:
    """A copy of ``teacher`` (a built-in architecture) with a new classifier for ``num_classes`` classes, drawn after
    seeding torch with ``seed``; every other weight and buffer (the input normalisation included) is the
    teacher's."""
    layer_names(teacher)  # an architecture without layers: one line, before anything is built
    torch.manual_seed(seed)
    student = create_model(teacher.arch, **{**teacher.arch_args, "num_classes": num_classes})
    kept = {k: v for k, v in teacher.state_dict().items() if not k.startswith("fc.")}
    missing, unexpected = student.load_state_dict(kept, strict=False)
    if unexpected or any(not k.startswith("fc.") for k in missing):
        raise BackdoorlabError(f"the teacher's weights do not fit a {teacher.arch} student: missing {missing}, "
                               f"unexpected {unexpected}")
    return student.to(next(teacher.parameters()).device)


def train_last_layers(model: torch.nn.Module, k: int, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, *,
                      progress: bool = True, desc: str = "transfer") -> tuple[list[str], dict]:
    """Train the last ``k`` layers of ``model`` in place with cross-entropy on uint8 images ``x`` and labels ``y``,
    the other layers frozen (no gradient, eval mode). Returns the trained layers' names and the history of
    :func:`~backdoorlab.train.fit`."""
    trainable, frozen = freeze_all_but(model, k)
    g = seed_everything(cfg.seed)
    if cfg.channels_last:
        model_channels_last(model)
    model.train()
    for m in frozen:
        m.eval()

    def loss_fn(xb, yb):
        logits = model(xb)
        return F.cross_entropy(logits, yb), logits

    params = [p for p in model.parameters() if p.requires_grad]
    try:
        history = fit(params, loss_fn, x, y, cfg, progress=progress, desc=desc, generator=g)
    finally:
        model.requires_grad_(True)
        model.to(memory_format=torch.contiguous_format)
        model.eval()
    return trainable, history


def family(dataset_name: str, source: Mapping | None) -> str:
    """The data set whose classes a model's labels name: a class subset's base (its source's ``of``), else the
    data set itself. Class names are matched only within one family (a ``7`` of MNIST is not a ``7`` of a user's
    folder)."""
    if source and source.get("kind") == "subset":
        return str(source["of"])
    return dataset_name


def student_backdoor(teacher_meta: Mapping, student) -> tuple[dict | None, str]:
    """What the backdoor the teacher records becomes in a student for data set ``student``: ``(attack dict for the
    student's provenance, or None; one sentence saying how it was mapped)``.

    - a latent backdoor fires for its target class: a trigger backdoor to the student's label of that class name
      when the student's family has it, else none (the target is not among the student's classes);
    - an all-to-one trigger backdoor (BadNets, blended) keeps its target class by name when the student has it;
      when it does not, the trigger is measured as the largest share of triggered images any one class receives
      (:class:`~backdoorlab.attacks.any_target.AnyTargetBackdoor`): the best an attacker could pick afterwards;
    - anything else (all-to-all, several targets, triggerless, a weight fault) is not carried over."""
    attack = planted_attack(teacher_meta)
    if attack is None:
        return None, "the teacher records no backdoor"
    backdoor_from_dict(attack)  # a malformed record: one line here
    kind = attack.get("kind", "trigger")
    names = list(student.class_names)
    same_family = family(teacher_meta["dataset"], teacher_meta.get("data_source")) == family(student.name,
                                                                                            student.source)
    if kind == "latent":
        target = attack["target_class"]
        if attack.get("family") != family(student.name, student.source) or target not in names:
            return None, (f"latent backdoor for class {target!r} of {attack.get('family')}: not among the student's "
                          f"classes ({', '.join(names)}), so it stays latent")
        mapped = Backdoor(trigger_from_dict(attack["trigger"]), "all-to-one", names.index(target))
        return ({"name": "latent", **mapped.to_dict(), "target_class": target},
                f"latent backdoor for class {target!r}: the student's label {names.index(target)}")
    if kind == "trigger" and attack.get("mode", "all-to-one") == "all-to-one":
        teacher_names = teacher_meta.get("class_names") or []
        t = int(attack.get("target", 0))
        target = teacher_names[t] if t < len(teacher_names) else str(t)
        name = attack.get("name", "trigger")
        if same_family and target in names:
            mapped = Backdoor(backdoor_from_dict(attack).trigger, "all-to-one", names.index(target))
            return ({"name": name, **mapped.to_dict(), "target_class": target},
                    f"{name} backdoor for class {target!r}: the student's label {names.index(target)}")
        orphan = AnyTargetBackdoor(backdoor_from_dict(attack).trigger)
        return ({"name": name, **orphan.to_dict(), "teacher_target_class": target},
                f"{name} backdoor for class {target!r}, which the student does not have: its ASR is the largest "
                f"share of triggered test images sent to any one student class")
    return None, f"a {attack.get('name', kind)} backdoor ({kind}, {attack.get('mode', 'all-to-one')}) is not carried " \
                 f"into a student"
