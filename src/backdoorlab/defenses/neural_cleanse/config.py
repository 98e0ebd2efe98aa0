"""Neural Cleanse's settings: our budgeted defaults (:class:`NeuralCleanseConfig`) and the authors' own
(``PAPER_DEFAULTS``), with what each field means; see the package docstring for why ours are shorter."""

from __future__ import annotations

from dataclasses import dataclass

from ...config import Config, above, at_least, interval, option

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

    epochs: int = option(40, check=at_least(1))
    batch_size: int = option(64, check=at_least(1))
    batches_per_epoch: int | None = option(5, check=(lambda v: v is None or v >= 1, "None or >= 1"))
    lr: float = option(0.1, check=above(0))
    init_cost: float = option(1e-3, check=at_least(0))
    cost_multiplier: float = option(1.5, check=above(1))
    patience: int = option(3, check=at_least(1))
    attack_success_threshold: float = option(0.99, check=interval("(0, 1]"))
    early_stop_patience: int = 15
    anomaly_threshold: float = option(2.0, check=above(0))
    labels: list[int] | None = None
    seed: int = 0
