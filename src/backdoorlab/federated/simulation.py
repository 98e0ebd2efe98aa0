"""Run a federation on this machine with Flower's simulation engine (virtual nodes as Ray actors).

:func:`run_federation` builds the ``ServerApp`` (:mod:`.server`) and the ``ClientApp`` (:mod:`.client`) and hands
them to ``flwr.simulation.run_simulation``, which starts a local Ray instance (never one already running on the
machine: ``address="local"``), runs ``workers`` client actors of one CPU each, and stops Ray at the end. The same
two apps are what a deployment runs (a SuperLink, one SuperNode per client with its ``partition-id``).

Flower 1.42 marks ``run_simulation`` deprecated in favour of the ``flwr run`` command line, which needs an app
project and a SuperLink process; the in-process call is the one a library command can make, so it is used here
and Flower's deprecation notice is kept out of the output (Flower's log is shown only with ``verbose``).
Flower's telemetry is off unless ``FLWR_TELEMETRY_ENABLED`` says otherwise.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os

import torch

from ..errors import BackdoorlabError
from ..metrics import evaluate as evaluate_model
from .attacks import exchanged
from .settings import FederationSettings

INSTALL = "pip install 'backdoorlab[federated]'"


def flower():
    """Import Flower's simulation (and Ray); a one-line error naming the extra when either is missing."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    try:
        import flwr.simulation
        import ray  # noqa: F401  (the simulation engine)
    except ImportError as e:
        raise BackdoorlabError(f"backdoorlab federated runs on Flower's simulation engine, which is not installed "
                               f"({e.name or 'flwr'} is missing): {INSTALL}") from None
    return flwr.simulation


@contextlib.contextmanager
def _flower_log(verbose: bool):
    """Flower's logger at WARNING (verbose) or ERROR for the run, restored afterwards."""
    logger = logging.getLogger("flwr")
    level = logger.level
    logger.setLevel(logging.WARNING if verbose else logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def run_federation(settings: FederationSettings, initial: torch.nn.Module, dataset, backdoor=None,
                   progress: bool = True, verbose: bool = False) -> tuple[torch.nn.Module, list[dict]]:
    """Run the federation ``settings`` from the model ``initial`` (not modified); returns (the final global model,
    one record per round: round 0 is ``initial``; ``clean_accuracy`` and, with ``backdoor``,
    ``attack_success_rate`` on ``dataset``'s test set, which clients, which malicious, update norms, seconds)."""
    settings.check()
    simulation = flower()
    from tqdm.auto import tqdm

    from .client import client_app
    from .server import server_app

    model = copy.deepcopy(initial).to("cpu").eval()
    initial_state = exchanged(model.state_dict())

    def evaluate(server_round: int, state: dict) -> dict:
        model.load_state_dict(state, strict=False)
        m = evaluate_model(model, dataset.test_x, dataset.test_y, backdoor, dataset.num_classes)
        return {"clean_accuracy": m["clean_accuracy"], "attack_success_rate": m.get("attack_success_rate")}

    bar = tqdm(total=settings.rounds, desc="federated", unit="round", disable=not progress, dynamic_ncols=True)

    def on_round(record: dict) -> None:
        if record["round"]:
            bar.update(1)
            if "clean_accuracy" not in record:  # a round the server did not evaluate (--evaluate-every)
                return
            asr = record.get("attack_success_rate")
            bar.set_postfix(ca=f"{record['clean_accuracy']:.3f}", **({} if asr is None else {"asr": f"{asr:.3f}"}))

    outcome: dict = {}
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"address": "local", "num_cpus": settings.workers, "num_gpus": 0,
                             "include_dashboard": False, "log_to_driver": verbose,
                             "logging_level": logging.WARNING if verbose else logging.ERROR}}
    try:
        with _flower_log(verbose):
            simulation.run_simulation(server_app=server_app(settings, initial_state, evaluate, outcome, on_round),
                                      client_app=client_app(settings), num_supernodes=settings.clients,
                                      backend_config=backend, verbose_logging=False)
    finally:
        bar.close()
    if "final" not in outcome:
        raise BackdoorlabError("the federation ended without a global model (see Flower's log: rerun with --verbose)")
    model.load_state_dict(outcome["final"], strict=False)
    return model, outcome["rounds"]
