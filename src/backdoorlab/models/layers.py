"""The *layers* of a built-in classifier, as transfer learning and the latent backdoor count them.

A built-in architecture (small-cnn, resnet20, preact-resnet18, vgg16-bn; ``models.architectures``) is
``normalize -> body -> fc``. Its layers, from the input, are the children of ``body`` that hold parameters, each
together with the parameter-free children that follow it (pooling, flattening, a ReLU), and last ``fc``, the
classifier. A layer is named by its first module: small-cnn has four, ``body.0`` (conv block and max-pool),
``body.2`` (conv block, max-pool, flatten), ``body.5`` (the 128-unit linear layer and its ReLU) and ``fc``;
resnet20 has eleven (``body.0``, the stem; ``body.1`` .. ``body.9``, the residual blocks, the last with the global
average pool; ``fc``); preact-resnet18 ten (``body.0``, ``body.1`` .. ``body.8``, ``body.9``: the final batch norm
with ReLU and pool; ``fc``); vgg16-bn fourteen (13 conv blocks with their pools, ``fc``). The ``normalize``
layer holds buffers only and belongs to no layer. "The last K layers" are the last K of that list: K = 1 is the
classifier alone. The *representation at* a layer is the output of its last module, flattened: at the layer
before ``fc``, the penultimate features ``fc`` reads.

An architecture of the user's own code, or an ensemble, has no such list: asking for its layers is a one-line
error.
"""

from __future__ import annotations

import torch
from torch import nn

from backdoorlab.errors import BackdoorlabError
from backdoorlab.models.architectures import Classifier


def _has_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def layers(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """The model's layers from the input, ``[(name, modules), ...]``, ``fc`` last (see the module docstring)."""
    if not isinstance(model, Classifier) or not isinstance(model.body, nn.Sequential):
        raise BackdoorlabError(f"layers are defined for backdoorlab's built-in architectures (normalize, body, fc), "
                               f"not for {type(model).__name__}; transfer and the latent backdoor need one of them")
    groups: list[tuple[str, list[nn.Module]]] = []
    for i, child in enumerate(model.body):
        if _has_parameters(child) or not groups:
            groups.append((f"body.{i}", [child]))
        else:
            groups[-1][1].append(child)
    return [*groups, ("fc", [model.fc])]


def layer_names(model: nn.Module) -> list[str]:
    """The names of the model's layers, from the input (``["body.0", "body.2", "body.5", "fc"]`` for small-cnn)."""
    return [name for name, _ in layers(model)]


def last_layers(model: nn.Module, k: int, flag: str = "--trainable-layers") -> list[str]:
    """The names of the model's last ``k`` layers; ``k`` outside 1..(number of layers) is a one-line error naming
    ``flag`` and the layers."""
    names = layer_names(model)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(names):
        raise BackdoorlabError(f"{flag} must be 1..{len(names)} for {getattr(model, 'arch', 'this model')} (its "
                               f"layers from the input: {', '.join(names)}; 1 = fc alone), got {k}")
    return names[len(names) - k:]


def check_layer(model: nn.Module, layer: str, flag: str = "--latent-layer") -> str:
    """``layer`` if it names one of the model's layers other than ``fc``; else a one-line error listing them."""
    names = layer_names(model)[:-1]
    if layer not in names:
        raise BackdoorlabError(f"{flag} {layer!r} is not a layer of {getattr(model, 'arch', 'this model')} before "
                               f"its classifier; valid: {', '.join(names)}")
    return layer


def representation(model: Classifier, x: torch.Tensor, layer: str) -> torch.Tensor:
    """The representation of float images ``x`` (N, C, H, W) at ``layer`` (the output of its last module),
    flattened to (N, D); gradients flow (the trigger optimisation and the injection need them)."""
    check_layer(model, layer)
    h = model.normalize(x)
    for name, modules in layers(model)[:-1]:
        for m in modules:
            h = m(h)
        if name == layer:
            return torch.flatten(h, 1)
    raise AssertionError("unreachable: check_layer accepted the layer")


def logits_and_representation(model: Classifier, x: torch.Tensor, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits of float images ``x`` and their representation at ``layer`` (flattened), from one forward pass
    that computes what ``model(x)`` computes."""
    check_layer(model, layer)
    h, rep = model.normalize(x), None
    for name, modules in layers(model)[:-1]:
        for m in modules:
            h = m(h)
        if name == layer:
            rep = torch.flatten(h, 1)
    features = torch.flatten(h, 1)
    if model.dropout is not None:
        features = model.dropout(features)
    return model.fc(features), rep


def freeze_all_but(model: nn.Module, k: int) -> tuple[list[str], list[nn.Module]]:
    """Freeze every layer of ``model`` but the last ``k``: their parameters stop requiring gradients. Returns the
    trainable layers' names and the frozen layers' modules, which the caller keeps in eval mode while training
    (batch norm statistics then stay the teacher's, so the frozen weights and buffers are left bit for bit)."""
    trainable = set(last_layers(model, k))
    frozen = []
    for name, modules in layers(model):
        for m in modules:
            m.requires_grad_(name in trainable)
            if name not in trainable:
                frozen.append(m)
    return [n for n in layer_names(model) if n in trainable], frozen
