"""The compute device: which one a run uses, where a model lives, moving batches there, mixed precision.

The convention (docs/architecture.md, "Devices"): models, curves and every tensor that meets a model's inputs or
parameters (masks, perturbations, trigger tensors being optimised) live on the model's device; data sets stay
uint8 on the host. Each batch is sliced, augmented and stamped on the host exactly as on a CPU run (the same CPU
generators), then moved with :func:`to_device`; logits and predictions come back to the host. A library function
takes the device from the model it is given (:func:`model_device`), never from a global; the runs layer resolves
the user's ``--device`` (:func:`resolve_device`) and moves the model there.

Mixed precision (``--amp``) is the one setting that is not a tensor's property: the runs layer turns it on for a
block with :func:`mixed_precision`, and the one training loop (``train.fit``: training, curves, fine-tuning)
asks :func:`autocast_settings` for the model's device. It needs a CUDA or MPS device: on CPU it is a one-line
error rather than a silent no-op, so that ``--amp`` never means something other than what was asked.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import re

import torch

from .errors import BackdoorlabError

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"

PIN_BYTES = 1 << 20  # host batches of at least 1 MiB (128 CIFAR-10 float images: 1.5 MiB) go through pinned memory

_AMP = contextvars.ContextVar("backdoorlab_amp", default=False)


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The torch device for a ``--device`` value: ``auto`` (or None) picks CUDA when present, else MPS, else CPU;
    ``cpu``, ``cuda``, ``cuda:N`` and ``mps`` name one; a ``torch.device`` passes through unchecked. A device that
    this machine lacks is a one-line error naming it."""
    if isinstance(spec, torch.device):
        return spec
    text = "auto" if spec is None else str(spec).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not _mps_available():
            raise BackdoorlabError("--device mps: MPS (Apple GPU) is not available on this machine; use "
                                   "--device cpu or auto")
        return torch.device("mps")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise BackdoorlabError(f"unknown --device {spec!r}; expected {DEVICE_CHOICES}")
    if not torch.cuda.is_available():
        raise BackdoorlabError(f"--device {text}: CUDA is not available on this machine (torch "
                               f"{torch.__version__}); use --device cpu or auto")
    if match.group(1) is None:
        return torch.device("cuda")
    index, count = int(match.group(1)), torch.cuda.device_count()
    if index >= count:
        raise BackdoorlabError(f"--device {text}: this machine has {count} CUDA device(s), numbered 0 to {count - 1}")
    return torch.device("cuda", index)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (or buffer); CPU for a model without either."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def params_device(params) -> torch.device:
    """The device of the first tensor in a list of parameters or of optimizer param-group dicts (CPU if empty)."""
    for p in params:
        if isinstance(p, dict):
            for q in p["params"]:
                return q.device
        else:
            return p.device
    return torch.device("cpu")


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``; the same object when it is there already (a CPU run moves nothing). Host tensors
    going to CUDA are copied without blocking the host (from pinned memory when the batch is big enough for
    pinning to pay: the copy then overlaps the host's work on the next batch)."""
    if tensor.device == device:
        return tensor
    if device.type == "cuda" and tensor.device.type == "cpu":
        if tensor.numel() * tensor.element_size() >= PIN_BYTES:
            tensor = tensor.pin_memory()
        return tensor.to(device, non_blocking=True)
    return tensor.to(device)



def to_host(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` on the CPU (the same object when it is there already)."""
    return tensor if tensor.device.type == "cpu" else tensor.cpu()


@contextlib.contextmanager
def mixed_precision(enabled: bool = True):
    """Within this block the training loop (``train.fit``) runs forward passes under autocast (bf16 where the
    device supports it, else fp16 with a gradient scaler). ``enabled=False`` is a no-op block."""
    token = _AMP.set(bool(enabled))
    try:
        yield
    finally:
        _AMP.reset(token)


def amp_requested() -> bool:
    """Whether a :func:`mixed_precision` block is active."""
    return _AMP.get()


def check_amp(device: torch.device, amp: bool) -> None:
    """One-line error for ``--amp`` on a device without mixed precision support (CPU): asked for, never ignored."""
    if amp and device.type not in ("cuda", "mps"):
        raise BackdoorlabError(f"--amp needs a CUDA or MPS device, got --device {device}; drop --amp or use "
                               "--device cuda")


def autocast_settings(device: torch.device) -> tuple[torch.dtype, bool] | None:
    """``(dtype, needs_scaler)`` for the training loop's autocast on ``device`` when mixed precision is requested,
    else None: bf16 without a scaler where CUDA supports it, else fp16 with a ``torch.amp.GradScaler``."""
    if not amp_requested() or device.type not in ("cuda", "mps"):
        return None
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16, False
    return torch.float16, True


def describe(device: torch.device) -> str:
    """A short name of ``device`` for logs: ``cuda:0 (NVIDIA H100 80GB HBM3)``, ``cpu``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


def computes_on_device(run):
    """Decorator of a run function (``runs/``) that computes: it takes the keywords ``device`` (a ``--device``
    value or a ``torch.device``; None: auto) and ``amp`` (bool), resolves the device up front (a missing one is a
    one-line error before anything is written), checks ``amp`` against it, and runs the function with
    ``device`` resolved, inside a :func:`mixed_precision` block when ``amp`` is set."""
    @functools.wraps(run)
    def wrapper(*args, device=None, amp: bool = False, **kwargs):
        resolved = resolve_device(device)
        check_amp(resolved, amp)
        with mixed_precision(amp):
            return run(*args, device=resolved, **kwargs)

    return wrapper
