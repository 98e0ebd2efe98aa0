"""A sweep's configuration: the TOML grid of data sets, architectures, attacks, defenses, detectors, budgets and
seeds, read and checked in full before any work starts.

Every name, key and value is checked here, triggers and target labels against the data sets' images and
classes, and an error names the file, the line and the key (``sweep.toml:12: [defenses.anp]: unknown option
'foo'; valid: ...``). What only a run finds out (a budget too small for an option such as Neural Cleanse's
batch) fails the cell that meets it, alone, with the same one-line message the CLI prints.

The format (``docs/sweeps.md`` has the whole reference)::

    [sweep]
    name = "smoke"
    datasets = ["digits"]
    archs = ["small-cnn"]
    seeds = [1]
    budgets = [200]

    [train]                 # the training recipe, over the data set's defaults (epochs, lr, ...)
    epochs = 10

    [attacks.badnets]       # a suspect: its label, then `backdoorlab train` options (attack = the label)
    target = 0
    [attacks.clean]         # a clean model of the same recipe, scored against another row's trigger
    attack = "none"
    score_with = "badnets"

    [defenses.finetune]     # a defense: its label, then `backdoorlab repair -o` options (defense = the label)
    [defenses.sanitizer-two]
    defense = "mode-connectivity"
    suspects = 2            # with a second suspect of the same recipe and seed + 1

    [detectors.scan]        # neural-cleanse + STRIP (`backdoorlab scan`)
    [detectors.activation-clustering]
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import sys
from typing import Any, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from ..errors import BackdoorlabError, valid_names
from .attack_recipes import flag_keys, model_attack_options, model_attack_settings, training_attack

SECTIONS = ("sweep", "train", "attacks", "defenses", "detectors", "retune")
SWEEP_KEYS = ("name", "datasets", "archs", "seeds", "budgets", "budget_seed")
TRAIN_KEYS = ("epochs", "lr", "batch_size", "augment", "schedule", "weight_decay")
# options of a data-poisoning attack besides its trigger's, as `backdoorlab train` names them
POISON_KEYS = ("target", "all_to_all", "poison_rate", "stamp")
# options of an attack on a trained model's weights besides its settings and its trigger's (`backdoorlab attack`)
MODEL_ATTACK_KEYS = ("trigger", "target", "all_to_all", "images", "attacker_images")
DETECTORS = ("scan", "activation-clustering", "spectral-signatures")
RETUNE_KEYS = ("poison_images", "clean_images", "epochs", "steps", "lr", "seed")


@dataclasses.dataclass(frozen=True)
class AttackSpec:
    """One suspect recipe: ``name`` is the registered attack ("none": a clean model), ``kind`` how it is made
    (``clean``, ``training``: planted by training, ``model``: by changing a clean model's weights)."""

    label: str
    name: str
    kind: str
    options: Mapping[str, Any]
    score_with: str | None = None  # clean rows: the label whose backdoor measures their ASR


@dataclasses.dataclass(frozen=True)
class DefenseSpec:
    """One defense column: registered repairer ``name`` with ``options`` over its defaults, on one suspect or two
    (the second of the same recipe and seed + 1)."""

    label: str
    name: str
    options: Mapping[str, Any]
    suspects: int = 1


@dataclasses.dataclass(frozen=True)
class DetectorSpec:
    """One detector column: ``scan`` (Neural Cleanse and STRIP) or a training-set detector."""

    label: str
    name: str
    options: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """The whole grid, checked."""

    name: str
    path: str
    text: str
    datasets: tuple[str, ...]
    archs: tuple[str, ...]
    seeds: tuple[int, ...]
    budgets: tuple[int, ...]
    budget_seed: int
    train: Mapping[str, Any]
    attacks: tuple[AttackSpec, ...]
    defenses: tuple[DefenseSpec, ...]
    detectors: tuple[DetectorSpec, ...]
    retune: Mapping[str, Any] | None  # None: no post-retune ASR


class _Lines:
    """Where each table and key of a TOML text is, for error messages (tomllib keeps no positions)."""

    HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
    KEY = re.compile(r"^\s*(\"[^\"]*\"|'[^']*'|[A-Za-z0-9_-]+)\s*=")

    def __init__(self, path: str, text: str):
        self.path = path
        self.tables: dict[tuple, int] = {}
        self.keys: dict[tuple, int] = {}
        table: tuple = ()
        for number, line in enumerate(text.splitlines(), start=1):
            header = self.HEADER.match(line)
            if header:
                table = tuple(part.strip().strip("\"'") for part in header.group(1).split("."))
                for end in range(1, len(table) + 1):  # [a.b] also opens a, implicitly
                    self.tables.setdefault(table[:end], number)
                continue
            key = self.KEY.match(line)
            if key:
                self.keys.setdefault((*table, key.group(1).strip("\"'")), number)

    def error(self, where: tuple, message: str) -> BackdoorlabError:
        """A one-line error at the key (or table) ``where``: ``FILE:LINE: [TABLE]: message``."""
        line = self.keys.get(where) or self.tables.get(where) or self.tables.get(where[:-1]) or \
            self.tables.get(where[:1])
        table = ".".join(where[:-1] if where in self.keys else where)
        at = f"{self.path}:{line}" if line else self.path
        return BackdoorlabError(f"{at}: [{table}]: {message}" if table else f"{at}: {message}")

    def key_or_table(self, table: tuple, key: str) -> tuple:
        """Where to point an error about ``key`` of ``table``: the key where the text writes it, else the table (a
        key left out, such as an attack named by its table's label)."""
        return (*table, key) if (*table, key) in self.keys else table


def load_sweep_config(path: str, data_dir: str | None = None) -> SweepConfig:
    """Read and check the sweep configuration at ``path`` (see the module docstring); the data sets are read
    (from ``data_dir``, default ``$BACKDOORLAB_DATA``) to check every trigger and target against them."""
    p = pathlib.Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise BackdoorlabError(f"cannot read sweep config {path}: {e.strerror or e}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise BackdoorlabError(f"{path}: not valid TOML: {e}") from None
    return parse_sweep_config(raw, str(path), text, data_dir)


def parse_sweep_config(raw: Mapping[str, Any], path: str, text: str = "", data_dir: str | None = None
                       ) -> SweepConfig:
    """Check the parsed TOML ``raw`` of the file ``path`` (its ``text`` gives the line numbers; the data sets
    come from ``data_dir``)."""
    from ..data.registry import canonical_name, dataset_entry, default_holdout
    from ..models.registry import check_trainable

    lines = _Lines(path, text)
    for section in raw:
        if section not in SECTIONS:
            raise lines.error((section,), f"unknown section {section!r}; valid: {valid_names(SECTIONS)}")
    sweep = _table(raw, "sweep", lines)
    _known_keys(sweep, SWEEP_KEYS, ("sweep",), lines)
    for key in ("datasets", "seeds", "budgets"):
        if key not in sweep:
            raise lines.error(("sweep",), f"missing key {key!r}")
    datasets, loaded = [], []
    for name in _list(sweep, "datasets", str, ("sweep",), lines):
        try:
            dataset_entry(name)
            from ..data import load_dataset
            loaded.append(load_dataset(name, data_dir))  # triggers and targets are checked against it
            datasets.append(canonical_name(name))
        except BackdoorlabError as e:
            raise lines.error(("sweep", "datasets"), str(e)) from None
    archs = _list(sweep, "archs", str, ("sweep",), lines) if "archs" in sweep else ["small-cnn"]
    for arch in archs:
        try:
            check_trainable(arch)
        except BackdoorlabError as e:
            raise lines.error(("sweep", "archs"), str(e)) from None
    seeds = _list(sweep, "seeds", int, ("sweep",), lines)
    budgets = _list(sweep, "budgets", int, ("sweep",), lines)
    for budget in budgets:
        if budget < 1:
            raise lines.error(("sweep", "budgets"), f"a clean budget must be >= 1 image, got {budget}")
        for name in datasets:
            pool = default_holdout(name)
            if budget > pool:
                raise lines.error(("sweep", "budgets"), f"clean budget of {budget} images is larger than the "
                                                        f"held-out pool of {pool} images for {name}")
    budget_seed = sweep.get("budget_seed", 0)
    if not isinstance(budget_seed, int) or isinstance(budget_seed, bool):
        raise lines.error(("sweep", "budget_seed"), f"expected an integer, got {budget_seed!r}")

    train = _table(raw, "train", lines, required=False)
    _known_keys(train, TRAIN_KEYS, ("train",), lines)
    _check_train(train, datasets, archs, lines)

    attacks = tuple(_attack(label, options, loaded, lines) for label, options in
                    _table(raw, "attacks", lines).items())
    if not attacks:
        raise lines.error(("attacks",), "no attacks: add at least one [attacks.LABEL] table")
    labels = {a.label: a for a in attacks}
    for a in attacks:
        if a.kind == "clean":
            if a.score_with is not None and (a.score_with not in labels or labels[a.score_with].kind == "clean"):
                raise lines.error(("attacks", a.label, "score_with"),
                                  f"score_with must name another attack of this sweep with a trigger, got "
                                  f"{a.score_with!r}")
    defenses = tuple(_defense(label, options, datasets, lines) for label, options in
                     _table(raw, "defenses", lines, required=False).items())
    detectors = tuple(_detector(label, options, lines) for label, options in
                      _table(raw, "detectors", lines, required=False).items())
    retune = None
    if "retune" in raw:
        retune = _table(raw, "retune", lines)
        _known_keys(retune, RETUNE_KEYS, ("retune",), lines)
        from ..defenses.retune import RetuneConfig
        _checked(lambda: RetuneConfig(**retune), ("retune",), lines)
    name = sweep.get("name", pathlib.Path(path).stem)
    return SweepConfig(name=str(name), path=path, text=text, datasets=tuple(datasets), archs=tuple(archs),
                       seeds=tuple(seeds), budgets=tuple(budgets), budget_seed=budget_seed, train=dict(train),
                       attacks=attacks, defenses=defenses, detectors=detectors, retune=retune)


def _table(raw, key: str, lines: _Lines, required: bool = True) -> dict:
    value = raw.get(key)
    if value is None:
        if required:
            raise lines.error((key,), f"missing section [{key}]")
        return {}
    if not isinstance(value, dict):
        raise lines.error((key,), f"[{key}] must be a table")
    return value


def _known_keys(table: Mapping, valid, where: tuple, lines: _Lines) -> None:
    for key in table:
        if key not in valid:
            raise lines.error((*where, key), f"unknown key {key!r}; valid: {valid_names(valid)}")


def _list(table: Mapping, key: str, kind: type, where: tuple, lines: _Lines) -> list:
    value = table[key]
    if not isinstance(value, list):
        value = [value]
    if not value or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
        raise lines.error((*where, key), f"{key} must be a non-empty list of {kind.__name__}s, got {table[key]!r}")
    if len(set(value)) != len(value):
        raise lines.error((*where, key), f"{key} lists a value twice: {table[key]!r}")
    return value


def _checked(make, where: tuple, lines: _Lines):
    """``make()``, its one-line error (or a TypeError of a wrong keyword) placed at ``where``."""
    try:
        return make()
    except BackdoorlabError as e:
        raise lines.error(where, str(e)) from None
    except (TypeError, ValueError) as e:
        raise lines.error(where, f"bad value: {e}") from None


def _each_then_all(check, options: Mapping, where: tuple, lines: _Lines) -> None:
    """``check(options)``; when it fails, the error is placed at the first key that fails alone (else at the
    table: a rule that ties several options)."""
    try:
        check(options)
        return
    except (BackdoorlabError, TypeError, ValueError):
        pass
    for key, value in options.items():
        try:
            check({key: value})
        except (BackdoorlabError, TypeError, ValueError) as e:
            message = str(e)
            raise lines.error((*where, key), message if key in message else f"{key}: {message}") from None
    _checked(lambda: check(options), where, lines)


def _check_train(train: Mapping, datasets, archs, lines: _Lines) -> None:
    from ..runs import train_config
    for dataset in datasets:
        for arch in archs:
            _checked(lambda: train_config(dataset, arch, train.get("epochs"), train.get("lr"),
                                          train.get("batch_size"), train.get("augment"),
                                          **{k: train[k] for k in ("schedule", "weight_decay") if k in train}),
                     ("train",), lines)


def _named(section: str, noun: str, label: str, options, valid, lines: _Lines) -> tuple[str, dict]:
    """The registered name a ``[SECTION.LABEL]`` table names (its ``NOUN`` key, else the label) and its other
    options; an unknown name is refused at that key (or the table's header)."""
    where = (section, label)
    if not isinstance(options, dict):
        raise lines.error(where, f"[{section}.{label}] must be a table of options")
    options = dict(options)
    name = options.pop(noun, label)
    if name not in valid:
        raise lines.error(lines.key_or_table(where, noun),
                          f"unknown {noun} {name!r}; valid: {valid_names(valid)}")
    return name, options


def _attack(label: str, options, datasets, lines: _Lines) -> AttackSpec:
    from ..attacks import MODEL_ATTACKS, TRAINING_ATTACKS
    where = ("attacks", label)
    name, options = _named("attacks", "attack", label, options, ["none", *TRAINING_ATTACKS, *MODEL_ATTACKS],
                           lines)
    if name == "none":
        score_with = options.pop("score_with", None)
        _known_keys(options, (), where, lines)
        return AttackSpec(label, "none", "clean", {}, score_with)
    if name in TRAINING_ATTACKS:
        entry = TRAINING_ATTACKS.entry(name)
        if entry.traits["fires_in_student"]:
            raise lines.error(lines.key_or_table(where, "attack"),
                              f"the {name} attack's backdoor fires only in a transfer-learned student, and a sweep "
                              f"has no transfer step: plant it with `backdoorlab train --attack {name}`, then run "
                              f"`backdoorlab transfer`")
        own = tuple(flag_keys(entry.config))
        _known_keys(options, (*POISON_KEYS, *own) if entry.traits["poisons_data"] else ("target", *own), where,
                    lines)
        for ds in datasets:
            _each_then_all(lambda o: training_attack(name, o, ds), options, where, lines)
        return AttackSpec(label, name, "training", options)
    entry = MODEL_ATTACKS.entry(name)  # an attack on a trained model's weights
    trigger = options.get("trigger", "badnets")
    trigger_keys = flag_keys(TRAINING_ATTACKS.entry(trigger).config) \
        if entry.traits["trigger"] and trigger in TRAINING_ATTACKS else {}
    _known_keys(options, (*MODEL_ATTACK_KEYS, *model_attack_settings(entry), *trigger_keys), where, lines)
    for ds in datasets:
        _each_then_all(lambda o: model_attack_options(name, o, seed=0, dataset=ds), options, where, lines)
    return AttackSpec(label, name, "model", options)


def _defense(label: str, options, datasets, lines: _Lines) -> DefenseSpec:
    from ..defenses.repair import REPAIRERS
    from ..runs import default_repair_options
    where = ("defenses", label)
    name, options = _named("defenses", "defense", label, options, list(REPAIRERS), lines)
    suspects = options.pop("suspects", 1)
    if suspects not in (1, 2):
        raise lines.error((*where, "suspects"), f"suspects must be 1 or 2, got {suspects!r}")
    for key in options:
        _checked(lambda: REPAIRERS.entry(name).config.check_keys([key], name), (*where, key), lines)
    for dataset in datasets:
        _each_then_all(lambda o: REPAIRERS.config(name, **{**default_repair_options(name, dataset), **o}),
                       options, where, lines)
    return DefenseSpec(label, name, options, suspects)


def _detector(label: str, options, lines: _Lines) -> DetectorSpec:
    where = ("detectors", label)
    name, options = _named("detectors", "detector", label, options, DETECTORS, lines)
    if name == "scan":
        from ..defenses.neural_cleanse.config import NeuralCleanseConfig
        _each_then_all(lambda o: NeuralCleanseConfig.from_dict(o, owner="scan"), options, where, lines)
    else:
        from ..runs.detect_poison import training_set_detector
        _each_then_all(lambda o: training_set_detector(name).config.from_dict(o, owner=name), options, where,
                       lines)
    return DetectorSpec(label, name, options)
