"""Neural Cleanse (Wang et al., "Neural Cleanse: Identifying and Mitigating Backdoor Attacks in Neural
Networks", IEEE S&P 2019): a model-level detector and its unlearning repairer.

Detection. For every label ``c`` reverse-engineer the smallest trigger that sends clean images to ``c``: a mask
``m`` in [0, 1]^(H x W) and a pattern ``p`` in [0, 1]^(C x H x W), stamped as ``x' = (1 - m) * x + m * p``, found by
minimising ``CE(f(x'), c) + lambda * |m|_1`` on the clean budget with Adam. Both are parametrised through tanh
(``m = tanh(w) / (2 - eps) + 1/2``), as in the authors' code. ``lambda`` follows the paper's adaptive schedule:
it starts at ``init_cost``; after ``patience`` epochs in a row with the attack success rate (on the clean
budget) at or above ``attack_success_threshold`` it is multiplied by ``cost_multiplier``, after ``patience``
epochs below it is divided by ``cost_multiplier ** 1.5``. The kept trigger is the one with the smallest L1
norm among those reaching the threshold (the last one if none did; ``converged`` says which). A backdoor
target needs a much smaller trigger than the other labels: with the mask norms ``L1_c``, the anomaly index of
label ``c`` is ``|L1_c - median| / (1.4826 * MAD)``, counted only for labels below the median. The model is
flagged when the smallest label's index exceeds ``anomaly_threshold`` (2, the paper's), and that label is the
suspected target. Detection never sees the true trigger.

Budget. The authors' defaults (``PAPER_DEFAULTS``) run 1,000 epochs (early-stopped) over 1,000 images in
batches of 32 per label: hours on a CPU. Ours (``NeuralCleanseConfig()``) define an *epoch* as
``batches_per_epoch`` mini-batches (default 5 batches of 64 images) and run ``epochs`` (default 40) of them per
label, 200 Adam steps, with the same schedule and a patience of 3 of these short epochs (paper: 5 full passes),
early stop after 15: about a minute for MNIST ``small-cnn`` and 10 labels on one CPU thread. On our MNIST models
the anomaly indices this gives are within a few tenths of those of 20 epochs of 10 batches with patience 5.

Repair (:func:`neural_cleanse_unlearn`). Fine-tune on the clean budget where a fixed ``fraction`` (paper: 20%) of
the images carry the reversed trigger of the flagged label(s) and keep their true labels.

Modules: ``config`` (settings), ``trigger`` (a reversed trigger and how a model responds to it), ``reverse``
(reverse-engineering one label's trigger), ``detection`` (the detector), ``growth`` (growing a reversed
trigger, not in the paper), ``unlearning`` (the repairer). Their public names are importable from here.
"""

from .config import PAPER_DEFAULTS, NeuralCleanseConfig
from .trigger import ReversedTrigger, trigger_gaps, trigger_success
from .reverse import reverse_trigger
from ...png import save_png
from .detection import MAD_CONSISTENCY, NeuralCleanseResult, anomaly_indices, neural_cleanse
from .growth import complete_trigger, grow_trigger
from .unlearning import UNLEARN_STAMPING, UnlearningConfig, nc_unlearning, neural_cleanse_unlearn

__all__ = ["PAPER_DEFAULTS", "NeuralCleanseConfig", "ReversedTrigger", "trigger_gaps", "trigger_success",
           "reverse_trigger", "save_png", "MAD_CONSISTENCY", "NeuralCleanseResult", "anomaly_indices",
           "neural_cleanse", "complete_trigger", "grow_trigger", "UNLEARN_STAMPING", "UnlearningConfig",
           "nc_unlearning", "neural_cleanse_unlearn"]
