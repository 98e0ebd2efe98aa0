"""Weight symmetry: reorder a model's hidden units without changing the function it computes.

The hidden units of a layer (a convolution's output channels, a linear layer's output features) can be put in
any order if everything that reads or scales them follows the same order: the batch norm after the layer, the
next layer's input channels, and every layer tied to them through a residual sum or a flatten. Such a set of
tensor dimensions is a *unit group*. TSC (Peng et al., ICML 2025) builds the one-model sanitizer's second
endpoint from the suspect itself by permuting every group: the same function, far away in weight space.

The groups are derived by tracing the model with torch-pruning's dependency graph (built for structural
pruning, which needs the same coupling), so any ``nn.Module`` made of convolutions, linear layers and
normalisation layers works, residual connections and flattening included. A group that reaches a tensor this
module does not know how to reorder (a grouped convolution, a layer norm over several dimensions, a custom
module with its own parameters) is left as it is and reported in :attr:`UnitGroups.skipped`; every group is also
checked by permuting it alone at random and comparing the model's outputs, so a group that is not a true
symmetry is never used. A model with no group left is refused with the layers that blocked it.

Which permutation: :func:`match_units` correlates the units' activations on clean images (each spatial position
of a feature map is one sample) and solves a linear assignment per group, either pushing the units away from
their own activations (``maximize=False`` on a model against itself: TSC's first stage) or aligning one model's
units with another's (``maximize=True``: its second stage).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torch.func import functional_call

from .device import model_device, to_device, to_host
from .errors import BackdoorlabError
from .tensors import to_float


@dataclass(frozen=True)
class UnitSlot:
    """One tensor dimension that follows a group's unit order: ``module``'s tensors ``tensors`` along ``dim``.
    ``blocks[k]`` lists the positions along ``dim`` that belong to unit ``k`` (one position, or several after a
    flatten: a linear layer reading a flattened feature map has H*W inputs per channel)."""

    module: str
    tensors: tuple[str, ...]
    dim: int
    blocks: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class UnitGroup:
    """Units that must be permuted together. ``probes`` are the layers whose outputs are these units (their
    activations decide the permutation), in the model's order; ``name`` is the first of them."""

    name: str
    size: int
    slots: tuple[UnitSlot, ...]
    probes: tuple[str, ...]


@dataclass
class UnitGroups:
    """Every permutable group of a model, and the groups left as they are with the reason (layer names)."""

    groups: list[UnitGroup]
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def units(self) -> int:
        return sum(g.size for g in self.groups)


def _slot(module: nn.Module, name: str, out: bool, size: int, blocks) -> UnitSlot | None | str:
    """The slot for ``module``'s output (``out``) or input dimension in a group of ``size`` units; None when the
    module holds nothing along it (an activation, a pooling, a reshape), a string saying why when it cannot be
    reordered."""
    kind = type(module).__name__
    if isinstance(module, nn.modules.conv._ConvNd):
        if module.transposed:
            return f"{name} ({kind}: transposed convolutions are not supported)"
        depthwise = module.groups == module.in_channels == module.out_channels
        if module.groups != 1 and not depthwise:
            return f"{name} ({kind} with groups={module.groups})"
        if not out:
            return None if depthwise else UnitSlot(name, ("weight",), 1, blocks)
        return UnitSlot(name, ("weight", "bias") if module.bias is not None else ("weight",), 0, blocks)
    if isinstance(module, nn.Linear):
        if not out:
            return UnitSlot(name, ("weight",), 1, blocks)
        return UnitSlot(name, ("weight", "bias") if module.bias is not None else ("weight",), 0, blocks)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        tensors = tuple(t for t in ("weight", "bias", "running_mean", "running_var")
                        if getattr(module, t, None) is not None)
        return UnitSlot(name, tensors, 0, blocks) if tensors else None
    if isinstance(module, nn.LayerNorm):
        if len(module.normalized_shape) != 1:
            return f"{name} ({kind} over {len(module.normalized_shape)} dimensions)"
        tensors = tuple(t for t in ("weight", "bias") if getattr(module, t, None) is not None)
        return UnitSlot(name, tensors, 0, blocks) if tensors else None
    if isinstance(module, nn.GroupNorm):
        if module.num_groups not in (1, module.num_channels):
            return f"{name} ({kind} with {module.num_groups} groups)"
        return UnitSlot(name, ("weight", "bias"), 0, blocks) if module.affine else None
    if not isinstance(module, nn.Module):
        return f"{name} (a tensor used directly in forward)"
    if next(module.parameters(recurse=False), None) is not None or next(module.buffers(recurse=False), None) is not None:
        return f"{name} ({kind} holds its own parameters)"
    return None


def _blocks(idxs, root_idxs, size: int):
    """Positions per unit from torch-pruning's (index, root index) pairs; None if units own unequal blocks."""
    per_unit = [[] for _ in range(size)]
    for i, r in zip(idxs, root_idxs):
        per_unit[int(r)].append(int(i))
    lengths = {len(b) for b in per_unit}
    if len(lengths) != 1 or 0 in lengths:
        return None
    return tuple(tuple(sorted(b)) for b in per_unit)


def _model_outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if not isinstance(out, torch.Tensor):
        raise BackdoorlabError(f"{type(model).__name__} returns {type(out).__name__}, not a tensor of logits: "
                               "its hidden units cannot be checked")
    return out


def find_unit_groups(model: nn.Module, example: torch.Tensor, check: bool = True, seed: int = 0) -> UnitGroups:
    """Derive ``model``'s unit groups by tracing it on ``example`` images (N, C, H, W), N >= 2.

    With ``check`` (the default), each group is permuted alone at random and kept only if the model's outputs
    do not change (to float tolerance). Raises a one-line error naming the layers when no group can be permuted.
    """
    import torch_pruning as tp  # imported here: tracing is needed only when a permuted endpoint is made

    was_training = model.training
    model.eval()
    x = to_device(to_float(example), model_device(model))
    names = {m: n for n, m in model.named_modules()}
    try:
        with warnings.catch_warnings(), torch.enable_grad():  # torch-pruning traces through autograd
            warnings.simplefilter("ignore")
            graph = tp.DependencyGraph().build_dependency(model, example_inputs=x, verbose=False)
            raw = list(graph.get_all_groups())
    except BackdoorlabError:
        raise
    except Exception as e:  # tracing failed inside the user's forward
        raise BackdoorlabError(f"cannot trace {type(model).__name__} to find its hidden units: "
                               f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    finally:
        model.train(was_training)
    groups, skipped = [], {}
    for group in raw:
        items = list(group.items)
        root = items[0].dep.target.module
        root_name = names.get(root, str(root))
        size = len(items[0].idxs)
        slots, probes, reason = [], [], None
        for item in items:
            module, handler = item.dep.target.module, item.dep.handler
            out = graph.is_out_channel_pruning_fn(handler)
            if item.dep.target.type == tp.ops.OPTYPE.OUTPUT:
                reason = "the model's output"
                break
            if module not in names:  # an operation torch-pruning inserted (add, reshape, concat, ...)
                continue
            name = names[module]
            blocks = _blocks(item.idxs, item.root_idxs, size)
            if blocks is None:
                reason = f"{name} (units own blocks of unequal size)"
                break
            slot = _slot(module, name, out, size, blocks)
            if isinstance(slot, str):
                reason = slot
                break
            if slot is not None and slot not in slots:
                slots.append(slot)
                if out and isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) and name not in probes:
                    probes.append(name)
        if reason is None and size < 2:
            reason = "a single unit"
        if reason is None and not probes:
            reason = "no layer outputs these units"
        if reason is not None:
            skipped[root_name] = reason
            continue
        probes.sort(key=list(names.values()).index)  # in the model's own order: the group is named by its first layer
        groups.append(UnitGroup(name=probes[0], size=size, slots=tuple(slots), probes=tuple(probes)))
    found = UnitGroups(groups, skipped)
    if check:
        found = _checked(model, found, x, seed)
    if not found.groups:
        why = "; ".join(f"{k}: {v}" for k, v in found.skipped.items()) or "it has no hidden layer"
        raise BackdoorlabError(f"no hidden units of {type(model).__name__} can be permuted ({why})")
    return found


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers by qualified name: what a permutation reorders."""
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def permute_state(state: dict[str, torch.Tensor], groups: list[UnitGroup], perms: list[torch.Tensor]
                  ) -> dict[str, torch.Tensor]:
    """A copy of ``state`` with each group's units reordered: new unit ``j`` of group ``g`` is old unit
    ``perms[g][j]``. Tensors no group touches are shared, not copied."""
    out = dict(state)
    for group, perm in zip(groups, perms):
        perm = torch.as_tensor(perm, dtype=torch.long)
        if sorted(perm.tolist()) != list(range(group.size)):
            raise BackdoorlabError(f"not a permutation of the {group.size} units of {group.name}")
        for slot in group.slots:
            blocks = torch.tensor(slot.blocks, dtype=torch.long)  # (units, block)
            for t in slot.tensors:
                key = f"{slot.module}.{t}" if slot.module else t
                tensor = out[key]
                index = torch.arange(tensor.shape[slot.dim])
                index[blocks.flatten()] = blocks[perm].flatten()
                out[key] = tensor.index_select(slot.dim, to_device(index, tensor.device))
    return out


def permuted_copy(model: nn.Module, groups: list[UnitGroup], perms: list[torch.Tensor]) -> nn.Module:
    """A standalone copy of ``model`` with its units reordered (see :func:`permute_state`)."""
    import copy
    new = copy.deepcopy(model)
    state = permute_state(model_state(model), groups, perms)
    with torch.no_grad():
        for key, tensor in model_state(new).items():
            tensor.copy_(state[key])
    return new


def _checked(model: nn.Module, found: UnitGroups, x: torch.Tensor, seed: int) -> UnitGroups:
    """Keep the groups whose random permutation leaves ``model``'s outputs on ``x`` unchanged."""
    g = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    kept, skipped = [], dict(found.skipped)
    try:
        with torch.no_grad():
            state = model_state(model)
            reference = _model_outputs(model, x)
            scale = float(reference.abs().max()) + 1.0
            for group in found.groups:
                perm = torch.randperm(group.size, generator=g)
                out = functional_call(model, permute_state(state, [group], [perm]), (x,))
                if float((out - reference).abs().max()) <= 1e-4 * scale:
                    kept.append(group)
                else:
                    skipped[group.name] = "permuting it changes the model's outputs"
    finally:
        model.train(was_training)
    return UnitGroups(kept, skipped)


class _ActivationStats:
    """Running sums for the correlation between two models' units, per probe layer."""

    def __init__(self):
        self.n = 0
        self.sa = self.sb = self.saa = self.sbb = self.sab = None

    def add(self, a: torch.Tensor, b: torch.Tensor):
        a, b = _samples(a), _samples(b)
        if self.sa is None:
            self.sa, self.sb = a.sum(0), b.sum(0)
            self.saa, self.sbb, self.sab = (a * a).sum(0), (b * b).sum(0), a.T @ b
        else:
            self.sa += a.sum(0)
            self.sb += b.sum(0)
            self.saa += (a * a).sum(0)
            self.sbb += (b * b).sum(0)
            self.sab += a.T @ b
        self.n += len(a)

    def correlation(self) -> torch.Tensor:
        n = self.n
        ma, mb = self.sa / n, self.sb / n
        sd_a = (self.saa / n - ma ** 2).clamp_min(0).sqrt()
        sd_b = (self.sbb / n - mb ** 2).clamp_min(0).sqrt()
        cov = self.sab / n - torch.outer(ma, mb)
        return cov / (torch.outer(sd_a, sd_b) + 1e-6)


def _samples(act: torch.Tensor) -> torch.Tensor:
    """(N, C, ...) activations -> (N * positions, C) float64 samples, one row per image and position."""
    act = act.detach().double()
    if act.dim() > 2:
        act = act.flatten(2).transpose(1, 2).reshape(-1, act.shape[1])
    return act


def unit_correlations(model_a: nn.Module, model_b: nn.Module, groups: list[UnitGroup], images: torch.Tensor,
                      batch_size: int = 250) -> list[torch.Tensor]:
    """Per group, the (size, size) correlation between ``model_a``'s units (rows) and ``model_b``'s (columns)
    over ``images``, averaged over the group's probe layers. Both models are run in eval mode."""
    probes = sorted({p for g in groups for p in g.probes})
    stats = {p: _ActivationStats() for p in probes}
    captured = {}

    def hooks(model, tag):
        mods = dict(model.named_modules())
        return [mods[p].register_forward_hook(lambda m, i, o, p=p: captured.__setitem__((tag, p), o)) for p in probes]

    same = model_a is model_b  # a model against itself: one forward serves both sides
    modes = (model_a.training, model_b.training)
    handles = hooks(model_a, "a") + ([] if same else hooks(model_b, "b"))
    model_a.eval()
    model_b.eval()
    device = model_device(model_a)
    try:
        with torch.no_grad():
            for chunk in torch.split(images, batch_size):
                xb = to_device(to_float(chunk), device)
                model_a(xb)
                if not same:
                    model_b(xb)
                for p in probes:
                    stats[p].add(captured[("a", p)], captured[("a" if same else "b", p)])
                captured.clear()
    finally:
        for h in handles:
            h.remove()
        model_a.train(modes[0])
        model_b.train(modes[1])
    return [torch.stack([stats[p].correlation() for p in g.probes]).mean(0) for g in groups]


def match_units(model_a: nn.Module, model_b: nn.Module, groups: list[UnitGroup], images: torch.Tensor,
                maximize: bool) -> list[torch.Tensor]:
    """Per group, the permutation of ``model_b``'s units that maximises (``maximize=True``: align ``model_b``
    with ``model_a``) or minimises (``False``: push them apart) the summed correlation between unit ``j`` of
    ``model_a`` and the unit of ``model_b`` put in place ``j``. Returns ``perms`` for :func:`permute_state`
    applied to ``model_b``."""
    perms = []
    for corr in unit_correlations(model_a, model_b, groups, images):
        rows, cols = linear_sum_assignment(np.nan_to_num(to_host(corr).numpy()), maximize=maximize)
        perm = torch.empty(len(rows), dtype=torch.long)
        perm[torch.as_tensor(rows)] = torch.as_tensor(cols)
        perms.append(perm)
    return perms
