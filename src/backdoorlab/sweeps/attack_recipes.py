"""A sweep's attack options (as `backdoorlab train` and `backdoorlab attack` name them) turned into what those
commands build: the attack to plant by training, or the keyword arguments of an attack on a model's weights."""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import BackdoorlabError


def flag_keys(config) -> dict[str, str]:
    """``{option key: config field}`` of a config's own flags: ``--trigger-size`` is the key ``trigger_size``
    for the field ``size``."""
    return {flag[2:].replace("-", "_"): field for flag, field in config.flags().items()}


def model_attack_settings(entry) -> dict[str, str]:
    """The settings keys of a model attack (``epsilon``, ``steps``, ...) by field; its seed is the sweep's."""
    return {key: field for key, field in flag_keys(entry.config).items() if key != "seed"}


def training_attack(name: str, options: Mapping, dataset=None):
    """The attack ``backdoorlab train --attack NAME`` with these options would plant, checked against
    ``dataset`` (its labels and image size) when given."""
    from ..attacks import TRAINING_ATTACKS, build_attack
    entry = TRAINING_ATTACKS.entry(name)
    fields = flag_keys(entry.config)
    mode = "all-to-all" if options.get("all_to_all") else "all-to-one"
    extra = {fields[k]: v for k, v in options.items() if k in fields}
    if entry.traits["poisons_data"]:
        extra.update(poison_rate=options.get("poison_rate"), stamp=options.get("stamp"))
    shape = dict(image_shape=(dataset.in_channels, *dataset.image_size), num_classes=dataset.num_classes) \
        if dataset is not None else {}
    return build_attack(name, target=options.get("target", 0), mode=mode, **extra, **shape)


def model_attack_options(name: str, options: Mapping, seed: int, dataset=None) -> dict:
    """The keyword arguments of :func:`~backdoorlab.runs.model_attack_run` that ``backdoorlab attack NAME``
    with these options and ``--seed seed`` passes (its trigger checked against ``dataset`` when given)."""
    from ..attacks import MODEL_ATTACKS
    entry = MODEL_ATTACKS.entry(name)
    settings = model_attack_settings(entry)
    kwargs: dict[str, Any] = {}
    if entry.traits["trigger"]:
        trigger = {k: v for k, v in options.items() if k not in ("trigger", "images", "attacker_images", *settings)}
        kwargs["backdoor"] = training_attack(options.get("trigger", "badnets"), trigger, dataset).backdoor
    else:
        target = options.get("target")
        if target is not None and (not isinstance(target, int) or isinstance(target, bool)):
            raise BackdoorlabError(f"fault attacks take one target label, got {target!r}")
        kwargs.update(target=target, n_images=options.get("images", 5))
    chosen = {field: options[key] for key, field in settings.items() if key in options}
    kwargs[entry.traits["settings"]] = entry.config.from_dict({**chosen, "seed": seed}, owner=name)
    if "attacker_images" in options:
        kwargs["attacker_images"] = options["attacker_images"]
    return kwargs
