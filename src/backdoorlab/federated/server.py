"""The federation's server: a Flower ``ServerApp`` (the message API, ``@app.main()``) that runs the strategy of
:mod:`.strategies` with Flower's own round loop, ``Strategy.start``.

Its main function (1) asks every node for its client id (a ``query`` message: Flower names nodes by ids it makes
up, the federation by the partition each client holds), (2) builds the strategy for the defense with the seeded
sample of :mod:`.sampling` (attackers put in the sample of an attack round), and (3) hands Flower the initial
model, the number of rounds and a centralised evaluation function, called by ``Strategy.start`` before the first
round and after every round: the server evaluates the global model on the data set's test set (clean accuracy and,
with an attack, its success rate) through the callback ``evaluate`` it is given. What each round did (the rounds'
records, the final model) lands in ``outcome``, a dict the caller reads when the run is over.

Python's and numpy's global generators are seeded at the start (Flower's noise is drawn from numpy's).
"""

from __future__ import annotations

import random
import time
from typing import Callable

import numpy as np

from ..errors import BackdoorlabError
from .client import PARTITION_KEY
from .sampling import round_sample
from .settings import FederationSettings
from .strategies import build_strategy

DISCOVERY_TIMEOUT = 600.0  # seconds to wait for all nodes to connect and answer
ROUND_TIMEOUT = 24 * 3600.0  # seconds a round may wait for its clients


def discover(grid, n_clients: int, timeout: float = DISCOVERY_TIMEOUT) -> dict[int, int]:
    """``{client id: node id}`` for the ``n_clients`` nodes, asked with a ``query`` message each."""
    from flwr.app import Message, MessageType, RecordDict
    deadline = time.time() + timeout
    while len(nodes := list(grid.get_node_ids())) < n_clients:
        if time.time() > deadline:
            raise BackdoorlabError(f"only {len(nodes)} of {n_clients} clients connected in {timeout:.0f} s")
        time.sleep(0.05)
    replies = grid.send_and_receive([Message(RecordDict(), dst_node_id=node, message_type=MessageType.QUERY)
                                     for node in nodes], timeout=timeout)
    node_of: dict[int, int] = {}
    for reply in replies:
        if reply.has_error():
            raise BackdoorlabError(f"node {reply.metadata.src_node_id} did not say which client it is: "
                                   f"{str(reply.error.reason).strip().splitlines()[-1:]}")
        client = int(reply.content["client"][PARTITION_KEY])
        if client in node_of:
            raise BackdoorlabError(f"two nodes claim to be client {client}")
        node_of[client] = reply.metadata.src_node_id
    if sorted(node_of) != list(range(n_clients)):
        missing = sorted(set(range(n_clients)) - set(node_of))
        raise BackdoorlabError(f"clients {missing[:5]} did not answer (or ids out of 0..{n_clients - 1})")
    return node_of


def server_app(settings: FederationSettings, initial_state: dict, evaluate: Callable[[int, dict], dict],
               outcome: dict, on_round: Callable[[dict], None] | None = None):
    """The Flower ``ServerApp`` of the federation ``settings`` starting from the exchanged tensors
    ``initial_state``. ``evaluate(round, state) -> metrics`` measures a global model; ``outcome`` receives
    ``rounds`` (one record per round, round 0 the initial model: the metrics, the clients, the malicious ones,
    update norms, clipping bound, seconds) and ``final`` (the last global state); ``on_round(record)`` is called
    after each round (a progress bar)."""
    from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
    from flwr.serverapp import ServerApp

    app = ServerApp()

    @app.main()
    def main(grid, context) -> None:
        random.seed(settings.seed)
        np.random.seed(settings.seed % 2 ** 32)
        node_of = discover(grid, settings.clients)

        def schedule(server_round: int) -> list[int]:
            forced = settings.attackers if settings.is_attack_round(server_round) else ()
            return round_sample(settings.clients, settings.per_round, server_round, settings.seed, forced)

        strategy = build_strategy(settings, node_of, schedule)
        outcome["rounds"] = []
        clock = {"last": time.time()}

        def evaluate_fn(server_round: int, arrays) -> MetricRecord:
            round_seconds = time.time() - clock["last"]
            tick = time.time()
            metrics = evaluate(server_round, arrays.to_torch_state_dict()) if settings.evaluated(server_round) else {}
            record = {"round": server_round, **metrics, "attack_round": settings.is_attack_round(server_round),
                      **strategy.rounds.get(server_round, {}),
                      "round_seconds": round(round_seconds, 3) if server_round else None,
                      "evaluate_seconds": round(time.time() - tick, 3)}
            outcome["rounds"].append(record)
            if on_round is not None:
                on_round(record)
            clock["last"] = time.time()
            return MetricRecord({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})

        result = strategy.start(grid, ArrayRecord.from_torch_state_dict(initial_state), num_rounds=settings.rounds,
                                timeout=ROUND_TIMEOUT, train_config=ConfigRecord(), evaluate_fn=evaluate_fn)
        outcome["final"] = result.arrays.to_torch_state_dict()

    return app
