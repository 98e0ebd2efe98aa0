"""Neural Cleanse's settings: our budgeted defaults (:class:`NeuralCleanseConfig`) and the authors' own
(``PAPER_DEFAULTS``), with what each field means; see the package docstring for why ours are shorter."""

from __future__ import annotations

from dataclasses import dataclass

from ...config import Config
from ...errors import BackdoorlabError

# The authors' settings (bolunwang/backdoor, gtsrb_visualize_example.py / visualizer.py), for reference.
PAPER_DEFAULTS = dict(epochs=1000, batch_size=32, batches_per_epoch=None, lr=0.1, init_cost=1e-3,
                      cost_multiplier=1.5, patience=5, attack_success_threshold=0.99, early_stop_patience=25,
                      anomaly_threshold=2.0)

@dataclass
class NeuralCleanseConfig(Config):
    """Hyperparameters of Neural Cleanse's trigger reverse engineering (see the module docstring).

    ``epochs``: optimisation epochs per label (paper: 1,000, early-stopped). ``batches_per_epoch``: mini-batches
    per epoch; None = one pass over the clean images (paper). ``batch_size``: images per mini-batch (paper: 32).
    ``lr``: Adam learning rate, betas (0.5, 0.9) as in the paper. ``init_cost``: initial lambda (paper 1e-3).
    ``cost_multiplier``: lambda is multiplied by it after ``patience`` epochs at or above
    ``attack_success_threshold`` and divided by its 1.5th power after ``patience`` epochs below (paper 1.5, 5,
    0.99; ours: 3 of our shorter epochs). ``early_stop_patience``: stop after this many epochs without a 1%
    smaller best norm, once lambda has gone both up and down (paper: 5 * patience); 0 disables it. ``anomaly_threshold``: flag above this
    anomaly index (paper 2). ``labels``: restrict the search to these labels (default all).
    """

    epochs: int = 40
    batch_size: int = 64
    batches_per_epoch: int | None = 5
    lr: float = 0.1
    init_cost: float = 1e-3
    cost_multiplier: float = 1.5
    patience: int = 3
    attack_success_threshold: float = 0.99
    early_stop_patience: int = 15
    anomaly_threshold: float = 2.0
    labels: list[int] | None = None
    seed: int = 0

    def validate(self):
        if self.epochs < 1 or self.batch_size < 1 or (self.batches_per_epoch is not None and self.batches_per_epoch < 1):
            raise BackdoorlabError("Neural Cleanse needs epochs, batch size and batches per epoch >= 1")
        if self.lr <= 0 or self.init_cost < 0 or self.cost_multiplier <= 1 or self.patience < 1:
            raise BackdoorlabError("Neural Cleanse needs lr > 0, init cost >= 0, cost multiplier > 1, patience >= 1")
        if not 0 < self.attack_success_threshold <= 1:
            raise BackdoorlabError(f"attack success threshold must lie in (0, 1], got {self.attack_success_threshold}")
        if self.anomaly_threshold <= 0:
            raise BackdoorlabError(f"anomaly threshold must be > 0, got {self.anomaly_threshold}")
