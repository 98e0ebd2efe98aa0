"""Architectures defined in the user's own code: ``path/to/file.py:NAME`` or ``package.module:NAME``.

An engineer's suspect model is usually an architecture of their own, not one of backdoorlab's. Such an
architecture is named by where its factory lives: a Python file and a name in it (``models/net.py:Net``), or an
importable module and a name (``mypkg.models:build_net``); ``NAME`` may be dotted (``module:Outer.make``). The
factory is called with the keyword arguments the user gives (``--arch-args JSON``) and must return an
``nn.Module`` that maps a float image batch (N, C, H, W) to logits (N, K).

Backdoorlab's models take images in [0, 1] and normalise inside; a model from elsewhere often expects
normalised inputs instead. Given ``mean``/``std``, :func:`build_external` puts the normalisation in front of the
model as a forward pre-hook with non-persistent buffers, so the model's state dict keys stay exactly the user's
(a sanitized checkpoint's ``model.safetensors`` loads straight into their class) and the statistics move with
the model to any device. Without them the model gets images in [0, 1] (for a model that normalises itself).

Importing a file or module runs its code. The checkpoint loader therefore builds such an architecture only
when the user names it (:func:`same_architecture` with what they named); a sidecar alone never imports code.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import keyword
import pathlib
import sys
from typing import Any, Callable

import torch
from torch import nn

from backdoorlab.errors import BackdoorlabError, first_line

#: the arch_args of an external architecture (besides these, none: the factory's own arguments are ``kwargs``)
ARG_NAMES = ("num_classes", "in_channels", "input_size", "mean", "std", "kwargs")
_MEAN, _STD = "_backdoorlab_input_mean", "_backdoorlab_input_std"


def is_external(arch: Any) -> bool:
    """Whether ``arch`` names code outside backdoorlab (``SOURCE:NAME``) rather than a registered architecture."""
    if not isinstance(arch, str) or ":" not in arch:
        return False
    _, _, name = arch.rpartition(":")
    return bool(name) and all(part.isidentifier() and not keyword.iskeyword(part) for part in name.split("."))


def _split(spec: str) -> tuple[str, str, bool]:
    """(source, attribute path, is_file) of ``SOURCE:NAME``."""
    source, _, name = spec.rpartition(":")
    if not source:
        raise BackdoorlabError(f"--arch {spec!r}: expected path/to/file.py:NAME or package.module:NAME")
    is_file = source.endswith(".py") or "/" in source or "\\" in source
    return source, name, is_file


def same_architecture(given: str, recorded: str) -> bool:
    """Whether ``given`` (what the user named) names the architecture a sidecar records as ``recorded``: the same
    attribute, in a file of the same name (the file may have moved) or in the same module."""
    if not (is_external(given) and is_external(recorded)):
        return given == recorded
    (src_a, name_a, file_a), (src_b, name_b, file_b) = _split(given), _split(recorded)
    if name_a != name_b or file_a != file_b:
        return False
    if file_a:
        return pathlib.PurePath(src_a.replace("\\", "/")).name == pathlib.PurePath(src_b.replace("\\", "/")).name
    return src_a == src_b


def _import_file(path: pathlib.Path, spec: str):
    if not path.is_file():
        raise BackdoorlabError(f"--arch {spec!r}: file {path} does not exist")
    resolved = path.resolve()
    module_name = "backdoorlab_user_arch_" + hashlib.sha256(str(resolved).encode()).hexdigest()[:16]
    module = sys.modules.get(module_name)
    if module is not None and getattr(module, "__file__", None) == str(resolved):
        return module
    loader_spec = importlib.util.spec_from_file_location(module_name, resolved)
    if loader_spec is None or loader_spec.loader is None:
        raise BackdoorlabError(f"--arch {spec!r}: {path} cannot be imported as a Python file")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module
    sys.path.insert(0, str(resolved.parent))  # the file may import its neighbours
    try:
        loader_spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[module_name]
        raise BackdoorlabError(f"--arch {spec!r}: importing {path} raised "
                               f"{first_line(e, with_type=True)}") from None
    finally:
        try:
            sys.path.remove(str(resolved.parent))
        except ValueError:
            pass
    return module


def _import_module(name: str, spec: str):
    try:
        return importlib.import_module(name)
    except Exception as e:
        raise BackdoorlabError(f"--arch {spec!r}: cannot import module {name!r}: "
                               f"{first_line(e, with_type=True)}") from None


def resolve_factory(spec: str) -> Callable[..., Any]:
    """The callable ``spec`` names, importing its file or module (which runs that code)."""
    source, name, is_file = _split(spec)
    module = _import_file(pathlib.Path(source).expanduser(), spec) if is_file else _import_module(source, spec)
    target: Any = module
    for part in name.split("."):
        if not hasattr(target, part):
            raise BackdoorlabError(f"--arch {spec!r}: {source} has no {name!r}")
        target = getattr(target, part)
    if not callable(target):
        raise BackdoorlabError(f"--arch {spec!r}: {name} is a {type(target).__name__}, not a callable that returns "
                               "a torch.nn.Module")
    return target


def _normalize_input(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: ``(x - mean) / std`` on the first positional input."""
    x, *rest = args
    mean, std = getattr(module, _MEAN), getattr(module, _STD)
    return ((x - mean.to(x.dtype)) / std.to(x.dtype), *rest)


def build_external(spec: str, num_classes: int, in_channels: int, input_size, mean=None, std=None,
                   kwargs: dict | None = None, **unexpected) -> nn.Module:
    """Call the factory ``spec`` names with ``kwargs``; return its module, normalising inputs with ``mean``/``std``
    when given, carrying ``arch``/``arch_args`` like :func:`~backdoorlab.models.create_model`'s models.

    ``num_classes``, ``in_channels``, ``input_size`` (H, W) and ``mean``/``std`` (None, or one float per channel)
    come checked from :func:`~backdoorlab.models.create_model`, the one way in. The first three describe the data
    the model is for (checked by :func:`check_outputs`, recorded in the sidecar); they are not passed to the
    factory."""
    if unexpected:
        raise BackdoorlabError(f"architecture {spec!r} (code of your own) takes no backdoorlab option(s) "
                               f"{', '.join(map(repr, sorted(unexpected)))}; its own arguments go in --arch-args")
    kwargs = {} if kwargs is None else kwargs
    if not isinstance(kwargs, dict):
        raise BackdoorlabError(f"--arch-args must be a JSON object, got {type(kwargs).__name__}")
    factory = resolve_factory(spec)
    try:
        model = factory(**kwargs)
    except Exception as e:
        raise BackdoorlabError(f"--arch {spec!r}: calling {spec.rpartition(':')[2]}(**{kwargs!r}) raised "
                               f"{first_line(e, with_type=True)}") from None
    if not isinstance(model, nn.Module):
        raise BackdoorlabError(f"--arch {spec!r} returned a {type(model).__name__}, not a torch.nn.Module")
    if mean is not None:
        shape = (1, in_channels, 1, 1)
        model.register_buffer(_MEAN, torch.tensor(mean).view(shape), persistent=False)
        model.register_buffer(_STD, torch.tensor(std).view(shape), persistent=False)
        model.register_forward_pre_hook(_normalize_input)
    model.arch = spec
    model.arch_args = {"num_classes": num_classes, "in_channels": in_channels, "input_size": list(input_size),
                       "mean": None if mean is None else list(mean), "std": None if std is None else list(std),
                       "kwargs": dict(kwargs)}
    return model


def check_outputs(model: nn.Module, num_classes: int, in_channels: int, input_size, where: str) -> None:
    """Run ``model`` once on two blank images of the data's shape; raise unless it returns (2, num_classes)
    logits (a model for other images or another number of classes fails here, before any work)."""
    x = torch.full((2, in_channels, *input_size), 0.5)
    param = next(iter(model.parameters()), None)
    if param is not None:
        x = x.to(param.device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as e:
        raise BackdoorlabError(f"{where} fails on a batch of {in_channels}x{input_size[0]}x{input_size[1]} images: "
                               f"{first_line(e, with_type=True)}") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise BackdoorlabError(f"{where} returns {got} for 2 images; expected logits of shape (2, {num_classes}) "
                               f"for the data set's {num_classes} classes")
