"""Reading a state dict that was saved elsewhere, without running any code it might carry.

Two formats are read: ``.safetensors`` (tensors only, by design) and PyTorch's ``torch.save`` files (``.pt``,
``.pth``, ``.bin``, ``.ckpt``), read with ``torch.load(weights_only=True)``, whose unpickler accepts tensors and
plain containers and refuses anything that would import a class or call a function. A file that needs full
unpickling (a whole pickled model, a training checkpoint holding optimiser classes) is refused with the line
that says how to convert it where it is trusted.

Common wrappings are unwrapped: a checkpoint dict whose ``state_dict`` / ``model_state_dict`` / ``model`` entry
is the state dict, and the ``module.`` prefix that ``nn.DataParallel`` adds to every key.
"""

from __future__ import annotations

import hashlib
import pathlib
import pickle
import re
from typing import Mapping

import safetensors.torch
import torch

from backdoorlab.errors import BackdoorlabError, first_line

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_WRAPPERS = ("state_dict", "model_state_dict", "model")

CONVERT_HINT = ("convert it where you trust it: `torch.save(torch.load(F, weights_only=False).state_dict(), "
                "'weights.pt')` (for a pickled model) or save the state dict with safetensors")


def _tensors_only(state, path: pathlib.Path) -> dict[str, torch.Tensor]:
    """The state dict inside ``state`` (unwrapped), checked to map strings to tensors."""
    if isinstance(state, Mapping):
        for key in _WRAPPERS:
            inner = state.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                state = inner
                break
    if not isinstance(state, Mapping):
        raise BackdoorlabError(f"{path} holds a {type(state).__name__}, not a state dict (a mapping of parameter "
                               "names to tensors)")
    bad = next((k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise BackdoorlabError(f"{path}: entry {bad!r} is a {type(state[bad]).__name__}, not a tensor; expected a "
                               "state dict (parameter names to tensors)")
    if not state:
        raise BackdoorlabError(f"{path} holds an empty state dict")
    state = dict(state)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def read_state_dict(path) -> tuple[dict[str, torch.Tensor], dict]:
    """The state dict in ``path`` (on the CPU) and a record of the file (path, format, sha256)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise BackdoorlabError(f"weights file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES:
        raise BackdoorlabError(f"weights file {path}: expected {', '.join(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)}, "
                               f"got {suffix or 'no extension'!r}")
    data = path.read_bytes()
    if suffix in SAFETENSORS_SUFFIXES:
        try:
            state = safetensors.torch.load(data)
        except Exception as e:
            raise BackdoorlabError(f"weights file {path} is not a readable safetensors file: "
                                   f"{first_line(e)}") from None
        kind = "safetensors"
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            found = re.search(r"GLOBAL ([\w.]+)", str(e))
            needs = f" (it pickles {found.group(1)})" if found else ""
            raise BackdoorlabError(f"weights file {path} needs full unpickling{needs}, which can run arbitrary code, "
                                   f"so backdoorlab will not load it; {CONVERT_HINT}") from None
        except Exception as e:
            raise BackdoorlabError(f"weights file {path} is not a readable PyTorch file: {first_line(e)}") from None
        kind = "torch"
    record = {"file": str(path), "format": kind, "sha256": hashlib.sha256(data).hexdigest()}
    return _tensors_only(state, path), record


def first_mismatch(expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor]) -> str:
    """One line naming the first way ``got`` (the file's state dict) does not fit ``expected`` (the model's):
    a key the model lacks or needs, or a key with its two shapes; '' when it fits."""
    for key, value in got.items():
        if key not in expected:
            return f"the file has {key!r}, which the model does not ({len(got)} keys in the file, {len(expected)} " \
                   "in the model)"
        if tuple(value.shape) != tuple(expected[key].shape):
            return f"{key!r} is {list(value.shape)} in the file but {list(expected[key].shape)} in the model"
    missing = next((k for k in expected if k not in got), None)
    if missing is not None:
        return f"the model needs {missing!r}, which the file lacks ({len(got)} keys in the file, {len(expected)} " \
               "in the model)"
    return ""
