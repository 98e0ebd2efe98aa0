"""One registry per kind of plugin (repairers, training-time attacks, detectors), filled by a decorator.

A plugin's module registers its entry point where it is defined::

    @REPAIRERS.register("fst", FSTConfig, "Feature shift tuning (Min et al. 2023): ...")
    def feature_shift_tuning(model, budget, cfg, *, progress=True): ...

An entry is the name, the config dataclass (a :class:`~backdoorlab.config.Config`), a one-line description, the
registered function or class and the kind's *traits*: facts every entry of a kind may declare, with defaults
set by the registry (a repairer takes two suspect models or one, ...). The CLI's choices, help texts,
``backdoorlab list`` and ``-o`` parsing, and the library's validation, all ask the registry, so adding a plugin
is one new module; nothing else keeps a list of names. The package that owns a registry imports every module
it holds with :func:`import_plugins`, so a new plugin's file needs no import line anywhere. The entries are
listed in registration order (the built-in plugins' modules in the order the package names, then any other
module of the package, by name), or, for a registry built with an ``order`` key, sorted by it (registration
order breaking ties): the detectors are listed by what they are.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any, Callable, Iterable, Iterator, Mapping

from .config import Config
from .errors import BackdoorlabError, valid_names


def import_plugins(package: str, first: Iterable[str] = ()) -> None:
    """Import every module of ``package`` (a package's ``__name__``), which registers the plugins they define:
    the modules named in ``first`` in that order, then the others sorted by name (subpackages included)."""
    first = list(first)
    found = sorted(info.name for info in pkgutil.iter_modules(importlib.import_module(package).__path__)
                   if not info.name.startswith("_"))
    for name in first + [n for n in found if n not in first]:
        importlib.import_module(f"{package}.{name}")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One registered plugin: ``run`` is the registered function or class, ``traits`` its kind's facts."""

    name: str
    config: type[Config]
    description: str
    run: Callable
    traits: Mapping[str, Any]


class Registry:
    """The entries of one kind of plugin, by name. ``kind`` names it in messages ("unknown defense 'x'");
    ``traits`` are the facts its entries may declare, with their defaults; ``order``, a key on an
    :class:`Entry`, the order they are listed in (default: registration order)."""

    def __init__(self, kind: str, traits: Mapping[str, Any] | None = None,
                 order: Callable[[Entry], Any] | None = None):
        self.kind = kind
        self.traits = dict(traits or {})
        self.order = order
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, config: type[Config], description: str, **traits) -> Callable:
        """Decorator registering a function or class under ``name``, with its config class, a one-line
        description and its traits; returns what it decorates unchanged."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        if not (isinstance(config, type) and issubclass(config, Config) and dataclasses.is_dataclass(config)):
            raise TypeError(f"{self.kind} {name!r}: its config must be a Config dataclass, got {config!r}")
        if not description.strip() or "\n" in description:
            raise ValueError(f"{self.kind} {name!r} needs a one-line description")
        unknown = sorted(set(traits) - set(self.traits))
        if unknown:
            raise TypeError(f"{self.kind} {name!r}: unknown trait(s) {unknown}; a {self.kind} may declare "
                            f"{sorted(self.traits)}")

        def decorator(run: Callable) -> Callable:
            self._entries[name] = Entry(name, config, description.strip(), run, {**self.traits, **traits})
            return run

        return decorator

    def unregister(self, name: str) -> Entry:
        """Remove ``name`` and return its entry (a plugin registered for a while, as by a test); an unknown name
        is the one-line error of :meth:`entry`."""
        entry = self.entry(name)
        del self._entries[name]
        return entry

    def entry(self, name: str) -> Entry:
        """The entry ``name``; an unknown name is a one-line error listing the valid ones."""
        if name not in self._entries:
            raise BackdoorlabError(f"unknown {self.kind} {name!r}; valid: {valid_names(self._entries)}")
        return self._entries[name]

    __getitem__ = entry

    def names(self, **traits) -> list[str]:
        """Registered names in listing order; with ``traits``, only the entries that have those values."""
        entries = self._entries.values() if self.order is None else sorted(self._entries.values(), key=self.order)
        return [e.name for e in entries if all(e.traits[k] == v for k, v in traits.items())]

    def entries(self, **traits) -> list[Entry]:
        return [self._entries[n] for n in self.names(**traits)]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name) -> bool:
        return name in self._entries

    def config(self, name: str, **options) -> Config:
        """The config of ``name`` built from ``options`` (the others at their defaults), validated."""
        return self.entry(name).config.from_dict(options, owner=name)

    def defaults(self, name: str) -> dict:
        """The settings of ``name`` at their defaults, as :meth:`Config.to_dict` writes them."""
        return self.entry(name).config().to_dict()

    def parse_options(self, name: str, texts: Mapping[str, Any], exclude=()) -> dict:
        """The command-line options of ``name`` (``{"key": "text"}``, see :func:`config.split_pairs`) typed
        after its config's fields; unknown keys are refused."""
        return self.entry(name).config.parse_options(texts, owner=name, exclude=exclude)
