"""The ``--device`` option of every command that computes, and ``--amp`` of those that train.

:func:`device_options` adds them and resolves them before the command's body runs (so ``--device cuda`` on a
machine without CUDA is a one-line error before any data is loaded or any file written); the command receives
``device`` (a ``torch.device``) and, with ``amp=True``, ``amp`` (bool), and hands them to its run. ``--amp``
is offered only where the one training loop runs (training, curves, fine-tuning): elsewhere it would change
nothing.
"""

from __future__ import annotations

import functools

import click


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
