"""Runs: what a command does from end to end, for the CLI, the demo and the benchmarks.

A run loads what it is given (data set, checkpoints), calls the library (training, attacks, repairers,
detectors, evasion attacks), evaluates, and writes its outputs with their configuration next to them, every file
atomically. The command line and the benchmarks are thin callers of these functions; no library module imports
this package.

- :mod:`.train`: train a model, clean or with a backdoor planted at training time (``backdoorlab train``);
- :mod:`.defended_training`: train with an evasion defense (``adv-train``, ``distill``);
- :mod:`.attack`: change a trained model's weights (``backdoorlab attack``);
- :mod:`.repair`: repair suspect models with any registered defense (``backdoorlab repair``), the
  mode-connectivity sanitizer included (``backdoorlab sanitize`` is the same run, :mod:`.sanitize` writes its
  path);
- :mod:`.scan`: is a model backdoored (``backdoorlab scan``), with its HTML report (:mod:`.scan_report`);
- :mod:`.detect_poison`: which training images are poisoned (``backdoorlab detect-poison``), with its figures
  (:mod:`.poison_report`);
- :mod:`.robustness`, :mod:`.path_robustness`: evasion robustness of a model, and along a curve;
- :mod:`.transfer`: a student built from a teacher by transfer learning (``backdoorlab transfer``);
- :mod:`.retune`: the retuning attack on a (repaired) model beside a clean control (``backdoorlab retune``);
- :mod:`.federated`: federated learning on Flower with attacking clients and server defenses (``backdoorlab
  federated``), with its figure (:mod:`.federated_plot`).
"""

from .attack import model_attack_run
from .defended_training import defended_train_run
from .detect_poison import detect_poison_run
from .federated import federated_run
from .outputs import check_out_dir
from .path_robustness import path_robustness_run
from .repair import default_repair_options, finetune_run, repair_run, resolve_bn_augment
from .retune import retune_run
from .robustness import robustness_run
from .sanitize import SECOND_ENDPOINT_DIR, sanitize_run, sanitize_warnings
from .scan import scan_run
from .train import train_config, train_defaults, train_run
from .transfer import transfer_run

__all__ = ["SECOND_ENDPOINT_DIR", "check_out_dir", "default_repair_options", "defended_train_run", "detect_poison_run",
           "federated_run", "finetune_run",
           "model_attack_run", "path_robustness_run", "repair_run", "resolve_bn_augment", "retune_run",
           "robustness_run", "sanitize_run", "sanitize_warnings", "scan_run", "train_config", "train_defaults", "train_run",
           "transfer_run"]
