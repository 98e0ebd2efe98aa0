"""The base class of every plugin's settings (repairers, attacks, detectors): a dataclass whose fields are its
options.

A plugin's config is an ordinary ``@dataclass`` deriving from :class:`Config`, every field with a default (the
paper's, or ours where we depart from it). The base class gives all of them the same handling:

- **Validation**, declared per field with :func:`option` (``choices=`` or ``check=(predicate, expected)``, such
  as :func:`at_least`, :func:`above` and :func:`interval` make) and, for rules that tie several fields
  together or need their own message, in a :meth:`Config.validate` hook; both run on construction.
- :meth:`Config.to_dict`, the JSON-ready settings written next to every result.
- :meth:`Config.from_dict` builds a config from keyword options and refuses unknown keys with one line naming
  them and listing the valid ones.
- :meth:`Config.parse_options` / :meth:`Config.from_options` type command-line text (``-o KEY=VALUE``, split
  by :func:`split_pairs`) after each field's annotation, or a field's own ``parse=`` function.

Every error is a one-line :class:`~backdoorlab.errors.BackdoorlabError`, which the CLI prints without a
traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, Callable, Iterable, Mapping

from .errors import BackdoorlabError, valid_names

TRUE_WORDS = ("true", "1", "yes")
FALSE_WORDS = ("false", "0", "no")
NONE_WORDS = ("none", "null")


def option(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
           choices: Iterable | None = None, check: tuple[Callable[[Any], bool], str] | None = None,
           parse: Callable[[str], Any] | None = None, flag: str | None = None) -> Any:
    """A config field with declared validation and parsing.

    ``choices``: the allowed values. ``check``: ``(predicate, expected)``; a value for which the predicate is
    false is refused with "NAME must be EXPECTED, got VALUE". ``parse``: turns command-line text into the value
    (default: by the field's type). ``flag``: the command-line flag that sets the field where that is not
    ``-o KEY=VALUE`` (the attacks' ``--trigger-size``, ...)."""
    metadata = {"choices": tuple(choices) if choices is not None else None, "check": check, "parse": parse,
                "flag": flag}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def at_least(low) -> tuple[Callable[[Any], bool], str]:
    """``check=`` for a number ``>= low``."""
    return (lambda v: v >= low), f">= {low}"


def above(low) -> tuple[Callable[[Any], bool], str]:
    """``check=`` for a number ``> low``."""
    return (lambda v: v > low), f"> {low}"


def interval(text: str) -> tuple[Callable[[Any], bool], str]:
    """``check=`` for a number in the interval ``text``, written as in mathematics: ``"(0, 1]"`` is
    ``0 < v <= 1``."""
    low, high = (float(t) for t in text[1:-1].split(","))
    left = (lambda v: v >= low) if text[0] == "[" else (lambda v: v > low)
    right = (lambda v: v <= high) if text[-1] == "]" else (lambda v: v < high)
    return (lambda v: left(v) and right(v)), f"in {text}"


def split_pairs(pairs: Iterable[str]) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` (the CLI's repeated ``-o``) -> ``{"key": "VALUE"}``; dashes in keys become
    underscores, a later pair overrides an earlier one."""
    texts = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise BackdoorlabError(f"option {pair!r} is not KEY=VALUE")
        texts[key.strip().replace("-", "_")] = text
    return texts


def _parse_text(text: str, kind) -> Any:
    """Command-line ``text`` -> a value of the annotated type ``kind``; ValueError when it is not one."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is bool:
        if text.lower() not in TRUE_WORDS + FALSE_WORDS:
            raise ValueError(text)
        return text.lower() in TRUE_WORDS
    if kind in (int, float, str):
        return kind(text)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and text.strip().lower() in NONE_WORDS:
            return None
        for alternative in (a for a in args if a is not type(None)):
            try:
                return _parse_text(text, alternative)
            except ValueError:
                pass
        raise ValueError(text)
    if origin in (list, tuple) or kind in (list, tuple):
        item = args[0] if args else float
        values = [_parse_text(t.strip(), item) for t in text.split(",")]
        return tuple(values) if (origin or kind) is tuple else values
    raise ValueError(text)


class Config:
    """Base of the plugins' config dataclasses; see the module docstring."""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            choices, check = f.metadata.get("choices"), f.metadata.get("check")
            if choices is not None and value not in choices:
                raise BackdoorlabError(f"unknown {f.name} {value!r}; valid: "
                                       + ", ".join(repr(c) for c in choices))
            if check is not None and not check[0](value):
                raise BackdoorlabError(f"{f.name} must be {check[1]}, got {value!r}")
        self.validate()

    def validate(self) -> None:
        """Checks that involve several fields, or that need their own message; raise BackdoorlabError."""

    def to_dict(self) -> dict:
        """The settings as a JSON-ready dict, written next to every result."""
        return dataclasses.asdict(self)

    @classmethod
    def option_names(cls, exclude: Iterable[str] = ()) -> list[str]:
        """The names of the fields, in declaration order, less ``exclude``."""
        return [f.name for f in dataclasses.fields(cls) if f.name not in set(exclude)]

    @classmethod
    def check_keys(cls, keys: Iterable[str], owner: str, exclude: Iterable[str] = (),
                   noun: str = "option") -> None:
        """Refuse ``keys`` that are not options of ``owner``, with one line listing the valid ones."""
        valid = cls.option_names(exclude)
        unknown = sorted(set(keys) - set(valid))
        if unknown:
            raise BackdoorlabError(f"unknown {noun}{'s' if len(unknown) > 1 else ''} "
                                   f"{', '.join(map(repr, unknown))} for {owner}; valid: {valid_names(valid)}")

    @classmethod
    def from_dict(cls, options: Mapping[str, Any], owner: str, noun: str = "option"):
        """The config of ``owner`` with the given options (the others at their defaults), validated."""
        cls.check_keys(options, owner, noun=noun)
        return cls(**options)

    @classmethod
    def parse_options(cls, texts: Mapping[str, Any], owner: str, exclude: Iterable[str] = ()) -> dict:
        """Type the given options after their fields: ``{"steps": "30"} -> {"steps": 30}``; lists and tuples
        are comma-separated, ``none`` is None where a field allows it. Values that are not text pass as they
        are. Only the given keys are returned (defaults may depend on the data set); unknown keys and keys in
        ``exclude`` are refused."""
        cls.check_keys(texts, owner, exclude)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = _type_hints(cls)
        options = {}
        for key, text in texts.items():
            if not isinstance(text, str):
                options[key] = text
                continue
            f = fields[key]
            try:
                parse = f.metadata.get("parse")
                options[key] = parse(text) if parse is not None else _parse_text(text, hints[key])
            except ValueError:
                example = _default(f)
                expected = f"a value like {example!r}" if example is not None else _describe(hints[key])
                raise BackdoorlabError(f"option {key}={text!r} for {owner}: expected {expected}") from None
        return options

    @classmethod
    def from_options(cls, texts: Mapping[str, Any], owner: str, exclude: Iterable[str] = ()):
        """:meth:`parse_options`, then the config with those options (the others at their defaults)."""
        return cls.from_dict(cls.parse_options(texts, owner, exclude), owner)

    @classmethod
    def flags(cls) -> dict[str, str]:
        """``{command-line flag: field name}`` for the fields set by a flag of their own (:func:`option`)."""
        return {f.metadata["flag"]: f.name for f in dataclasses.fields(cls) if f.metadata.get("flag")}


@functools.cache
def _type_hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _describe(kind) -> str:
    """What a value of the annotated type ``kind`` looks like on the command line: 'an integer or none', ..."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin in (list, tuple) or kind in (list, tuple):
        return "comma-separated " + {int: "integers", str: "words"}.get(args[0] if args else float, "numbers")
    return {type(None): "none", bool: "true or false", int: "an integer", float: "a number"}.get(kind, "text")
