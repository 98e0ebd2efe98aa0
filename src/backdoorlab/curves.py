"""Curves in weight space between two models, over parameter dicts (no per-layer curve modules).

A curve maps t in [0, 1] to a parameter dict: ``t = 0`` gives the first endpoint's parameters exactly, ``t = 1``
the second's. The endpoints are frozen; only the control point(s) are trainable. A forward pass at t is
``torch.func.functional_call(base_module, params_at(t) | buffers, x)``, so any ``nn.Module`` works unchanged.

- quadratic Bezier:  theta(t) = (1-t)^2 theta_0 + 2 t (1-t) theta_1 + t^2 theta_2
- polygonal chain:   theta(t) = theta_0 + 2t (theta_1 - theta_0) for t < 1/2, else theta_1 + (2t-1)(theta_2 - theta_1)

Batch-norm running statistics depend on t, so they are not part of the curve: re-estimate them on clean data
for every t that is evaluated or exported (:func:`reestimate_bn`).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call

from .errors import BackdoorlabError, valid_names
from .device import model_device, to_device
from .tensors import channels_last, model_channels_last, to_float

CURVES = ("bezier", "polychain")
INITS = ("random", "midpoint")


def _check_t(t: float) -> float:
    t = float(t)
    if not 0.0 <= t <= 1.0:
        raise BackdoorlabError(f"curve parameter t must lie in [0, 1], got {t}")
    return t


class Curve(nn.Module):
    """A quadratic Bezier curve or a one-bend polygonal chain between two models of the same architecture.

    Args:
        start, end: the endpoints (t = 0 and t = 1); copied, never modified.
        kind: ``"bezier"`` or ``"polychain"``.
        init: control-point initialisation: ``"midpoint"`` of the endpoints, or ``"random"``, which takes the
            parameters of ``init_model`` (a freshly initialised model of the same architecture).
    """

    def __init__(self, start: nn.Module, end: nn.Module, kind: str = "bezier", init: str = "random",
                 init_model: nn.Module | None = None):
        super().__init__()
        if kind not in CURVES:
            raise BackdoorlabError(f"unknown curve {kind!r}; valid: {valid_names(CURVES)}")
        if init not in INITS:
            raise BackdoorlabError(f"unknown control-point init {init!r}; valid: {valid_names(INITS)}")
        p0, p2 = dict(start.named_parameters()), dict(end.named_parameters())
        if p0.keys() != p2.keys() or any(p0[k].shape != p2[k].shape for k in p0):
            raise BackdoorlabError("the two endpoints do not have the same architecture (parameter names or shapes "
                                   "differ)")
        self.kind, self.names = kind, list(p0)
        self.base = copy.deepcopy(start)
        for p in self.base.parameters():
            p.requires_grad_(False)
        # Frozen endpoints: plain dicts of detached copies, so they are neither trained nor in the state dict.
        self.theta0 = {k: v.detach().clone() for k, v in p0.items()}
        self.theta2 = {k: v.detach().clone() for k, v in p2.items()}
        if init == "midpoint":
            mid = {k: (self.theta0[k] + self.theta2[k]) / 2 for k in self.names}
        else:
            if init_model is None:
                raise BackdoorlabError("init='random' needs a freshly initialised model of the same architecture")
            src = dict(init_model.named_parameters())
            if src.keys() != p0.keys():
                raise BackdoorlabError("the control-point init model has a different architecture")
            mid = {k: src[k].detach().clone() for k in self.names}
        self.control = nn.ParameterList([nn.Parameter(mid[k]) for k in self.names])

    def coefficients(self, t: float) -> tuple[float, float, float]:
        """Weights of (theta_0, theta_1, theta_2) at ``t``."""
        t = _check_t(t)
        if self.kind == "bezier":
            return (1 - t) ** 2, 2 * t * (1 - t), t ** 2
        if t < 0.5:
            return 1 - 2 * t, 2 * t, 0.0
        return 0.0, 2 - 2 * t, 2 * t - 1

    def params_at(self, t: float) -> dict[str, torch.Tensor]:
        """The parameter dict at ``t``; differentiable with respect to the control point."""
        a, b, c = self.coefficients(t)
        out = {}
        for k, theta1 in zip(self.names, self.control):
            # exact endpoints at t = 0 and t = 1 (no floating-point mixing with zero-weighted terms)
            if b == 0.0 and c == 0.0:
                out[k] = self.theta0[k]
            elif a == 0.0 and b == 0.0:
                out[k] = self.theta2[k]
            else:
                out[k] = a * self.theta0[k] + b * theta1 + c * self.theta2[k]
        return out

    def forward(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """Logits of the model at ``t`` for float images ``x`` (N, C, H, W) in [0, 1]."""
        buffers = dict(self.base.named_buffers())
        return functional_call(self.base, {**self.params_at(t), **buffers}, (x,))

    @torch.no_grad()
    def model_at(self, t: float, bn_data: torch.Tensor | None = None) -> nn.Module:
        """A standalone copy of the model at ``t``; batch-norm statistics re-estimated on ``bn_data`` if given."""
        model = copy.deepcopy(self.base)
        params = self.params_at(t)
        for k, p in model.named_parameters():
            p.copy_(params[k])
            p.requires_grad_(True)
        if bn_data is not None:
            reestimate_bn(model, bn_data)
        return model.eval()


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def reestimate_bn(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> nn.Module:
    """Reset every batch-norm layer's running statistics and re-estimate them on images ``x`` (N, C, H, W).

    Uses a cumulative average over batches (momentum=None); the original momenta are restored afterwards.
    The model is returned in eval mode.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model.eval()
    if len(x) < 2:
        raise BackdoorlabError("batch-norm re-estimation needs at least 2 images")
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    if x.dim() == 4:
        model_channels_last(model)
    n_batches, device = max(1, round(len(x) / batch_size)), model_device(model)
    for chunk in torch.tensor_split(torch.arange(len(x)), n_batches):
        if len(chunk) > 1:
            model(to_device(channels_last(to_float(x[chunk])), device))
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    return model.eval()


@torch.no_grad()
def model_on_line(start: nn.Module, end: nn.Module, t: float, bn_data: torch.Tensor | None = None) -> nn.Module:
    """The model at ``t`` on the straight line in weight space from ``start`` (t = 0) to ``end`` (t = 1), two
    models of one architecture: every floating-point parameter and buffer is ``(1 - t) start + t end``; integer
    buffers (batch norm's step count) are ``start``'s. With ``bn_data`` (clean images) and a model with batch
    norm, its running statistics are re-estimated there for ``0 < t < 1`` (an interpolated mean and variance
    describe neither endpoint); the endpoints themselves are copies of ``start`` and ``end`` as they are."""
    t = _check_t(t)
    source = start if t < 1.0 else end
    model = copy.deepcopy(source)
    if 0.0 < t < 1.0:
        a, b = start.state_dict(), end.state_dict()
        if a.keys() != b.keys():
            raise BackdoorlabError("the two models of a line have different state dict keys")
        mixed = {k: torch.lerp(v, b[k].to(v.device), t) if v.is_floating_point() else v for k, v in a.items()}
        model.load_state_dict(mixed)
        if bn_data is not None and has_batchnorm(model):
            reestimate_bn(model, bn_data)
    return model.eval()
