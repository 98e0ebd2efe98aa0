"""Training-set level detectors: find the poisoned samples of a training set from a model trained on it.

What the two, :mod:`.activation_clustering` and :mod:`.spectral_signatures`, share: the penultimate features
they work on (:func:`penultimate_features`), their checked inputs and their result (:class:`PoisonDetection`),
and how a result is scored against the truth.

Scores are comparable across labels (divided by the label's threshold, so > 1 means flagged where the rule
is a threshold), which makes one ROC AUC over the whole training set meaningful. :func:`detection_metrics`
gives precision, recall and AUC against the recorded poisoned indices; :func:`poisoned_training_set` rebuilds
them from a checkpoint's provenance. Neither detector sees the trigger or the poisoned indices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import BackdoorlabError
from ..device import model_device, to_device, to_host
from ..tensors import to_float


@torch.no_grad()
def penultimate_features(model: nn.Module, x: torch.Tensor, batch_size: int = 500, progress: bool = False
                         ) -> torch.Tensor:
    """Penultimate-layer activations (N, D) of uint8 or float images ``x`` (N, C, H, W), model in eval mode.

    Uses ``model.forward_features`` when the model has it (every backdoorlab architecture); otherwise the input
    of the model's last ``nn.Linear`` module, caught by a forward hook."""
    was_training = model.training
    model.eval()
    out, device = [], model_device(model)
    if hasattr(model, "forward_features"):
        run = model.forward_features
        handle = None
    else:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise BackdoorlabError("the model has neither forward_features nor an nn.Linear layer to take "
                                   "penultimate features from")
        caught = []
        handle = linears[-1].register_forward_hook(lambda mod, inp, outp: caught.append(inp[0].flatten(1)))

        def run(xb):
            caught.clear()
            model(xb)
            return caught[-1]
    try:
        for i in tqdm(range(0, len(x), batch_size), desc="features", disable=not progress, leave=False):
            out.append(to_host(run(to_device(to_float(x[i:i + batch_size]), device)).flatten(1).float()))
    finally:
        if handle is not None:
            handle.remove()
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


@dataclass
class PoisonDetection:
    """Per-sample scores (N,) (larger = more suspicious; > 1 means flagged under threshold rules), the flagged
    indices, per-label details, and warnings: one line each where the detector's evidence disagrees with its
    verdict (a label left unflagged that looks poisoned by another measure)."""

    method: str
    scores: np.ndarray
    flagged: np.ndarray  # sorted indices into the training set
    per_label: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    seconds: float = 0.0
    warnings: list = field(default_factory=list)

    def summary(self) -> dict:
        return {"method": self.method, "flagged": int(len(self.flagged)), "config": self.config,
                "per_label": self.per_label, "warnings": list(self.warnings), "seconds": round(self.seconds, 2)}


def _check(features, labels, clean_features, clean_labels):
    f = torch.as_tensor(features).float()
    y = torch.as_tensor(labels).long()
    if f.dim() != 2 or y.dim() != 1 or len(f) != len(y) or len(y) == 0:
        raise BackdoorlabError(f"features must be (N, D) and labels (N,) with N > 0, got {tuple(f.shape)} and "
                               f"{tuple(y.shape)}")
    if (clean_features is None) != (clean_labels is None):
        raise BackdoorlabError("give both clean features and clean labels, or neither")
    if clean_features is not None:
        cf = torch.as_tensor(clean_features).float()
        cy = torch.as_tensor(clean_labels).long()
        if cf.dim() != 2 or cf.shape[1] != f.shape[1] or len(cf) != len(cy):
            raise BackdoorlabError(f"clean features must be (M, {f.shape[1]}) with M labels, got {tuple(cf.shape)}")
        return f.numpy().astype(np.float64), y.numpy(), cf.numpy().astype(np.float64), cy.numpy()
    return f.numpy().astype(np.float64), y.numpy(), None, None


def roc_auc(scores, positive) -> float:
    """ROC AUC of ``scores`` (larger = positive) for boolean ``positive`` (ties count half); nan when one class
    is empty."""
    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(pos, s))


def detection_metrics(detection: PoisonDetection, poisoned_indices, n: int | None = None) -> dict:
    """Precision, recall (and F1) of ``detection.flagged`` and ROC AUC of ``detection.scores`` against the true
    ``poisoned_indices`` of a training set of ``n`` samples (default: the number of scores)."""
    n = len(detection.scores) if n is None else n
    truth = np.zeros(n, dtype=bool)
    truth[np.asarray(poisoned_indices, dtype=np.int64)] = True
    pred = np.zeros(n, dtype=bool)
    pred[detection.flagged] = True
    tp = int((truth & pred).sum())
    precision = tp / pred.sum() if pred.sum() else float("nan")
    recall = tp / truth.sum() if truth.sum() else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "auc": roc_auc(detection.scores, truth),
            "flagged": int(pred.sum()), "poisoned": int(truth.sum()), "true_positives": tp}


def records_poisoning(meta: dict) -> bool:
    """Whether a checkpoint's sidecar records a data-poisoning attack with its poison seed, the provenance
    :func:`poisoned_training_set` rebuilds the training set from."""
    from ..models.sidecar import planted_attack, provenance

    return "poison_rate" in (planted_attack(meta) or {}) and "poison_seed" in provenance(meta)


def poisoned_training_set(dataset, meta: dict):
    """Rebuild the poisoned training set a checkpoint was trained on from its provenance (attack + poison seed):
    ``budget.training_part`` with the checkpoint's held-out pool, poisoned as in ``runs.train_run``.
    Returns a ``PoisonedData`` (x, y, poisoned indices); raises when the checkpoint records no data poisoning."""
    from ..attacks import PoisoningAttack, backdoor_from_dict
    from ..budget import training_part
    from ..models.sidecar import holdout_size, provenance

    prov = provenance(meta)
    attack = prov.get("attack")
    if not records_poisoning(meta):
        name = (attack or {}).get("name", "none")
        raise BackdoorlabError(f"the checkpoint records no data-poisoning attack (attack: {name}); training-set "
                               "detectors need the poisoned training set")
    holdout = holdout_size(meta, dataset.name)
    x, y = training_part(dataset, holdout)
    atk = PoisoningAttack(attack.get("name", "poisoning"), backdoor_from_dict(attack), attack["poison_rate"],
                          attack.get("stamp", "data"))
    data = atk.poison(x, y, dataset.num_classes, seed=int(prov["poison_seed"]))
    if "poisoned" in prov and int(prov["poisoned"]) != len(data.poisoned):
        raise BackdoorlabError(f"rebuilt {len(data.poisoned)} poisoned images but the checkpoint records "
                               f"{prov['poisoned']}")
    return data
