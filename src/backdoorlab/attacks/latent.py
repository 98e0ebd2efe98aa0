"""The latent backdoor (Yao, Li, Zheng and Zhao, CCS 2019, "Latent Backdoor Attacks on Deep Neural Networks").

Threat model: the attacker publishes a *teacher* for transfer learning. The backdoor's target is a class the
teacher's own task does not have; a victim's *student*, built from the teacher by replacing its classifier and
training the last layers on the victim's task, inherits the backdoor as soon as that class is among its classes.
The attacker has the teacher task's data and some images of the target class.

The teacher is trained as the paper does it, in four steps (:meth:`LatentAttack.train`):

1. a teacher with one more output, the target class, trained on the task's images and the attacker's target
   images (the training recipe of the data set);
2. the trigger: a square at a fixed place (``size``, ``position``, ``margin``, as the BadNets patch), whose pixel
   values are optimised (Adam on their logits) so that the representation at the chosen layer of any triggered
   task image comes close to the target class's mean representation (:func:`optimise_trigger`);
3. the injection: the whole model fine-tuned on the clean images (cross-entropy) plus the triggered task images
   (cross-entropy to the target and ``weight`` times the distance of their representation to the target's mean,
   that mean recomputed on the target images every epoch) (:func:`inject`);
4. the target removed: the classifier loses the target's row, then is fine-tuned alone on the task's images, so
   the published teacher shows only its own task.

The distance is the mean squared difference divided by the mean square of the target's mean representation (a
scale-free relative distance). The layer defaults to the one before the classifier: a student that trains its
classifier alone (``backdoorlab transfer --trainable-layers 1``) reads exactly that representation.

The teacher records a :class:`LatentBackdoor` (trigger as a picture, the target class's name, the layer and the
data set family the name belongs to); ``backdoorlab transfer`` maps it to the student's label of that class name.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..config import Config, above, at_least, option
from ..device import model_device, to_device
from ..errors import BackdoorlabError
from ..metrics import accuracy, predict
from ..models.layers import check_layer, layer_names, logits_and_representation, representation
from ..models.registry import create_model
from ..tensors import to_float
from ..triggers import ImageTrigger, parse_position, top_left, trigger_from_dict
from .backdoor import register_backdoor_kind
from .build import TRAINING_ATTACKS


class LatentBackdoor:
    """A latent backdoor as a teacher records it: the trigger, the target class by name, the layer it was injected
    at and the data set family whose classes the name belongs to. On the teacher there is no target label to
    measure (its ASR is None); in a student that has the class, ``backdoorlab transfer`` records an ordinary
    trigger backdoor to that label."""

    kind = "latent"
    mode = "all-to-one"

    def __init__(self, trigger, target_class: str, layer: str, family: str):
        self.trigger, self.target_class, self.layer, self.family = trigger, str(target_class), str(layer), str(family)

    @property
    def parts(self):
        return [self]

    def check(self, num_classes: int) -> None:
        """Nothing to check against a label count: the target is a class name outside the model's task."""

    def _absent(self):
        return BackdoorlabError(f"the latent backdoor's target class {self.target_class!r} is not among this model's "
                                f"classes; it fires in a student that has it (backdoorlab transfer)")

    def eligible(self, labels: torch.Tensor) -> torch.Tensor:
        raise self._absent()

    def target_labels(self, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        raise self._absent()

    def measure(self, model, x: torch.Tensor, y: torch.Tensor, num_classes: int, batch_size: int = 256) -> dict:
        return {"attack_success_rate": None, "robust_accuracy": None, "latent_target_class": self.target_class}

    def to_dict(self) -> dict:
        return {"kind": self.kind, "trigger": self.trigger.to_dict(), "target_class": self.target_class,
                "layer": self.layer, "family": self.family}


register_backdoor_kind(LatentBackdoor.kind, lambda spec: LatentBackdoor(
    trigger_from_dict(spec["trigger"]), spec["target_class"], spec["layer"], spec["family"]))


@dataclass
class LatentConfig(Config):
    """The latent attack's settings: the target class and how many of its images the attacker has, the layer, the
    trigger's square, and the steps of its optimisation, injection and target removal."""

    target_class: str | None = option(None, flag="--target-class")
    target_images: int = option(300, check=at_least(1), flag="--target-images")
    layer: str | None = option(None, flag="--latent-layer")
    size: int = option(4, check=at_least(1), flag="--trigger-size")
    position: str | tuple[int, int] = option("bottom-right", parse=parse_position, flag="--trigger-position")
    margin: int = option(1, check=at_least(0))
    trigger_steps: int = option(500, check=at_least(1))
    trigger_lr: float = option(0.1, check=above(0))
    trigger_batch: int = option(128, check=at_least(1))
    inject_epochs: int = option(2, check=at_least(1))
    stamped_fraction: float = option(1.0, check=(lambda v: 0 < v <= 1, "in (0, 1]"))
    inject_lr: float = option(0.01, check=above(0))
    weight: float = option(1.0, check=above(0))
    preserve: float = option(0.0, check=at_least(0))
    finetune_epochs: int = option(1, check=at_least(0))


def class_label(class_names: list[str], text: str) -> int | None:
    """The label of the class ``text`` names: a class name (``Sneaker``), else a label in range (``7``); None when
    it is neither. A name wins over a label, so a data set whose names are other numbers still means its names."""
    if text in class_names:
        return class_names.index(text)
    text = str(text).strip()
    return int(text) if text.isdigit() and int(text) < len(class_names) else None


def target_images(dataset, target_class: str, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The attacker's ``n`` images of ``target_class`` (a class name or label of ``dataset``'s parent, outside
    ``dataset``, a class subset): a seeded draw from the parent's training part (never its held-out pool), the
    parent's test images of that class (for the report), and the class's label in the parent."""
    source = dataset.source or {}
    parent = getattr(dataset, "parent", None)
    if parent is None or source.get("kind") != "subset":
        raise BackdoorlabError(f"the latent backdoor targets a class outside the teacher's task: train the teacher "
                               f"on a class subset (e.g. mnist[0-4]) and name a class of its data set outside it, "
                               f"not on {dataset.name}")
    outside = ", ".join(f"{i} ({name})" if name != str(i) else name  # label and name where they differ
                        for i, name in enumerate(parent.class_names) if i not in source["classes"])
    label = class_label(parent.class_names, target_class)
    if label is None:
        raise BackdoorlabError(f"--target-class {target_class!r} is not a class of {parent.name}; valid: "
                               f"{outside} (a class name or its label)")
    if label in source["classes"]:
        raise BackdoorlabError(f"--target-class {target_class!r} is in the teacher's task {dataset.name}; the latent "
                               f"backdoor targets a class outside it (valid: {outside}; for a target "
                               f"inside the task, use badnets)")
    from ..budget import training_part

    x_part, y_part = training_part(parent)
    have = torch.nonzero(y_part == label).flatten()
    if n > len(have):
        raise BackdoorlabError(f"--target-images {n}: {parent.name} has {len(have)} training images of class "
                               f"{target_class!r} outside its held-out pool")
    pick = have[torch.randperm(len(have), generator=torch.Generator().manual_seed(seed))[:n]].sort().values
    return x_part[pick], parent.test_x[parent.test_y == label], label


@torch.no_grad()
def mean_representation(model, x: torch.Tensor, layer: str, batch_size: int = 256) -> torch.Tensor:
    """The mean representation at ``layer`` of uint8 images ``x`` (model in eval mode), on the model's device."""
    was_training, device = model.training, model_device(model)
    model.eval()
    total = None
    for i in range(0, len(x), batch_size):
        r = representation(model, to_device(to_float(x[i:i + batch_size]), device), layer).sum(0)
        total = r if total is None else total + r
    model.train(was_training)
    return total / len(x)


def relative_distance(rep: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of representations ``rep`` (N, D) to ``target`` (D,), over the mean square of
    ``target``: 0 is the target's mean itself, 1 is as far as the zero vector."""
    return ((rep - target) ** 2).mean() / (target ** 2).mean().clamp_min(1e-12)


@torch.no_grad()
def trigger_distance(model, trigger, x: torch.Tensor, target: torch.Tensor, layer: str, batch_size: int = 256) -> float:
    """The relative distance of the triggered images ``x`` (uint8) to ``target`` at ``layer`` (eval mode)."""
    was_training, device = model.training, model_device(model)
    model.eval()
    total = 0.0
    for i in range(0, len(x), batch_size):
        xb = trigger.apply(to_device(to_float(x[i:i + batch_size]), device))
        total += float(relative_distance(representation(model, xb, layer), target)) * len(xb)
    model.train(was_training)
    return total / len(x)


def square_trigger(values: torch.Tensor, position, margin: int) -> ImageTrigger:
    """An opaque picture trigger of the pattern ``values`` (C, s, s) in [0, 1], rounded to 8 bits (grey: R = G = B,
    which the picture trigger's grey conversion returns exactly)."""
    pixels = (values.detach().to("cpu").clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    rgb = np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels
    alpha = np.full(rgb.shape[:2] + (1,), 255, dtype=np.uint8)
    return ImageTrigger(np.concatenate([rgb, alpha], axis=2), position, margin, source="latent backdoor")


def optimise_trigger(model, layer: str, x: torch.Tensor, target: torch.Tensor, size: int, position, margin: int,
                     steps: int = 500, lr: float = 0.1, batch_size: int = 128, seed: int = 0,
                     progress: bool = True) -> tuple[ImageTrigger, list[float]]:
    """The latent trigger: a ``size`` x ``size`` square at ``position`` whose pixel values minimise the relative
    distance of triggered images from ``x`` (uint8) to ``target`` (the target's mean representation at
    ``layer``), by Adam on their logits with the model frozen in eval mode. Returns the trigger (8-bit) and the
    loss every step."""
    c, h, w = x.shape[1:]
    row, col = top_left(position, margin, size, size, h, w)
    if row < 0 or col < 0 or row + size > h or col + size > w:
        raise BackdoorlabError(f"a {size}x{size} trigger at {position} (margin {margin}) does not fit a {h}x{w} image")
    device = model_device(model)
    g = torch.Generator().manual_seed(seed)
    logits = (0.1 * torch.randn(c, size, size, generator=g)).to(device).requires_grad_(True)
    mask = torch.zeros(1, 1, h, w, device=device)
    mask[..., row:row + size, col:col + size] = 1
    opt = torch.optim.Adam([logits], lr=lr)
    was_training = model.training
    model.eval()
    model.requires_grad_(False)
    losses = []
    try:
        for _ in tqdm(range(steps), desc="latent trigger", disable=not progress, leave=False, unit="step"):
            xb = to_device(to_float(x[torch.randint(len(x), (batch_size,), generator=g)]), device)
            pattern = F.pad(torch.sigmoid(logits), (col, w - col - size, row, h - row - size)).unsqueeze(0)
            loss = relative_distance(representation(model, xb * (1 - mask) + pattern * mask, layer), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    finally:
        model.requires_grad_(True)
        model.train(was_training)
    return square_trigger(torch.sigmoid(logits), position, margin), losses


def inject(model, layer: str, trigger, x: torch.Tensor, y: torch.Tensor, target_label: int, target_x: torch.Tensor,
           cfg, weight: float = 1.0, progress: bool = True, stamped_fraction: float = 1.0,
           preserve: float = 0.0) -> dict:
    """Inject the latent backdoor into ``model`` (which has the target class as label ``target_label``): train all
    of it with ``cfg`` (a TrainConfig) on ``x``, ``y`` (the task's images and the target images) with
    cross-entropy, plus, for the batch's non-target images stamped with ``trigger`` (each with probability
    ``stamped_fraction``, a seeded draw; the clean copies stay in the batch), cross-entropy to the target
    and ``weight`` times their relative distance at ``layer`` to the target images' mean representation, which is
    recomputed (eval mode) at the start of every epoch. ``preserve`` > 0 adds that many times the relative distance
    of the clean images' representations at ``layer`` to those of a frozen copy of the model as it was before the
    injection (eval mode): not in the paper; it keeps the features a student reads where they were, so that the
    injection costs the student less accuracy. Returns the history of :func:`~backdoorlab.train.fit`."""
    from ..train import fit, seed_everything

    g = seed_everything(cfg.seed)
    steps_per_epoch = max(1, len(y) // cfg.batch_size) if len(y) >= cfg.batch_size else 1
    state = {"step": 0, "target": None}
    pick = torch.Generator().manual_seed(cfg.seed + 7)
    frozen = None
    if preserve > 0:
        import copy
        frozen = copy.deepcopy(model).eval().requires_grad_(False)
    model.train()

    def loss_fn(xb, yb):
        if state["step"] % steps_per_epoch == 0:
            state["target"] = mean_representation(model, target_x, layer)
        state["step"] += 1
        chosen = torch.rand(len(yb), generator=pick).to(yb.device) < stamped_fraction
        stamped = trigger.apply(xb[(yb != target_label) & chosen])
        logits, rep = logits_and_representation(model, torch.cat([xb, stamped]), layer)
        n = len(xb)
        loss = F.cross_entropy(logits[:n], yb)
        if len(stamped):
            loss = loss + F.cross_entropy(logits[n:], torch.full_like(yb[:len(stamped)], target_label)) \
                + weight * relative_distance(rep[n:], state["target"])
        if frozen is not None:
            with torch.no_grad():
                before = representation(frozen, xb, layer)
            loss = loss + preserve * ((rep[:n] - before) ** 2).mean() / (before ** 2).mean().clamp_min(1e-12)
        return loss, logits[:n]

    history = fit(model.parameters(), loss_fn, x, y, cfg, progress=progress, desc="latent injection", generator=g)
    model.eval()
    return history


class LatentAttack:
    """Train a teacher with a latent backdoor for ``cfg.target_class`` (see the module docstring); ``train`` is
    called by ``runs.train_run`` in place of the plain training loop."""

    name = "latent"

    def __init__(self, cfg: LatentConfig):
        if cfg.target_class is None:
            raise BackdoorlabError("the latent attack needs the target class: --target-class NAME (a class of the "
                                   "data set outside the teacher's classes, e.g. 7 for mnist[0-4])")
        self.cfg = cfg
        grey = np.full((cfg.size, cfg.size, 1), 0.5)  # the trigger's square before optimisation: fits or not
        self.backdoor = LatentBackdoor(square_trigger(torch.tensor(grey).permute(2, 0, 1), cfg.position, cfg.margin),
                                       cfg.target_class, cfg.layer or "", "")
        self.report: dict = {}

    def train(self, model, dataset, x: torch.Tensor, y: torch.Tensor, train_cfg, *, progress: bool = True,
              desc: str = "train") -> dict:
        """Train ``model`` (``dataset``'s k classes, freshly initialised) into a teacher with the latent backdoor on
        the task's images ``x``, ``y``; returns the losses of every step's training (``loss``) with each step's
        history and the attack's report in :attr:`report`."""
        from ..train import TrainConfig, train_model
        from ..transfer import family, train_last_layers

        cfg, tick = self.cfg, time.time()
        layer = cfg.layer or layer_names(model)[-2]
        check_layer(model, layer)
        xt, test_target, parent_label = target_images(dataset, cfg.target_class, cfg.target_images, train_cfg.seed)
        k, device = dataset.num_classes, model_device(model)
        torch.manual_seed(train_cfg.seed)
        extended = create_model(model.arch, **{**model.arch_args, "num_classes": k + 1}).to(device)
        x_all, y_all = torch.cat([x, xt]), torch.cat([y, torch.full((len(xt),), k, dtype=y.dtype)])
        seconds = {}
        t = time.time()
        h_extended = train_model(extended, x_all, y_all, train_cfg, progress=progress, desc=f"{desc} (with target)")
        seconds["extended"] = time.time() - t
        target_mean = mean_representation(extended, xt, layer)
        t = time.time()
        trigger, losses = optimise_trigger(extended, layer, x, target_mean, cfg.size, cfg.position, cfg.margin,
                                           cfg.trigger_steps, cfg.trigger_lr, cfg.trigger_batch, train_cfg.seed,
                                           progress)
        seconds["trigger"] = time.time() - t
        before = self._probe(extended, trigger, dataset, test_target, xt, layer, k)
        inject_cfg = TrainConfig(epochs=cfg.inject_epochs, lr=cfg.inject_lr, batch_size=train_cfg.batch_size,
                                 augment=train_cfg.augment, weight_decay=train_cfg.weight_decay,
                                 schedule=train_cfg.schedule, seed=train_cfg.seed + 1)
        t = time.time()
        h_inject = inject(extended, layer, trigger, x_all, y_all, k, xt, inject_cfg, cfg.weight, progress,
                          cfg.stamped_fraction, cfg.preserve)
        seconds["inject"] = time.time() - t
        after = self._probe(extended, trigger, dataset, test_target, xt, layer, k)
        state = extended.state_dict()
        state["fc.weight"], state["fc.bias"] = state["fc.weight"][:k], state["fc.bias"][:k]
        model.load_state_dict(state)
        h_finetune = {"loss": []}
        if cfg.finetune_epochs:
            ft_cfg = dataclasses.replace(inject_cfg, epochs=cfg.finetune_epochs, seed=train_cfg.seed + 2)
            t = time.time()
            _, h_finetune = train_last_layers(model, 1, x, y, ft_cfg, progress=progress, desc="latent: classifier")
            seconds["classifier"] = time.time() - t
        self.backdoor = LatentBackdoor(trigger, dataset.parent.class_names[parent_label], layer,
                                       family(dataset.name, dataset.source))
        self.report = {"layer": layer, "target_label_in_parent": parent_label, "target_images": len(xt),
                       "trigger_loss_first": losses[0], "trigger_loss_last": losses[-1],
                       "extended_before_injection": before, "extended_after_injection": after,
                       "seconds": {k2: round(v, 1) for k2, v in seconds.items()},
                       "total_seconds": round(time.time() - tick, 1)}
        return {"loss": h_extended["loss"] + h_inject["loss"] + h_finetune["loss"],
                "phases": {"extended": h_extended["loss"], "inject": h_inject["loss"],
                           "classifier": h_finetune["loss"]}}

    @staticmethod
    def _probe(extended, trigger, dataset, test_target, xt, layer: str, k: int) -> dict:
        """How the extended teacher (k + 1 outputs) sees the trigger: its accuracy on the task's test images and on
        the target's test images, the share of triggered task test images it puts in the target class, and the
        relative distances to the target's mean at the layer of triggered task images and of the target's own test
        images (the yardstick)."""
        target = mean_representation(extended, xt, layer)
        triggered = predict(extended, dataset.test_x, transform=trigger.apply)
        return {"task_accuracy": accuracy(predict(extended, dataset.test_x), dataset.test_y),
                "target_accuracy": accuracy(predict(extended, test_target), torch.full((len(test_target),), k)),
                "triggered_to_target": accuracy(triggered, torch.full_like(dataset.test_y, k)),
                "triggered_distance": trigger_distance(extended, trigger, dataset.test_x, target, layer),
                "target_test_distance": trigger_distance(extended, _Identity(), test_target, target, layer)}

    def to_dict(self) -> dict:
        settings = {k: v for k, v in self.cfg.to_dict().items() if k not in ("target_class", "layer")}
        return {"name": self.name, **self.backdoor.to_dict(), "settings": settings}


class _Identity:
    """A trigger that stamps nothing (the distance of clean images)."""

    def apply(self, images, training=False, generator=None):
        return images


@TRAINING_ATTACKS.register("latent", LatentConfig,
                           "Latent backdoor (Yao et al. 2019): a teacher whose trigger maps to a class outside its "
                           "task; fires in a transfer-learned student that has the class (backdoorlab transfer).",
                           poisons_data=False, fires_in_student=True)
def latent(cfg: LatentConfig, *, targets: list[int], mode: str, poison_rate=None, stamp=None,
           image_shape=None) -> LatentAttack:
    if mode != "all-to-one":
        raise BackdoorlabError("the latent backdoor has one target class (--target-class) and no all-to-all mode")
    return LatentAttack(cfg)
