"""The server's strategy for each ``--defense``, built from Flower's own strategies (the message API,
``flwr.serverapp.strategy``).

- ``none``: ``FedAvg`` (McMahan et al., 2017), every update weighted equally;
- ``clip``: ``DifferentialPrivacyServerSideFixedClipping`` around ``FedAvg`` with no noise: every update
  ``L_i - G`` is clipped to L2 norm ``S`` before averaging, the norm-bounding defense of Sun, Kairouz, Suresh and
  McMahan (2019), "Can You Really Backdoor Federated Learning?";
- ``clip-noise``: the same with Gaussian noise of standard deviation ``sigma`` (``--noise``) added to every
  coordinate of the averaged model, their "weak differential privacy" (Flower's noise multiplier is set to
  ``sigma K / S`` so that its ``multiplier S / K`` is ``sigma``);
- ``krum``: ``Krum`` (Blanchard et al., NeurIPS 2017): the one update closest to its K - f - 2 nearest others,
  with f (``--krum-malicious``) the attackers by default;
- ``trimmed-mean``: ``FedTrimmedAvg`` (Yin et al., ICML 2018): per coordinate, the mean after cutting
  ``int(beta K)`` values from each end;
- ``median``: ``FedMedian`` (same paper): the coordinate-wise median.

``--clip-norm auto``: the bound is the ``quantile`` (default 0.5, the median) of the norms of the updates the
server receives in the first round, measured by the server before it clips anything; from then on it is fixed.

Three pieces are ours, each around Flower's rather than instead of it. :class:`SeededSampling` replaces the
strategies' draw of nodes (Python's global ``random`` over node ids made up per run) by :mod:`.sampling`'s
seeded draw over client ids. The clipping wrapper measures the ``auto`` bound and tells the clients the bound in
the round's config (``clip-norm``), as Bagdasaryan et al.'s constrain-and-scale attacker is assumed to know it.
:class:`Recorded`, outermost, refuses a round in which a client failed (Flower would average the others
silently), puts the replies in client order (so that sums are made in one order and a run repeats exactly), and
records per round which clients trained, which were malicious, and the norm of every update.

Flower is imported inside :func:`build_strategy` only (the classes are made on first use).
"""

from __future__ import annotations

import functools
import time
from types import SimpleNamespace
from typing import Callable

import numpy as np

from ..errors import BackdoorlabError

DEFENSES = {
    "none": "FedAvg, equal weights (McMahan et al. 2017)",
    "clip": "clip every update to L2 norm --clip-norm before FedAvg (Sun et al. 2019)",
    "clip-noise": "clip, then add Gaussian noise of standard deviation --noise to the average (Sun et al. 2019)",
    "krum": "Krum: keep the one update nearest its neighbours (Blanchard et al. 2017)",
    "trimmed-mean": "coordinate-wise trimmed mean, --trim-beta cut from each end (Yin et al. 2018)",
    "median": "coordinate-wise median (Yin et al. 2018)",
}
CLIP_KEY = "clip-norm"  # the train config key that tells clients the server's clipping bound (0: none)


def update_norms(replies, arrays) -> list[float]:
    """The L2 norm of each reply's update ``L_i - G`` (``arrays``: the global ``ArrayRecord`` G sent out)."""
    g = arrays.to_numpy_ndarrays()
    out = []
    for msg in replies:
        record = next(iter(msg.content.array_records.values()))
        out.append(float(np.sqrt(sum(float(np.sum((np.asarray(a, dtype=np.float64) - b) ** 2))
                                     for a, b in zip(record.to_numpy_ndarrays(), g, strict=True)))))
    return out


def _error_line(reason: str) -> str:
    lines = [line.strip() for line in str(reason).strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no reason given"


@functools.lru_cache(maxsize=1)
def _classes() -> SimpleNamespace:
    """Flower's strategies with our pieces mixed in, made once (importing Flower)."""
    from flwr.app import MessageType, RecordDict
    from flwr.serverapp.strategy import (DifferentialPrivacyServerSideFixedClipping, FedAvg, FedMedian,
                                         FedTrimmedAvg, Krum, Strategy)

    class SeededSampling:
        """Mixin for a FedAvg-derived strategy: the round's clients come from ``self.schedule(round)`` (client
        ids), sent to their nodes (``self.node_of``)."""

        schedule: Callable[[int], list[int]]
        node_of: dict[int, int]

        def configure_train(self, server_round, arrays, config, grid):
            clients = self.schedule(server_round)
            config["server-round"] = server_round
            record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
            return self._construct_messages(record, [self.node_of[c] for c in clients], MessageType.TRAIN)

    seeded = {base: type(f"Seeded{base.__name__}", (SeededSampling, base), {})
              for base in (FedAvg, Krum, FedTrimmedAvg, FedMedian)}

    class NormClipping(DifferentialPrivacyServerSideFixedClipping):
        """Flower's server-side fixed clipping with the bound measured in the first round (``auto``), the noise
        given as its standard deviation, and the bound announced to clients in the train config."""

        def __init__(self, strategy, clip_norm: float | None, noise_std: float, per_round: int,
                     quantile: float = 0.5):
            super().__init__(strategy, noise_multiplier=0.0, clipping_norm=clip_norm or 1.0,
                             num_sampled_clients=per_round)
            self.auto, self.quantile, self.noise_std = clip_norm is None, quantile, noise_std
            self.measured = clip_norm is not None
            self._set_bound(self.clipping_norm)

        def _set_bound(self, bound: float) -> None:
            if not bound > 0:
                raise BackdoorlabError("--clip-norm auto measured a bound of 0 (no client changed the model in the "
                                       "first round); give --clip-norm a number")
            self.clipping_norm = bound
            self.noise_multiplier = self.noise_std * self.num_sampled_clients / bound

        def configure_train(self, server_round, arrays, config, grid):
            config[CLIP_KEY] = float(self.clipping_norm) if self.measured else 0.0
            return super().configure_train(server_round, arrays, config, grid)

        def aggregate_train(self, server_round, replies):
            replies = list(replies)
            if not self.measured:
                self._set_bound(float(np.quantile(update_norms(replies, self.current_arrays), self.quantile)))
                self.measured = True
            return super().aggregate_train(server_round, replies)

    class Recorded(Strategy):
        """The outermost strategy: fails a round with a failed client, orders replies by client, records."""

        def __init__(self, inner, client_of: dict[int, int], per_round: int):
            self.inner, self.client_of, self.per_round = inner, client_of, per_round
            self.rounds: dict[int, dict] = {}
            self._arrays = None

        def configure_train(self, server_round, arrays, config, grid):
            self._arrays = arrays
            return self.inner.configure_train(server_round, arrays, config, grid)

        def aggregate_train(self, server_round, replies):
            replies = list(replies)
            for msg in replies:
                if msg.has_error():
                    client = self.client_of.get(msg.metadata.src_node_id, "?")
                    raise BackdoorlabError(f"client {client} failed in round {server_round}: "
                                           f"{_error_line(msg.error.reason)}")
            if len(replies) != self.per_round:
                raise BackdoorlabError(f"round {server_round}: {len(replies)} of {self.per_round} clients replied")
            replies.sort(key=lambda m: self.client_of[m.metadata.src_node_id])
            norms = update_norms(replies, self._arrays)
            metrics = [next(iter(m.content.metric_records.values())) for m in replies]
            tick = time.time()
            result = self.inner.aggregate_train(server_round, replies)
            self.rounds[server_round] = {
                "clients": [self.client_of[m.metadata.src_node_id] for m in replies],
                "malicious": [self.client_of[m.metadata.src_node_id] for m, r in zip(replies, metrics)
                              if int(r.get("malicious", 0))],
                "update_norms": [round(n, 6) for n in norms],
                "clip_norm": getattr(self.inner, "clipping_norm", None),
                "client_train_seconds": [round(float(r.get("train-seconds", 0.0)), 3) for r in metrics],
                "aggregate_seconds": round(time.time() - tick, 3)}
            return result

        def configure_evaluate(self, server_round, arrays, config, grid):
            return self.inner.configure_evaluate(server_round, arrays, config, grid)

        def aggregate_evaluate(self, server_round, replies):
            return self.inner.aggregate_evaluate(server_round, replies)

        def summary(self) -> None:
            self.inner.summary()

    return SimpleNamespace(seeded=seeded, NormClipping=NormClipping, Recorded=Recorded, FedAvg=FedAvg, Krum=Krum,
                           FedTrimmedAvg=FedTrimmedAvg, FedMedian=FedMedian)


def build_strategy(settings, node_of: dict[int, int], schedule: Callable[[int], list[int]]):
    """The server strategy for ``settings.defense``: Flower's, with seeded sampling (``schedule(round)``: the
    round's client ids; ``node_of``: client id -> Flower node id), wrapped in :class:`Recorded`."""
    from .client import WEIGHT_KEY
    c = _classes()
    n, k = settings.clients, settings.per_round
    common = dict(fraction_train=k / n, fraction_evaluate=0.0, min_train_nodes=k, min_evaluate_nodes=0,
                  min_available_nodes=n, weighted_by_key=WEIGHT_KEY)
    defense = settings.defense
    if defense in ("none", "clip", "clip-noise"):
        inner = c.seeded[c.FedAvg](**common)
    elif defense == "krum":
        f = len(settings.attackers) if settings.krum_malicious is None else settings.krum_malicious
        inner = c.seeded[c.Krum](**common, num_malicious_nodes=f)
    elif defense == "trimmed-mean":
        inner = c.seeded[c.FedTrimmedAvg](**common, beta=settings.trim_beta)
    elif defense == "median":
        inner = c.seeded[c.FedMedian](**common)
    else:
        raise BackdoorlabError(f"unknown --defense {defense!r}")
    inner.schedule, inner.node_of = schedule, node_of
    strategy = inner
    if defense in ("clip", "clip-noise"):
        strategy = c.NormClipping(inner, None if settings.clip_auto else settings.clip_norm,
                                  settings.noise if defense == "clip-noise" else 0.0, k, settings.clip_quantile)
    return c.Recorded(strategy, {node: client for client, node in node_of.items()}, k)
