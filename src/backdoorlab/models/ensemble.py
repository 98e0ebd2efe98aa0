"""An ensemble as one model: the mean of its members' softmax outputs.

The sanitizer exports one when two points of its path are equally far from the suspects and both within its
clean-accuracy tolerance (docs/sanitizer.md, recipe step 5). It is an architecture of the
registry (``"ensemble"``, arguments ``member``, ``size`` and ``member_args``), so its checkpoints save, load and
evaluate like any other; it is not offered for training (``list_models`` leaves it out).

The output is ``log(mean_i softmax(member_i(x)))``: log-probabilities, which are valid logits (their softmax is
the members' mean probability, their argmax its most probable class).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from backdoorlab.errors import BackdoorlabError
from backdoorlab.models.registry import create_model, register_model

ARCH = "ensemble"
_INPUT_ARGS = ("num_classes", "in_channels", "input_size", "mean", "std")


class Ensemble(nn.Module):
    """Average the softmax outputs of ``members`` (at least two models with the same number of classes).

    Members that are ensembles of one size are flattened into their own members (the mean of equal-sized means
    is the mean of all): sanitizing two averaged models gives one ensemble of four networks. When the members
    come from the registry (they carry ``arch`` / ``arch_args``, as :func:`create_model` and checkpoint loading
    set them) and share one architecture, the ensemble carries the ``arch`` / ``arch_args`` that rebuild it, so
    :func:`save_checkpoint` can save it without further metadata.
    """

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        members = list(members)
        if len(members) < 2:
            raise BackdoorlabError(f"an ensemble needs at least two members, got {len(members)}")
        nested = [m for m in members if isinstance(m, Ensemble)]
        if nested:
            if len(nested) != len(members) or len({len(m.members) for m in nested}) != 1:
                raise BackdoorlabError("an ensemble's members must all be single models or all ensembles of one size")
            members = [inner for m in nested for inner in m.members]
        self.members = nn.ModuleList(members)
        archs = {(getattr(m, "arch", None), repr(getattr(m, "arch_args", None))) for m in members}
        first = members[0]
        args = dict(getattr(first, "arch_args", None) or {})
        if len(archs) == 1 and getattr(first, "arch", None) is not None and all(k in args for k in _INPUT_ARGS):
            self.arch = ARCH
            self.arch_args = {**{k: args.pop(k) for k in _INPUT_ARGS}, "member": first.arch, "size": len(members),
                              "member_args": args}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_probs = torch.stack([m(x).log_softmax(1) for m in self.members])
        return torch.logsumexp(log_probs, 0) - math.log(len(self.members))


def member_meta(meta: dict) -> dict:
    """The sidecar ``meta`` of an ensemble checkpoint as one of its members would record it: ``arch`` the
    member's architecture, ``arch_args`` the ensemble's input arguments with ``member_args`` (the inverse of how
    :class:`Ensemble` composes them), the other fields unchanged."""
    args = meta["arch_args"]
    return {**meta, "arch": args["member"],
            "arch_args": {**{k: args[k] for k in _INPUT_ARGS if k in args}, **(args.get("member_args") or {})}}


@register_model(ARCH, listed=False)
def ensemble(num_classes, in_channels, input_size, mean, std, member: str | None = None, size: int = 2,
             member_args: dict | None = None) -> nn.Module:
    """``size`` members of architecture ``member`` (built with ``member_args`` besides the input arguments)."""
    if not isinstance(member, str) or member == ARCH:
        raise BackdoorlabError(f"an ensemble needs member=<architecture name> (not {member!r})")
    if isinstance(size, bool) or not isinstance(size, int) or size < 2:
        raise BackdoorlabError(f"an ensemble needs size >= 2 members, got {size!r}")
    if member_args is not None and not isinstance(member_args, dict):
        raise BackdoorlabError(f"an ensemble's member_args must be an object, got {type(member_args).__name__}")
    clash = sorted(set(member_args or {}) & set(_INPUT_ARGS))
    if clash:
        raise BackdoorlabError(f"an ensemble's member_args may not set {', '.join(clash)} "
                               "(the ensemble's own arguments)")
    inputs = dict(num_classes=num_classes, in_channels=in_channels, input_size=input_size, mean=mean, std=std)
    return Ensemble([create_model(member, **inputs, **(member_args or {})) for _ in range(size)])
