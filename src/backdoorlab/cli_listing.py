"""Command-line help that lists a registry's entries (name and description), read when the help is shown.

The registries fill as their plugins' modules are imported, which imports torch; the CLI imports them only when
a command runs or its help is printed, so that ``backdoorlab --help`` and ``list`` stay quick.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import click


class Listed(NamedTuple):
    """A listed name and its one-line description, for what is not a registry entry (the architectures)."""

    name: str
    description: str


def architectures() -> list[Listed]:
    """The trainable architectures, each with its one-line description."""
    from .models.registry import list_models, model_description
    return [Listed(n, model_description(n)) for n in list_models()]


class RegistryCommand(click.Command):
    """A command whose help ends with a section per registry: one line per entry, its name and description.
    ``listings``: ``[(section title, function returning the entries to list)]``."""

    def __init__(self, *args, listings: list[tuple[str, Callable[[], list]]] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.listings = list(listings)

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_help_text(ctx, formatter)
        for title, entries in self.listings:
            with formatter.section(title):
                formatter.write_dl([(e.name, e.description) for e in entries()])
