"""The checkpoint sidecar's schema: the fields of ``model.json`` that backdoorlab's writers put there, built in
one place, and the accessors its readers use.

:mod:`backdoorlab.models.checkpoint` stores whatever JSON metadata it is given (and adds its own ``format``,
``created``, ``weights_sha256`` ...); this module says what that metadata is. Every writer (training, the evasion
defenses' training, sanitize and its scratch second endpoint, repair, model attacks) builds it with
:func:`build_sidecar` (or :func:`derived_sidecar` for a model made by changing another checkpoint's weights), so
the field names, their order and their types live here rather than in six hand-written dict literals; every
reader asks :func:`holdout_size`, :func:`provenance`, :func:`planted_attack` or :func:`training` instead of
repeating ``(meta.get("holdout") or {}).get("size", ...)``, and a malformed field gives one line instead of an
``AttributeError``.

The fields, in the order written (:data:`FIELDS`):

- ``arch``, ``arch_args``, ``dataset``: what :func:`~backdoorlab.models.create_model` and the loader need;
- ``class_names``, ``input_shape``: the data set's label names and (C, H, W);
- ``data_source``: for a model trained on a user's images (``folder:PATH``, ``npz:PATH``), where and how they were
  read (the data set's ``source``: kind, path, image size, the train/test split it made, image counts); absent
  for the built-in sets, whose sidecars stay as they were;
- ``seed``: the seed of the run that made the weights;
- ``training``: the training configuration, the number of training images, seconds and final loss
  (:func:`training_record`; models trained from scratch only);
- ``holdout``: ``{"size", "split_seed"}``, the held-out clean pool that budgets are drawn from
  (:func:`holdout_record`);
- ``provenance``: where the weights came from: ``attack`` (the planted backdoor, or None) and, depending on the
  writer, ``poisoned`` / ``poison_seed``, ``evasion_defense``, ``sanitized``, ``repaired``, ``second_endpoint``,
  ``attacked_from`` / ``original_provenance`` / ``report``;
- ``metrics``: the test-set metrics of the saved model.

The sidecar is plain JSON read with ``json.loads``: nothing in it is ever executed or unpickled.
"""

from __future__ import annotations

from typing import Any, Mapping

from backdoorlab.budget import SPLIT_SEED, default_holdout
from backdoorlab.errors import BackdoorlabError

FIELDS = ("arch", "arch_args", "dataset", "class_names", "input_shape", "data_source", "seed", "training",
          "holdout", "provenance", "metrics")
# The scratch second endpoint that sanitize saves has always written its held-out pool before its seed; kept, so
# that its model.json stays byte-for-byte what earlier versions wrote.
SECOND_ENDPOINT_ORDER = ("arch", "arch_args", "dataset", "class_names", "input_shape", "data_source", "holdout",
                         "seed", "training", "provenance", "metrics")

_UNSET: Any = object()
# field -> (accepted types, what to call them in an error); None is accepted for every optional field, since
# a sidecar copied from an older or hand-made checkpoint may lack it.
_TYPES = {
    "arch": ((str,), "a string"),
    "arch_args": ((dict,), "an object"),
    "dataset": ((str,), "a string"),
    "class_names": ((list, tuple, type(None)), "a list"),
    "input_shape": ((list, tuple, type(None)), "a list"),
    "data_source": ((dict, type(None)), "an object"),
    "seed": ((int, type(None)), "an integer"),
    "training": ((dict, type(None)), "an object"),
    "holdout": ((dict, type(None)), "an object"),
    "provenance": ((dict, type(None)), "an object"),
    "metrics": ((dict, type(None)), "an object"),
}


def _check(name: str, value: Any) -> None:
    types, what = _TYPES[name]
    if not isinstance(value, types) or (name == "seed" and isinstance(value, bool)):
        raise BackdoorlabError(f"checkpoint sidecar field {name!r} must be {what}, got {type(value).__name__}")


def build_sidecar(arch: str, arch_args: dict, dataset: str, *, class_names=_UNSET, input_shape=_UNSET,
                  data_source=_UNSET, seed=_UNSET, training=_UNSET, holdout=_UNSET, provenance=_UNSET, metrics=_UNSET,
                  order: tuple[str, ...] = FIELDS) -> dict:
    """The metadata dict a writer hands to :func:`~backdoorlab.models.save_checkpoint`.

    Fields left out are not written (a sanitized model has no ``training``); the others are checked for their
    JSON type and written in ``order`` (:data:`FIELDS`, or :data:`SECOND_ENDPOINT_ORDER` for the one writer that
    has always put ``holdout`` before ``seed``). Raises BackdoorlabError (one line) on a wrong type."""
    if sorted(order) != sorted(FIELDS):
        raise BackdoorlabError(f"sidecar field order must name each of {', '.join(FIELDS)} once")
    given = dict(arch=arch, arch_args=arch_args, dataset=dataset, class_names=class_names, input_shape=input_shape,
                 data_source=data_source, seed=seed, training=training, holdout=holdout, provenance=provenance, metrics=metrics)
    meta = {}
    for name in order:
        value = given[name]
        if value is _UNSET:
            continue
        _check(name, value)
        meta[name] = list(value) if isinstance(value, tuple) else value
    return meta


def derived_sidecar(meta: Mapping, **updates) -> dict:
    """The sidecar of a model made by changing the weights of the checkpoint whose sidecar is ``meta`` (a model
    attack): ``meta``'s fields in their order with ``updates`` (schema fields only, type-checked) replacing
    theirs, new ones appended in the order given. The loader's own fields (``format``, ``created``, ...) may stay
    in ``meta``: ``save_checkpoint`` writes its own."""
    unknown = [k for k in updates if k not in _TYPES]
    if unknown:
        raise BackdoorlabError(f"unknown checkpoint sidecar field(s) {', '.join(map(repr, unknown))}; "
                               f"valid: {', '.join(FIELDS)}")
    for name, value in updates.items():
        _check(name, value)
    return {**meta, **updates}


def dataset_fields(dataset) -> dict:
    """``class_names`` and ``input_shape`` of a loaded data set, and its ``data_source`` when it has a source (a
    user's images), as :func:`build_sidecar` keyword arguments."""
    fields = {"class_names": list(dataset.class_names), "input_shape": [dataset.in_channels, *dataset.image_size]}
    source = getattr(dataset, "source", None)
    return fields if source is None else {**fields, "data_source": source}


def inherited_fields(meta: Mapping) -> dict:
    """``class_names``, ``input_shape`` and ``holdout`` (and ``data_source`` where it has one) copied from a
    suspect's sidecar, as :func:`build_sidecar` keyword arguments: a sanitized or repaired model keeps its
    suspect's labels, data and held-out pool."""
    fields = {"class_names": meta.get("class_names"), "input_shape": meta.get("input_shape"),
              "holdout": meta.get("holdout")}
    return fields if meta.get("data_source") is None else {**fields, "data_source": meta["data_source"]}


def holdout_record(size: int) -> dict:
    """The ``holdout`` field: the held-out pool's size and the seed of the split that drew it."""
    return {"size": size, "split_seed": SPLIT_SEED}


def training_record(cfg, train_images: int, seconds: float, history: Mapping) -> dict:
    """The ``training`` field: ``cfg``'s settings (a TrainConfig), the number of training images, the wall time
    (seconds, rounded to 0.1) and the last recorded loss (None when training recorded none)."""
    losses = history.get("loss") or []
    return {**cfg.to_dict(), "train_images": train_images, "seconds": round(seconds, 1),
            "final_loss": losses[-1] if losses else None}


def _object(meta: Mapping, name: str) -> dict:
    value = meta.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BackdoorlabError(f"checkpoint sidecar field {name!r} must be an object, got {type(value).__name__}")
    return value


def holdout_size(meta: Mapping, dataset_name: str | None = None) -> int | None:
    """The size of the held-out pool a checkpoint was trained without (its ``holdout.size``); for a sidecar that
    records none, :func:`~backdoorlab.budget.default_holdout` of ``dataset_name`` (None without a name: the
    budget functions then use the default themselves). Clean budgets must come from this pool, never from the
    images the model was trained on."""
    holdout = _object(meta, "holdout")
    if "size" not in holdout or holdout["size"] is None:
        return default_holdout(dataset_name) if dataset_name is not None else None
    size = holdout["size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BackdoorlabError(f"checkpoint sidecar 'holdout.size' must be a non-negative integer, got {size!r}")
    return size


def provenance(meta: Mapping) -> dict:
    """The ``provenance`` field (an empty dict when absent): where the weights came from."""
    return _object(meta, "provenance")


def planted_attack(meta: Mapping) -> dict | None:
    """The backdoor a checkpoint records as planted (``provenance.attack``, as ``Backdoor.to_dict`` wrote it
    plus the attack's settings), or None for a clean model or a sidecar without provenance."""
    attack = provenance(meta).get("attack")
    if attack is not None and not isinstance(attack, dict):
        raise BackdoorlabError(f"checkpoint sidecar 'provenance.attack' must be an object, got "
                               f"{type(attack).__name__}")
    return attack or None


def training(meta: Mapping) -> dict:
    """The ``training`` field (an empty dict when absent, as for sanitized or repaired models)."""
    return _object(meta, "training")
