"""Architecture registry: ``@register_model("name")``, :func:`create_model`, :func:`list_models`.

A builder is called as ``fn(num_classes=, in_channels=, input_size=, mean=, std=, **kwargs)`` with validated
arguments (``input_size`` a tuple ``(H, W)``, ``mean``/``std`` tuples of ``in_channels`` floats) and returns an
``nn.Module`` mapping images in [0, 1] of shape (N, in_channels, H, W) to logits of shape (N, num_classes).
"""

from __future__ import annotations

import inspect
import numbers
from typing import Callable

from torch import nn

from backdoorlab.errors import BackdoorlabError, valid_names
from backdoorlab.models.external import build_external, is_external

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_UNLISTED: set[str] = set()


def register_model(name: str, listed: bool = True) -> Callable:
    """Decorator registering an architecture builder under ``name``. ``listed=False``: buildable (checkpoints
    load) but not offered for training by :func:`list_models` (the sanitizer's ensembles)."""

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} is registered twice")
        _REGISTRY[name] = fn
        if not listed:
            _UNLISTED.add(name)
        return fn

    return decorator


def list_models() -> list[str]:
    """Sorted names of the architectures that can be trained (the listed ones)."""
    return sorted(set(_REGISTRY) - _UNLISTED)


def model_description(name: str) -> str:
    """The first line of architecture ``name``'s factory docstring: what it is, for listings."""
    doc = (_REGISTRY[name].__doc__ or "").strip()
    return doc.splitlines()[0] if doc else name


def _unknown_architecture(name: str) -> BackdoorlabError:
    return BackdoorlabError(f"unknown architecture {name!r}; valid: {valid_names(list_models())}, or code of your "
                            "own as path/to/file.py:NAME or package.module:NAME")


def check_trainable(name: str) -> None:
    """Raise (one line, naming the valid ones) unless ``name`` is an architecture one may train or import: a
    listed one, or code of the user's own (the sanitizer's ensembles are built, never named)."""
    if name not in list_models() and not is_external(name):
        raise _unknown_architecture(name)


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise BackdoorlabError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _floats(values, n: int, what: str, in_channels: int) -> tuple[float, ...]:
    if values is None:
        return (0.5,) * n
    if isinstance(values, numbers.Real):
        values = [values]
    values = list(values)
    if len(values) != n:
        raise BackdoorlabError(f"{what} has {len(values)} values but in_channels is {in_channels} (one value per "
                               "channel of the images)")
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
        raise BackdoorlabError(f"{what} must be numbers, got {values!r}")
    return tuple(float(v) for v in values)


def create_model(
    name: str,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: tuple[int, int] = (32, 32),
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    dropout: float = 0.0,
    dropout_at_inference: bool = False,
    **kwargs,
) -> nn.Module:
    """Build architecture ``name`` for images (N, in_channels, *input_size) in [0, 1] -> logits (N, num_classes).

    ``mean``/``std`` (default 0.5 per channel) configure the model's first layer, :class:`Normalize`.
    ``input_size`` may be an int (square) or a pair; lists (as read from JSON) are accepted everywhere.
    ``dropout`` > 0 adds dropout on the penultimate features (before the final linear layer), kept active at
    inference with ``dropout_at_inference`` (see :class:`FeatureDropout`).
    The returned model carries ``model.arch`` (the name) and ``model.arch_args`` (a JSON-ready dict of the
    arguments above), ready to go into checkpoint metadata.

    ``name`` may also be code of the user's own, ``path/to/file.py:NAME`` or ``package.module:NAME``
    (:mod:`backdoorlab.models.external`): its factory is called with ``kwargs={...}``, and ``mean``/``std``, when
    given, normalise its input (none by default: such a model may normalise itself).
    """
    external = name not in _REGISTRY and is_external(name)
    if name not in _REGISTRY and not external:
        raise _unknown_architecture(name)
    num_classes = _positive_int(num_classes, "num_classes")
    in_channels = _positive_int(in_channels, "in_channels")
    if isinstance(input_size, numbers.Integral):
        input_size = (input_size, input_size)
    if isinstance(input_size, (str, bytes)) or not hasattr(input_size, "__len__") or len(input_size) != 2:
        raise BackdoorlabError(f"input_size must be (height, width), got {input_size!r}")
    input_size = tuple(_positive_int(v, "input_size") for v in input_size)
    # a model of the user's own code (or an ensemble of them) normalises its input only if asked to; for it the
    # statistics come from the command line's --mean/--std
    keep_unset = mean is None and std is None and (external or is_external(kwargs.get("member")))
    if external and (mean is None) != (std is None):
        raise BackdoorlabError("give both --mean and --std, or neither (for a model that normalises its input)")
    flag = "--" if external else ""
    mean = None if keep_unset else _floats(mean, in_channels, f"{flag}mean", in_channels)
    std = None if keep_unset else _floats(std, in_channels, f"{flag}std", in_channels)
    if std is not None and any(s <= 0 for s in std):
        raise BackdoorlabError(f"{flag}std must be positive, got {std!r}")
    if external:
        extra = {"dropout": dropout} if dropout else {}
        extra |= {"dropout_at_inference": dropout_at_inference} if dropout_at_inference else {}
        return build_external(name, num_classes, in_channels, input_size, mean, std, **extra, **kwargs)

    builder = _REGISTRY[name]

    params = inspect.signature(builder).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise BackdoorlabError(f"architecture {name!r} takes no argument(s) {', '.join(map(repr, unknown))}")

    model = builder(
        num_classes=num_classes, in_channels=in_channels, input_size=input_size, mean=mean, std=std, **kwargs
    )
    try:
        dropout = float(dropout)
    except (TypeError, ValueError):
        raise BackdoorlabError(f"dropout must be a number in [0, 1), got {dropout!r}")
    if dropout:
        from .architectures import FeatureDropout

        if not hasattr(model, "fc") or not hasattr(model, "dropout"):
            raise BackdoorlabError(f"architecture {name!r} has no dropout option")
        model.dropout = FeatureDropout(dropout, dropout_at_inference)
    elif dropout_at_inference:
        raise BackdoorlabError("dropout_at_inference needs a dropout rate > 0")
    model.arch = name
    model.arch_args = {
        "num_classes": num_classes,
        "in_channels": in_channels,
        "input_size": list(input_size),
        "mean": None if mean is None else list(mean),
        "std": None if std is None else list(std),
        **({"dropout": dropout, "dropout_at_inference": bool(dropout_at_inference)} if dropout else {}),
        **kwargs,
    }
    return model
