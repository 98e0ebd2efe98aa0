"""The ``--device`` option of every command that computes, ``--amp`` of those that train, and the global
``--threads`` (``backdoorlab --threads N COMMAND``).

:func:`device_options` adds them and resolves them before the command's body runs (so ``--device cuda`` on a
machine without CUDA is a one-line error before any data is loaded or any file written); the command receives
``device`` (a ``torch.device``) and, with ``amp=True``, ``amp`` (bool), and hands them to its run. ``--amp``
is offered only where the one training loop runs (training, curves, fine-tuning): elsewhere it would change
nothing.

``--threads N`` caps the CPU threads torch computes with (:func:`use_threads`, run by the command group before
any command): by default torch takes one per core, which on a shared machine slows every other job, and a
benchmark's timing depends on it.
"""

from __future__ import annotations

import functools

import click

from .errors import BackdoorlabError


def device_options(amp: bool = True):
    """A decorator adding ``--device`` (default auto) and, with ``amp``, ``--amp`` to a command."""

    def decorate(f):
        @functools.wraps(f)
        def wrapper(*args, device, **kwargs):
            from .device import check_amp, resolve_device
            resolved = resolve_device(device)
            if amp:
                check_amp(resolved, kwargs["amp"])
            return f(*args, device=resolved, **kwargs)

        if amp:
            wrapper = click.option("--amp", is_flag=True,
                                   help="Mixed precision (bf16, else fp16 with loss scaling) for training, curves "
                                        "and fine-tuning; needs a CUDA or MPS device.")(wrapper)
        return click.option("--device", default="auto", show_default=True,
                            help="Where the models run: auto (CUDA when present, else MPS, else CPU), cpu, cuda, "
                                 "cuda:N or mps.")(wrapper)

    return decorate


threads_option = click.option(
    "--threads", default=None, metavar="N",
    help="CPU threads torch may use for every command (torch.set_num_threads), an integer >= 1 (default: "
         "torch's own choice, one per core).")


def parse_threads(text) -> int:
    """The ``--threads`` value as an integer >= 1; anything else is a one-line error naming it."""
    try:
        n = int(str(text).strip())
    except ValueError:
        n = 0
    if n < 1:
        raise BackdoorlabError(f"--threads must be an integer >= 1, got {text!r}")
    return n


def use_threads(n: int) -> None:
    """Let torch compute with ``n`` CPU threads: the intra-op pool (convolutions, matrix products) always; the
    inter-op pool too when it can still be sized, which torch allows once per process and only before its
    first parallel work, so a second call in the same process (tests, a notebook) leaves that pool as it is."""
    import torch

    torch.set_num_threads(n)
    if torch.get_num_interop_threads() != n:
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:  # already sized or already used in this process: keep it
            pass
