"""The federation's client: a Flower ``ClientApp`` that trains the global model on its own part of the data with
the project's own training loop (:func:`backdoorlab.train.train_model`), honestly or as an attacker.

A client is identified by its ``partition-id`` (0 to N-1), which Flower puts in every node's config: the
simulation numbers its virtual nodes so, and a deployed ``flower-supernode`` is started with ``--node-config
"partition-id=3 num-partitions=100"``. It answers two kinds of message:

- ``query``: its partition id, so the server can map Flower's node ids to clients (the seeded sampling of
  :mod:`.sampling` is over client ids);
- ``train``: the global model (an ``ArrayRecord`` of the exchanged tensors, :func:`.attacks.exchanged`) and the
  round; it replies with its trained model and a ``MetricRecord`` holding ``weight`` (1: FedAvg with equal
  weights, the setting of the model-replacement arithmetic), its number of images, training loss and seconds.

:func:`client_update` is the training itself, without Flower, so it can be tested alone: a benign client trains
``local_epochs`` on its images; a malicious one (an attacker in an attack round, :mod:`.attacks`) poisons its
images with the attack, trains ``attacker_epochs`` at ``attacker_lr`` (projected onto the norm ball with
constrain-and-scale) and boosts its update. Training is seeded by (seed, round, client). The data set and the
partition are loaded once per worker process and kept.
"""

from __future__ import annotations

import functools
import time

import torch

from ..errors import BackdoorlabError
from .attacks import ProjectToBall, boost, difference, exchanged, norm
from .partition import partition
from .settings import FederationSettings

WEIGHT_KEY = "weight"  # the MetricRecord key FedAvg weights updates by: 1 for every client (equal weights)
PARTITION_KEY = "partition-id"  # the node-config key of a client's id (Flower's simulation sets it)


def client_seed(seed: int, server_round: int, client: int) -> int:
    """The training seed of ``client`` in ``server_round``: distinct per client and round, fixed by ``seed``."""
    return (seed * 1_000_003 + server_round * 10_007 + client) % (2 ** 31)


@functools.lru_cache(maxsize=2)
def _dataset(name: str, data_dir: str | None, image_size: tuple[int, int] | None):
    from ..data import load_dataset
    return load_dataset(name, data_dir, download=False, progress=False, image_size=image_size)


@functools.lru_cache(maxsize=4)
def _parts(name, data_dir, image_size, clients, scheme, alpha, seed, holdout) -> tuple[torch.Tensor, ...]:
    return tuple(partition(_dataset(name, data_dir, image_size), clients, scheme, alpha, seed, holdout))


def client_data(settings: FederationSettings, client: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The images (uint8) and labels of ``client``'s part of the training data."""
    s = settings
    ds = _dataset(s.dataset, s.data_dir, s.image_size)
    idx = _parts(s.dataset, s.data_dir, s.image_size, s.clients, s.partition, s.alpha, s.seed, s.holdout)[client]
    return ds.train_x[idx], ds.train_y[idx]


def model_from(settings: FederationSettings, state) -> torch.nn.Module:
    """A model of the federation's architecture holding the exchanged tensors ``state``."""
    from ..models import create_model
    from ..models.for_dataset import arch_args
    ds = _dataset(settings.dataset, settings.data_dir, settings.image_size)
    model = create_model(settings.arch, **arch_args(ds))
    own = model.state_dict()
    missing = [k for k, v in own.items() if v.is_floating_point() and k not in state]
    if missing:
        raise BackdoorlabError(f"the global model lacks {missing[0]!r} of {settings.arch}")
    model.load_state_dict({k: state[k].to(own[k].dtype) for k in own if k in state}, strict=False)
    return model


def _train_config(settings: FederationSettings, seed: int, malicious: bool):
    from ..train import TrainConfig
    return TrainConfig(epochs=settings.attacker_epochs_or_default if malicious else settings.local_epochs,
                       lr=settings.attacker_lr_or_default if malicious else settings.lr,
                       batch_size=settings.batch_size, momentum=settings.momentum,
                       weight_decay=settings.weight_decay, schedule="constant", augment="none", seed=seed)


def client_update(settings: FederationSettings, client: int, server_round: int, global_state,
                  server_bound: float = 0.0) -> tuple[dict[str, torch.Tensor], dict]:
    """Train ``client`` in ``server_round`` from the global model's exchanged tensors ``global_state``; returns
    (the exchanged tensors it sends, facts about the training).

    ``server_bound``: the clipping bound the server announced (0: none known). A constrain-and-scale attacker keeps
    its boosted update within it; with none known it uses the norm of the update it would have sent honestly
    (it trains once on its clean images to measure it), the bound a server calibrated on benign updates would
    set."""
    from ..train import train_model
    global_state = {k: v.detach().to("cpu") for k, v in global_state.items()}
    x, y = client_data(settings, client)
    malicious = settings.malicious(client, server_round)
    seed = client_seed(settings.seed, server_round, client)
    model = model_from(settings, global_state)
    info = {"client": client, "malicious": malicious, "images": len(y)}
    tick = time.time()
    if not malicious:
        history = train_model(model, x, y, _train_config(settings, seed, False), progress=False)
        info.update(loss=history["loss"][-1], seconds=time.time() - tick)
        return exchanged(model.state_dict()), info
    poisoned = settings.attack.poison(x, y, _dataset(settings.dataset, settings.data_dir,
                                                      settings.image_size).num_classes, seed=seed)
    gamma, hook = settings.boost, None
    if settings.constrain:
        bound, source = float(server_bound), "server"
        if not bound > 0:
            honest = model_from(settings, global_state)
            train_model(honest, x, y, _train_config(settings, seed, False), progress=False)
            bound, source = norm(difference(exchanged(honest.state_dict()), global_state)), "own benign update"
        hook = ProjectToBall(model, global_state, bound / gamma)
        info.update(norm_bound=bound, norm_bound_source=source)
    history = train_model(model, poisoned.x, poisoned.y, _train_config(settings, seed, True), progress=False,
                          batch_hook=hook)
    trained = exchanged(model.state_dict())
    sent = boost(global_state, trained, gamma)
    info.update(loss=history["loss"][-1], seconds=time.time() - tick, poisoned=len(poisoned.poisoned), boost=gamma,
                trained_norm=norm(difference(trained, global_state)), sent_norm=norm(difference(sent, global_state)),
                projections=hook.projections if hook is not None else 0)
    return sent, info


def client_app(settings: FederationSettings):
    """The Flower ``ClientApp`` of the federation ``settings`` (the message API: ``@app.query``, ``@app.train``)."""
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.query()
    def query(msg: Message, context) -> Message:
        return Message(RecordDict({"client": MetricRecord({PARTITION_KEY: int(context.node_config[PARTITION_KEY])})}),
                       reply_to=msg)

    @app.train()
    def train(msg: Message, context) -> Message:
        torch.set_num_threads(settings.threads)
        client = int(context.node_config[PARTITION_KEY])
        config = msg.content["config"]
        state = msg.content["arrays"].to_torch_state_dict()
        sent, info = client_update(settings, client, int(config["server-round"]), state,
                                   float(config.get("clip-norm", 0.0)))
        metrics = MetricRecord({WEIGHT_KEY: 1.0, "num-examples": info["images"], "train-loss": float(info["loss"]),
                                "train-seconds": float(info["seconds"]), "malicious": int(info["malicious"])})
        return Message(RecordDict({"arrays": ArrayRecord.from_torch_state_dict(sent), "metrics": metrics}),
                       reply_to=msg)

    return app
