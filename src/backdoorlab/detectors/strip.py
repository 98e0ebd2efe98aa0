"""STRIP (Gao et al., "STRIP: A Defence Against Trojan Attacks on Deep Neural Networks", ACSAC 2019): an
input-level detector.

Superimpose ``n_overlays`` randomly drawn clean images on an input and look at the entropy of the model's
predictions: a trojaned input keeps being classified as the target whatever is superimposed (low entropy), a
clean one does not. The score of an input is the mean over its perturbed copies of the Shannon entropy (bits)
of the softmax output, the paper's normalised entropy ``H = (1/N) sum_n H_n``. Superimposition:
``mode="add"`` (the authors' code: ``cv2.addWeighted(x, 1, overlay, 1, 0)``, a saturating sum, i.e.
``clip(x + overlay, 0, 1)``) or ``mode="blend"`` (``(1 - alpha) x + alpha * overlay``).

The threshold comes from clean data only: the ``frr`` quantile (default 1%) of the clean images' entropies,
so that a fraction ``frr`` of clean inputs is rejected (the paper fits a normal distribution to the clean
entropies; we take the empirical quantile). Inputs with entropy below it are flagged as trojaned.
:meth:`StripDetector.evaluate` reports the false-rejection rate on held-out clean inputs, the false-acceptance
rate / detection rate on triggered inputs (when a backdoor is known, for evaluation only) and the ROC AUC.

Batching: each input expands to ``n_overlays`` overlaid images, so a forward pass holds ``batch_size *
n_overlays`` images. By default (``batch_size=None``) the number of inputs per pass is sized for the model's
device (:func:`strip_batch_size`): about :data:`CPU_IMAGES_PER_PASS` overlaid images on a CPU, where the former
fixed 20 inputs (2,000-image passes) ran slower per image than passes of one or two inputs (issue 37), and
about :data:`ACCELERATOR_IMAGES_PER_PASS` on a GPU, which needs large passes to be kept busy. The overlays of
every input are drawn in one seeded draw before batching, so the entropies do not depend on the batch size
(up to float rounding).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..config import Config
from ..errors import BackdoorlabError, valid_names
from ..device import model_device, to_device, to_host
from ..tensors import to_float
from . import DETECTORS

STRIP_MODES = ("add", "blend")
CPU_IMAGES_PER_PASS = 128  # overlaid images per forward pass on a CPU: about one input of 100 overlays
ACCELERATOR_IMAGES_PER_PASS = 4096  # on a GPU (CUDA, MPS)


@dataclass
class StripConfig(Config):
    """``n_overlays``: clean images superimposed per input (paper: 100). ``mode``/``alpha``: see the module
    docstring. ``frr``: false-rejection rate the clean-data threshold is set for (default 1%). ``batch_size``:
    inputs per forward batch, each expanding to ``n_overlays`` images; None (the default) sizes it for the
    model's device (:func:`strip_batch_size`). The batch size changes the speed and memory, not the
    entropies."""

    n_overlays: int = 100
    mode: str = "add"
    alpha: float = 0.5
    frr: float = 0.01
    batch_size: int | None = None
    seed: int = 0

    def validate(self):
        if self.mode not in STRIP_MODES:
            raise BackdoorlabError(f"unknown STRIP superimposition {self.mode!r}; valid: {valid_names(STRIP_MODES)}")
        if self.n_overlays < 1:
            raise BackdoorlabError(f"STRIP needs n_overlays >= 1, got {self.n_overlays}")
        if self.batch_size is not None and self.batch_size < 1:
            raise BackdoorlabError(f"STRIP needs batch_size >= 1 (or None: sized for the device), got "
                                   f"{self.batch_size}")
        if not 0 < self.alpha <= 1:
            raise BackdoorlabError(f"STRIP blend alpha must lie in (0, 1], got {self.alpha}")
        if not 0 < self.frr < 1:
            raise BackdoorlabError(f"STRIP false-rejection rate must lie in (0, 1), got {self.frr}")


def strip_batch_size(cfg: StripConfig, device: torch.device) -> int:
    """Inputs per forward pass: ``cfg.batch_size`` when set; else as many as make about
    :data:`CPU_IMAGES_PER_PASS` overlaid images on a CPU (:data:`ACCELERATOR_IMAGES_PER_PASS` on any other
    device), at least one input."""
    if cfg.batch_size is not None:
        return cfg.batch_size
    per_pass = CPU_IMAGES_PER_PASS if torch.device(device).type == "cpu" else ACCELERATOR_IMAGES_PER_PASS
    return max(1, per_pass // cfg.n_overlays)


@torch.no_grad()
def strip_entropy(model: nn.Module, x: torch.Tensor, overlays: torch.Tensor, cfg: StripConfig | None = None,
                  progress: bool = False) -> np.ndarray:
    """STRIP entropy (bits, mean over ``cfg.n_overlays`` superimpositions) of every image in ``x`` (uint8 or float
    (N, C, H, W)); overlays are drawn (seeded, with replacement) from the clean images ``overlays``, all in one
    draw before batching, so the batch size (:func:`strip_batch_size`) does not change which overlays an input
    gets."""
    cfg = cfg or StripConfig()
    if x.dim() != 4 or overlays.dim() != 4 or x.shape[1:] != overlays.shape[1:]:
        raise BackdoorlabError(f"STRIP needs inputs and overlays of the same shape (N, C, H, W), got "
                               f"{tuple(x.shape)} and {tuple(overlays.shape)}")
    if len(overlays) == 0:
        raise BackdoorlabError("STRIP needs at least one clean overlay image")
    was_training, device = model.training, model_device(model)
    model.eval()
    g = torch.Generator().manual_seed(cfg.seed)
    ov = to_float(overlays)
    picks = torch.randint(len(ov), (len(x), cfg.n_overlays), generator=g)
    batch_size = strip_batch_size(cfg, device)
    out = []
    try:
        for i in tqdm(range(0, len(x), batch_size), desc="strip", disable=not progress, leave=False):
            xb = to_float(x[i:i + batch_size])
            b = len(xb)
            o = ov[picks[i:i + batch_size]]  # (b, n, C, H, W)
            base = xb[:, None]
            mixed = (base + o).clamp_(0, 1) if cfg.mode == "add" else (1 - cfg.alpha) * base + cfg.alpha * o
            logp = to_host(F.log_softmax(model(to_device(mixed.flatten(0, 1), device)).float(), 1))
            ent = -(logp.exp() * logp).sum(1) / np.log(2)
            out.append(ent.view(b, cfg.n_overlays).mean(1))
    finally:
        model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros(0)


def _auc(neg_scores, pos_scores) -> float:
    from sklearn.metrics import roc_auc_score

    if len(neg_scores) == 0 or len(pos_scores) == 0:
        return float("nan")
    truth = np.r_[np.zeros(len(neg_scores)), np.ones(len(pos_scores))]
    return float(roc_auc_score(truth, np.r_[neg_scores, pos_scores]))


@DETECTORS.register("strip", StripConfig,
                    "STRIP (Gao et al. 2019): an input whose predictions stay certain under superimposed clean "
                    "images carries a trigger.", level="input")
class StripDetector:
    """STRIP with a threshold fitted on clean data.

    >>> det = StripDetector(model, budget_x).fit(budget_x)   # overlays and calibration from the clean budget
    >>> det.predict(x)                                        # True = flagged as trojaned (entropy < threshold)
    """

    def __init__(self, model: nn.Module, overlays: torch.Tensor, cfg: StripConfig | None = None,
                 progress: bool = True):
        self.model, self.overlays, self.cfg, self.progress = model, overlays, cfg or StripConfig(), progress
        self.threshold: float | None = None
        self.clean_entropy: np.ndarray | None = None
        self.seconds = 0.0

    def score(self, x: torch.Tensor) -> np.ndarray:
        """Entropy (bits) of every input; low = suspicious."""
        return strip_entropy(self.model, x, self.overlays, self.cfg, self.progress)

    def fit(self, clean_x: torch.Tensor) -> "StripDetector":
        """Set the threshold at the ``cfg.frr`` quantile of the entropies of the clean images ``clean_x``."""
        if len(clean_x) < 2:
            raise BackdoorlabError(f"STRIP needs at least 2 clean images to set its threshold, got {len(clean_x)}")
        tick = time.time()
        self.clean_entropy = self.score(clean_x)
        self.threshold = float(np.quantile(self.clean_entropy, self.cfg.frr))
        self.seconds += time.time() - tick
        return self

    def predict(self, x: torch.Tensor, scores: np.ndarray | None = None) -> np.ndarray:
        """Boolean (N,): True where the input is flagged as trojaned."""
        if self.threshold is None:
            raise BackdoorlabError("STRIP detector is not fitted: call fit(clean_images) first")
        s = self.score(x) if scores is None else scores
        return s < self.threshold

    def evaluate(self, clean_x: torch.Tensor, triggered_x: torch.Tensor | None = None) -> dict:
        """FRR on held-out clean inputs and, with ``triggered_x``, FAR (triggered inputs not flagged), detection
        rate (1 - FAR) and ROC AUC of the negated entropy (triggered = positive)."""
        tick = time.time()
        clean = self.score(clean_x)
        out = {"threshold": self.threshold, "frr_target": self.cfg.frr,
               "frr": float(np.mean(self.predict(clean_x, clean))), "n_clean": len(clean),
               "clean_entropy_mean": float(clean.mean())}
        if triggered_x is not None and len(triggered_x):
            trig = self.score(triggered_x)
            flagged = self.predict(triggered_x, trig)
            out.update(far=float(1 - flagged.mean()), detection_rate=float(flagged.mean()), n_triggered=len(trig),
                       triggered_entropy_mean=float(trig.mean()), auc=_auc(-clean, -trig))
        self.seconds += time.time() - tick
        return out

    def summary(self) -> dict:
        """Threshold and clean-entropy statistics of the fit (JSON-able)."""
        if self.clean_entropy is None:
            return {"fitted": False}
        e = self.clean_entropy
        return {"threshold": self.threshold, "frr_target": self.cfg.frr, "n_clean": len(e),
                "clean_entropy": {"mean": float(e.mean()), "std": float(e.std()), "min": float(e.min()),
                                  "median": float(np.median(e)), "max": float(e.max())},
                "config": self.cfg.to_dict(), "seconds": round(self.seconds, 2)}
