"""Command-line options shared by the command modules (``cli.py``, ``cli_evasion.py``) and their parsing."""

from __future__ import annotations

import json

import click

from .errors import BackdoorlabError

model_arch_option = click.option(
    "--arch", "named_arch", default=None, metavar="ARCH",
    help="The model's architecture when it is code of your own (path/to/file.py:NAME or package.module:NAME): a "
         "checkpoint never makes backdoorlab import code that the command line does not name.")
image_size_option = click.option(
    "--image-size", default=None, metavar="H[,W]",
    help="folder:/npz: data sets: resize the images to H x W pixels (default: their most common size).")


def resize_options(f):
    """``--resize`` and ``--resize-defense``: how a folder:/npz: data set is brought to one size."""
    f = click.option("--resize-defense", default=None, metavar="DEFENSE",
                     help="folder:/npz: data sets: median filters the pixels that --resize nearest or bilinear reads "
                          "before resizing (the selective median filter of Quiring et al. 2020, against "
                          "image-scaling attacks); none (default).")(f)
    return click.option("--resize", default=None, metavar="METHOD",
                        help="folder:/npz: data sets: how images are resized: lanczos (default, antialiased), nearest, "
                             "bilinear (no antialiasing, as OpenCV and TensorFlow) or area (the mean of the pixels "
                             "covered).")(f)


budget_seed_option = click.option("--budget-seed", default=0, show_default=True, type=int,
                                  help="Which clean images form the budget.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
arch_args_option = click.option(
    "--arch-args", "arch_args_json", default=None, metavar="JSON",
    help="Keyword arguments of the architecture, a JSON object (for file.py:NAME: those of NAME).")


def parse_arch_args(text: str | None) -> dict:
    """The --arch-args JSON object ({} when absent)."""
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise BackdoorlabError(f"--arch-args is not valid JSON ({e.msg} at character {e.pos}): {text!r}") from None
    if not isinstance(value, dict):
        raise BackdoorlabError(f"--arch-args must be a JSON object such as '{{\"width\": 2}}', got {text!r}")
    return value


def parse_floats(text: str | None, flag: str) -> list[float] | None:
    """M1,M2,M3 as floats (None when absent)."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise BackdoorlabError(f"{flag} must be comma-separated numbers such as 0.5,0.5,0.5, got {text!r}") from None
