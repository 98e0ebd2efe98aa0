"""What a malicious client does to its update: naive poisoning, model replacement (boosting), constrain-and-scale.

A client's *update* is its trained model minus the global model it started from, ``X - G``, over the tensors the
federation exchanges (:func:`exchanged`: the floating-point entries of the state dict, parameters and batch-norm
statistics). The three attacks of a participant that poisons its own data:

- **naive poisoning**: train on the poisoned data and send ``X`` as is (boost 1); averaging with K - 1 benign
  updates dilutes it by K;
- **model replacement** (Bagdasaryan, Veit, Hua, Estrin and Shmatikov, AISTATS 2020, "How To Backdoor Federated
  Learning"): send ``G + gamma (X - G)`` with ``gamma = n / eta``. With FedAvg over K equally weighted updates
  (``G' = G + (1/K) sum_i (L_i - G)``, server learning rate eta = 1, n = K), ``G' = X + (1/K) sum_{benign}
  (L_i - G)``: the global model becomes the attacker's, up to the benign clients' deviations, which are small once
  the model has converged (:func:`boost`);
- **constrain-and-scale** (same paper, Algorithm 1 with the norm constraint and no anomaly-loss term): the attacker
  trains within the ball ``||X - G|| <= S / gamma`` (projected after every step, :class:`ProjectToBall`), so that
  the boosted update has norm at most ``S``, the server's clipping bound, and clipping leaves it whole. Plain
  boosting against a clipping server gets its update cut to ``S`` in the direction of an unconstrained ``X``;
  here the whole budget goes to a model that keeps the backdoor within it.

Everything here works on state dicts of CPU tensors; nothing imports Flower.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch

State = Mapping[str, torch.Tensor]


def exchanged(state: State) -> dict[str, torch.Tensor]:
    """The entries of a state dict that clients send and the server averages: the floating-point ones.

    Integer buffers (batch norm's ``num_batches_tracked``) stay out: averaging or scaling a counter means nothing,
    and Flower's clipping scales arrays in place, which numpy refuses for integers."""
    return {k: v for k, v in state.items() if v.is_floating_point()}


def difference(local: State, global_: State) -> dict[str, torch.Tensor]:
    """The update ``local - global_`` over the entries of ``global_``."""
    return {k: local[k].float() - g.float() for k, g in global_.items()}


def norm(update: State) -> float:
    """The L2 norm of an update, all its tensors flattened into one vector."""
    return math.sqrt(sum(float(v.double().pow(2).sum()) for v in update.values()))


def apply(global_: State, update: State, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """``global_ + scale * update``, in the dtypes of ``global_``."""
    return {k: (g.float() + scale * update[k]).to(g.dtype) for k, g in global_.items()}


def boost(global_: State, local: State, gamma: float) -> dict[str, torch.Tensor]:
    """Model replacement: ``G + gamma (X - G)`` (``gamma`` 1: ``X`` itself, naive poisoning)."""
    return apply(global_, difference(local, global_), gamma)


def clip_to(global_: State, local: State, bound: float) -> dict[str, torch.Tensor]:
    """``local`` moved towards ``global_`` so that its update's norm is at most ``bound`` (as a clipping server
    would: ``G + (X - G) min(1, bound / ||X - G||)``)."""
    update = difference(local, global_)
    size = norm(update)
    return apply(global_, update, min(1.0, bound / size) if size > 0 else 1.0)


def auto_boost(per_round: int, server_lr: float = 1.0) -> float:
    """``--boost auto``: ``gamma = n / eta``, the clients per round over the server's learning rate; for FedAvg with
    equal weights (eta = 1) it is K."""
    return per_round / server_lr


class ProjectToBall:
    """Keep a model within ``||X - G|| <= radius`` of the global model ``G`` while it trains: constrain-and-scale's
    projected training.

    A batch hook of :func:`backdoorlab.train.fit` (the loop's hook runs before each step, ``finish`` after the
    last): before every step the model's exchanged tensors are pulled back onto the ball, and once more when
    training ends, so the model it leaves is within it. ``projections`` counts the steps that needed it."""

    def __init__(self, model: torch.nn.Module, global_: State, radius: float):
        self.model, self.radius, self.projections = model, float(radius), 0
        self.global_ = {k: v.detach().clone() for k, v in exchanged(global_).items()}

    @torch.no_grad()
    def project(self) -> None:
        state = self.model.state_dict()  # shares storage with the model's tensors
        update = {k: state[k].float() - g.to(state[k].device).float() for k, g in self.global_.items()}
        size = norm(update)
        if size > self.radius:
            self.projections += 1
            scale = self.radius / size
            for k, g in self.global_.items():
                state[k].copy_(g.to(state[k].device) + scale * update[k])

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor):
        self.project()
        return images, labels

    def finish(self) -> None:
        self.project()
