"""The largest eigenvalue of the input Hessian of the loss, by power iteration on Hessian-vector products.

For an image x with label y, H(x) = d^2 loss(model(x), y) / dx^2, a (D, D) matrix with D = C*H*W pixels. It is
never formed: a Hessian-vector product is the gradient of <grad_x loss, v> (double backward). In eval mode the
images of a batch do not interact, so the Hessian of the summed loss is block-diagonal and one batched power
iteration, with every image's vector normalised on its own, finds every image's top eigenvalue at once.

For a ReLU network with cross-entropy the input Hessian is J^T (diag(p) - p p^T) J (the logits are piecewise
linear in x), positive semi-definite, so the eigenvalue of largest magnitude that power iteration finds is the
largest one. Zhao et al. (ICLR 2020) relate it to the robust loss along a path in weight space.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..device import model_device, to_device, to_host
from ..errors import BackdoorlabError
from ..tensors import to_float
from .base import eval_mode


def _ce_sum(logits, labels):
    return F.cross_entropy(logits, labels, reduction="sum")


def input_hessian_top_eigenvalue(model: nn.Module, x: torch.Tensor, y: torch.Tensor, iters: int = 20,
                                 tol: float = 1e-4, batch_size: int = 250, seed: int = 0, loss_fn=None
                                 ) -> torch.Tensor:
    """Per-image largest eigenvalue (N,) of the Hessian of ``loss_fn(model(x), y)`` with respect to the input.

    Args:
        x: images (N, C, H, W), uint8 or float in [0, 1]; y: labels (N,).
        iters: at most this many power iterations; stops earlier when every image's Rayleigh quotient changed
            by less than ``tol`` (relative).
        loss_fn: ``loss_fn(logits, labels) -> scalar``, summed over the batch (default: cross-entropy, summed;
            the per-image Hessian is then that of the per-image loss).
    """
    if iters < 1:
        raise BackdoorlabError(f"power iteration needs at least 1 iteration, got {iters}")
    loss_fn = loss_fn or _ce_sum
    g = torch.Generator().manual_seed(seed)
    out, device = [], model_device(model)
    with eval_mode(model):  # on the model's device; the power iteration's start drawn on the host
        for i in range(0, len(y), batch_size):
            xb = to_device(to_float(x[i:i + batch_size]), device).detach().requires_grad_(True)
            yb = to_device(y[i:i + batch_size], device)
            grad, = torch.autograd.grad(loss_fn(model(xb), yb), xb, create_graph=True)
            v = to_device(torch.randn(xb.shape, generator=g), device)
            v = v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            eig = torch.zeros(len(yb), device=device)
            for it in range(iters):
                hv, = torch.autograd.grad(grad, xb, grad_outputs=v, retain_graph=True)
                new = (hv * v).flatten(1).sum(1)  # Rayleigh quotient v^T H v with |v| = 1
                norm = hv.flatten(1).norm(dim=1)
                v = torch.where(norm.view(-1, 1, 1, 1) > 0, hv / norm.clamp_min(1e-30).view(-1, 1, 1, 1), v)
                converged = ((new - eig).abs() <= tol * new.abs().clamp_min(1e-12)).all()
                eig = new.detach()
                if it > 0 and converged:
                    break
            out.append(to_host(eig))
    return torch.cat(out) if out else torch.empty(0)
