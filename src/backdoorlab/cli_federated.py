"""The ``backdoorlab federated`` command: federated learning on Flower, with an attacking client and a server
defense (see :mod:`backdoorlab.federated`, docs/federated.md). ``register(cli_group)`` adds it to the
``backdoorlab`` group; the backdoor options (``--attack``, ``--target``, trigger options) are the same as
``backdoorlab train``'s, taken from ``backdoorlab.cli`` when the command is registered.

Every setting is checked (:meth:`FederationSettings.check`) before the data set is loaded or Ray started; bad input
is one line, ``error: ...``, exit status 2.
"""

from __future__ import annotations

import json
import os
import shlex
import sys

import click

from .errors import BackdoorlabError


def _number_or_auto(text, flag: str) -> tuple[float | None, bool]:
    """``auto`` -> (None, True); a number -> (it, False); None -> (None, False)."""
    if text is None:
        return None, False
    if str(text).strip() == "auto":
        return None, True
    try:
        return float(text), False
    except ValueError:
        raise BackdoorlabError(f"{flag} must be auto or a number, got {text!r}") from None


def settings_from_options(*, dataset, arch, clients, per_round, rounds, partition, alpha, local_epochs, lr,
                          batch_size, attack_name, attacker_clients, attack_rounds, boost, constrain, attacker_epochs,
                          attacker_lr, defense, clip_norm, clip_quantile, noise, trim_beta, krum_malicious, seed,
                          workers, threads, holdout=0, data_dir=None, evaluate_every=1):
    """The :class:`~backdoorlab.federated.FederationSettings` the command's options describe (not yet checked; the
    attack object comes later, once the data set is loaded)."""
    from .federated.attacks import auto_boost
    from .federated.settings import FederationSettings, parse_ids
    boost_value, boost_is_auto = _number_or_auto(boost, "--boost")
    if constrain and boost is None:
        boost_is_auto = True  # constrain-and-scale boosts, by K unless told otherwise
    clip_value, clip_is_auto = _number_or_auto(clip_norm, "--clip-norm")
    ids = parse_ids(attacker_clients, "--attacker-clients") or ()
    when = parse_ids(attack_rounds, "--attack-rounds", allow_all=True, last=max(rounds, 0)) or ()
    if attack_name is None and attack_rounds == "all":
        when = ()
    return FederationSettings(
        dataset=dataset, arch=arch, clients=clients, per_round=per_round, rounds=rounds, partition=partition,
        alpha=alpha, seed=seed, holdout=holdout, data_dir=data_dir, local_epochs=local_epochs, lr=lr,
        batch_size=batch_size, attack_name=attack_name, attackers=ids, attack_rounds=when,
        boost=auto_boost(per_round) if boost_is_auto else (1.0 if boost_value is None else boost_value),
        boost_auto=boost_is_auto, constrain=constrain, attacker_epochs=attacker_epochs, attacker_lr=attacker_lr,
        defense=defense, clip_norm=clip_value, clip_auto=clip_is_auto, clip_quantile=clip_quantile, noise=noise,
        trim_beta=trim_beta, krum_malicious=krum_malicious, workers=workers, threads=threads,
        evaluate_every=evaluate_every)


def _federated(dataset, arch, clients, per_round, rounds, partition, dirichlet_alpha, local_epochs, lr, batch_size,
               backdoor_spec, poison_rate, attacker_clients, attack_rounds, boost, constrain, attacker_epochs,
               attacker_lr, defense, clip_norm, clip_quantile, noise, trim_beta, krum_malicious, start_from, seed,
               workers, threads, evaluate_every, out, as_json, data_dir, no_progress, verbose):
    """Federated learning on Flower: N clients hold disjoint parts of the training data (the held-out clean pool
    excluded), K train each round, the server averages (or defends) and evaluates on the test set. Optionally some
    clients attack: they poison their own data and, in the attack rounds, send a poisoned update (--boost: model
    replacement; --constrain-and-scale: kept within the clipping bound).

    Writes OUT/rounds.json (CA and ASR per round), OUT/rounds.png, OUT/config.json and the final global model as a
    checkpoint in OUT/global (`backdoorlab evaluate OUT/global` measures its ASR; scan, sanitize and repair take
    it). Needs `pip install 'backdoorlab[federated]'`. docs/federated.md.
    """
    from .cli import _dataset, _make_attack
    from .data.registry import canonical_name, default_holdout
    from .runs.federated import federated_run
    workers = max(1, os.cpu_count() or 1) if workers is None else workers
    if backdoor_spec["attack"] is None and poison_rate is not None:
        raise BackdoorlabError("--poison-rate needs --attack")
    settings = settings_from_options(
        dataset=canonical_name(dataset), arch=arch, clients=clients, per_round=per_round, rounds=rounds,
        partition=partition, alpha=dirichlet_alpha, local_epochs=local_epochs, lr=lr, batch_size=batch_size,
        attack_name=backdoor_spec["attack"], attacker_clients=attacker_clients, attack_rounds=attack_rounds,
        boost=boost, constrain=constrain, attacker_epochs=attacker_epochs, attacker_lr=attacker_lr, defense=defense,
        clip_norm=clip_norm, clip_quantile=clip_quantile, noise=noise, trim_beta=trim_beta,
        krum_malicious=krum_malicious, seed=seed, workers=workers, threads=threads, evaluate_every=evaluate_every)
    settings.check()  # before the data loads or Ray starts
    from .federated.simulation import flower
    flower()  # a missing extra is one line, before any work
    ds = _dataset(dataset, data_dir)
    from .data import resolve_data_dir
    settings.dataset, settings.holdout = ds.name, default_holdout(ds.name)
    settings.data_dir = str(resolve_data_dir(data_dir))
    if backdoor_spec["attack"] is not None:
        settings.attack = _make_attack(backdoor_spec, ds, poison_rate=0.3 if poison_rate is None else poison_rate)
    command = "backdoorlab " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if "federated" in sys.argv else None
    result = federated_run(ds, settings, out, start_from=start_from, progress=not no_progress, verbose=verbose,
                           command=command)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"federated {arch} on {ds.name}: {clients} clients, {per_round} per round, {rounds} rounds, defense "
               f"{defense} ({result['seconds']:.0f} s) -> {out}")
    for r in result["rounds"]:
        if r["clean_accuracy"] is None:  # not evaluated (--evaluate-every)
            continue
        asr = r["attack_success_rate"]
        mark = "  attack" if settings.is_attack_round(r["round"]) else ""
        click.echo(f"  round {r['round']:>3}  CA {100 * r['clean_accuracy']:6.2f}%"
                   + ("" if asr is None else f"  ASR {100 * asr:6.2f}%") + mark)
    click.echo(f"global model: {result['global']} (backdoorlab evaluate {result['global']})")


def _build_command(backdoor_options) -> click.Command:
    f = backdoor_options(_federated)
    options = [
        click.option("--dataset", required=True, help="Data set (its training part is split among the clients)."),
        click.option("--arch", required=True, help="Architecture of the global model (a built-in one)."),
        click.option("--clients", required=True, type=int, help="N: the number of clients."),
        click.option("--per-round", required=True, type=int, help="K: the clients sampled in each round."),
        click.option("--rounds", required=True, type=int, help="R: the number of rounds."),
        click.option("--partition", default="iid", show_default=True,
                     help="iid, or dirichlet (label skew, Dir(--dirichlet-alpha) per class)."),
        click.option("--dirichlet-alpha", "dirichlet_alpha", default=0.5, show_default=True, type=float,
                     help="dirichlet: the concentration; small values give each client few classes (--alpha is the "
                          "blended trigger's strength, as in every command)."),
        click.option("--local-epochs", default=2, show_default=True, type=int, help="Epochs each client trains."),
        click.option("--lr", default=0.02, show_default=True, type=float,
                     help="Clients' learning rate (SGD, momentum 0.9, constant)."),
        click.option("--batch-size", default=32, show_default=True, type=int),
        click.option("--poison-rate", default=None, type=float,
                     help="Fraction of an attacker's own images it poisons (default 0.3)."),
        click.option("--attacker-clients", default=None, metavar="IDS",
                     help="Ids of the malicious clients, 0 to N-1 (e.g. 0 or 0,5-7)."),
        click.option("--attack-rounds", default="all", show_default=True, metavar="ROUNDS",
                     help="Rounds in which the attackers are in the sample and attack (e.g. 5 or 3,5-7, or all); "
                          "in the others they train honestly when sampled."),
        click.option("--boost", default=None, metavar="auto|X",
                     help="Model replacement: scale the attacker's update by X (auto: clients per round / server "
                          "learning rate = K). Default: no boost (naive poisoning)."),
        click.option("--constrain-and-scale", "constrain", is_flag=True,
                     help="The attacker trains within the clipping bound / boost, so that its boosted update is "
                          "not clipped (bound: the server's --clip-norm; without one, the norm of its own honest "
                          "update). Boosts by K unless --boost says otherwise."),
        click.option("--attacker-epochs", default=None, type=int, help="Attacker's local epochs (default: "
                                                                       "--local-epochs)."),
        click.option("--attacker-lr", default=None, type=float, help="Attacker's learning rate (default: --lr)."),
        click.option("--defense", default="none", show_default=True,
                     help="none, clip, clip-noise, krum, trimmed-mean or median."),
        click.option("--clip-norm", default=None, metavar="auto|X",
                     help="clip, clip-noise: the L2 bound of every update (auto: the --clip-quantile of the update "
                          "norms the server receives in round 1)."),
        click.option("--clip-quantile", default=0.5, show_default=True, type=float,
                     help="--clip-norm auto: which quantile of the first round's norms (0.5: the median)."),
        click.option("--noise", default=0.0, show_default=True, type=float,
                     help="clip-noise: standard deviation of the Gaussian noise added to the averaged model."),
        click.option("--trim-beta", default=0.2, show_default=True, type=float,
                     help="trimmed-mean: fraction cut from each end per coordinate."),
        click.option("--krum-malicious", default=None, type=int,
                     help="krum: the number f of malicious clients it assumes (default: the attackers)."),
        click.option("--start-from", default=None, type=click.Path(),
                     help="Start from this checkpoint (e.g. a converged clean model from `backdoorlab train`)."),
        click.option("--seed", default=0, show_default=True, type=int,
                     help="Seeds the partition, the sampling, the clients' training and the new model."),
        click.option("--workers", default=None, type=int,
                     help="Clients training at once (Ray actors of one CPU each; default: the CPU count)."),
        click.option("--threads-per-client", "threads", default=1, show_default=True, type=int,
                     help="Torch threads each client trains with."),
        click.option("--evaluate-every", default=1, show_default=True, type=int, metavar="N",
                     help="The server measures the global model on the test set after every N-th round (and always "
                          "the start, the last round, each attack round and the round after it); the rest of "
                          "rounds.json has no CA or ASR. Evaluation is a large share of a long run's time."),
        click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory."),
        click.option("--json", "as_json", is_flag=True,
                     help="Print one JSON object: rounds (round, clean_accuracy, attack_success_rate), final."),
        click.option("--data-dir", default=None, type=click.Path(file_okay=False),
                     help="Data directory (default: $BACKDOORLAB_DATA, else a per-user cache directory)."),
        click.option("--no-progress", is_flag=True, help="Hide the progress bar."),
        click.option("--verbose", is_flag=True, help="Show Flower's and Ray's log."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return click.command("federated")(f)


def register(cli_group: click.Group) -> click.Group:
    """Add ``federated`` to ``cli_group`` (the ``backdoorlab`` group); returns it."""
    if "federated" not in cli_group.commands:
        from .cli import _backdoor_options
        cli_group.add_command(_build_command(_backdoor_options))
    return cli_group
