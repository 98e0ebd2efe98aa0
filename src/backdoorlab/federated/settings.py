"""Every setting of a federation in one dataclass, checked before any work.

:class:`FederationSettings` is what the server and every client are built from: the data set and its split among
the clients, the rounds and how many clients train in each, local training, the attack (who, when, how) and the
server's defense. :meth:`FederationSettings.check` refuses impossible combinations with one line each (more
attackers than clients, K > N, an attack round after the last round, attacker ids out of range, ...), so a bad
command fails before a data set is loaded or Ray is started. The settings are plain data (the attack object
apart, which the clients rebuild nothing from but use as is), so they travel to the clients' processes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import BackdoorlabError, valid_names

PARTITIONS = ("iid", "dirichlet")


def parse_ids(text: str | None, flag: str, allow_all: bool = False, last: int | None = None) -> tuple[int, ...] | None:
    """``"0,3,5-7"`` as sorted unique integers (``"all"`` with ``allow_all``: None, meaning every one up to
    ``last``). ``flag`` names the option in the one-line error for anything else."""
    if text is None:
        return None
    text = str(text).strip()
    if allow_all and text == "all":
        return tuple(range(1, last + 1)) if last is not None else None
    out: set[int] = set()
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:  # a range LO-HI (a leading minus is a negative number's)
                cut = part.index("-", 1)
                lo, hi = int(part[:cut]), int(part[cut + 1:])
                if hi < lo:
                    raise ValueError
                out.update(range(lo, hi + 1))
            else:
                out.add(int(part))
    except ValueError:
        raise BackdoorlabError(f"{flag} must be integers or ranges, comma-separated (e.g. 0,3,5-7)"
                               f"{' or all' if allow_all else ''}, got {text!r}") from None
    return tuple(sorted(out))


@dataclasses.dataclass
class FederationSettings:
    """A federation: ``clients`` (N) participants holding disjoint parts of the data set's training images (the
    held-out pool excluded), ``per_round`` (K) of them sampled each of ``rounds`` rounds, each training
    ``local_epochs`` from the global model; the server averages (or defends, ``defense``) and evaluates on the
    test set.

    Attack: the clients ``attackers`` poison their own data with ``attack`` (a training-time attack object built
    by :func:`backdoorlab.attacks.build_attack`) and train on it; in each of the ``attack_rounds`` they are all in
    the round's sample and send their malicious update, scaled by ``boost`` (model replacement; 1: naive
    poisoning) and, with ``constrain``, trained within the norm bound so that the scaled update is not clipped.
    Outside the attack rounds they are sampled like anyone and train honestly."""

    dataset: str
    arch: str
    clients: int
    per_round: int
    rounds: int
    partition: str = "iid"
    alpha: float = 0.5
    seed: int = 0
    holdout: int = 0
    data_dir: str | None = None
    image_size: tuple[int, int] | None = None
    # local training of every client
    local_epochs: int = 2
    lr: float = 0.02
    batch_size: int = 32
    momentum: float = 0.9
    weight_decay: float = 5e-4
    # the attack
    attack: Any = None
    attack_name: str | None = None
    attackers: tuple[int, ...] = ()
    attack_rounds: tuple[int, ...] = ()
    boost: float = 1.0
    boost_auto: bool = False
    constrain: bool = False
    attacker_epochs: int | None = None
    attacker_lr: float | None = None
    # the server's defense
    defense: str = "none"
    clip_norm: float | None = None
    clip_auto: bool = False
    clip_quantile: float = 0.5
    noise: float = 0.0
    trim_beta: float = 0.2
    krum_malicious: int | None = None
    # the simulation
    workers: int = 1
    threads: int = 1
    evaluate_every: int = 1

    # ------------------------------------------------------------------------------------------------ checks

    def check(self) -> "FederationSettings":
        """Raise BackdoorlabError (one line) on any impossible setting; return self."""
        from .strategies import DEFENSES
        n, k = self.clients, self.per_round
        if n < 1:
            raise BackdoorlabError(f"--clients must be >= 1, got {n}")
        if not 1 <= k <= n:
            raise BackdoorlabError(f"--per-round must be between 1 and --clients ({n}), got {k}")
        if self.rounds < 1:
            raise BackdoorlabError(f"--rounds must be >= 1, got {self.rounds}")
        if self.evaluate_every < 1:
            raise BackdoorlabError(f"--evaluate-every must be >= 1, got {self.evaluate_every}")
        if self.partition not in PARTITIONS:
            raise BackdoorlabError(f"unknown --partition {self.partition!r}; valid: {valid_names(PARTITIONS)}")
        if self.partition == "dirichlet" and not self.alpha > 0:
            raise BackdoorlabError(f"--dirichlet-alpha must be > 0, got {self.alpha}")
        if self.local_epochs < 1 or (self.attacker_epochs is not None and self.attacker_epochs < 1):
            raise BackdoorlabError("--local-epochs and --attacker-epochs must be >= 1")
        if not self.lr > 0 or (self.attacker_lr is not None and not self.attacker_lr > 0):
            raise BackdoorlabError("--lr and --attacker-lr must be > 0")
        if self.batch_size < 1:
            raise BackdoorlabError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.workers < 1 or self.threads < 1:
            raise BackdoorlabError("--workers and --threads-per-client must be >= 1")
        self._check_attack()
        self._check_defense(DEFENSES)
        return self

    def _check_attack(self) -> None:
        n, k = self.clients, self.per_round
        if self.attack is None and self.attack_name is None:
            given = [flag for flag, v in (("--attacker-clients", self.attackers), ("--attack-rounds", self.attack_rounds),
                                          ("--boost", self.boost != 1.0 or self.boost_auto),
                                          ("--constrain-and-scale", self.constrain),
                                          ("--attacker-epochs", self.attacker_epochs),
                                          ("--attacker-lr", self.attacker_lr)) if v]
            if given:
                raise BackdoorlabError(f"{given[0]} needs --attack")
            return
        if not self.attackers:
            raise BackdoorlabError("--attack needs --attacker-clients (the ids of the malicious clients, 0 to N-1)")
        if len(self.attackers) > n:
            raise BackdoorlabError(f"{len(self.attackers)} attackers but only {n} clients")
        bad = [i for i in self.attackers if not 0 <= i < n]
        if bad:
            raise BackdoorlabError(f"--attacker-clients: client id {bad[0]} is out of range; the {n} clients are "
                                   f"numbered 0 to {n - 1}")
        if len(self.attackers) > k:
            raise BackdoorlabError(f"{len(self.attackers)} attackers cannot all train in a round of --per-round {k}; "
                                   f"give at most {k} attacker ids")
        if not self.attack_rounds:
            raise BackdoorlabError("--attack-rounds is empty")
        late = [r for r in self.attack_rounds if not 1 <= r <= self.rounds]
        if late:
            raise BackdoorlabError(f"--attack-rounds: round {late[0]} is not one of the {self.rounds} rounds (1 to "
                                   f"{self.rounds})")
        if not self.boost > 0:
            raise BackdoorlabError(f"--boost must be auto or a number > 0, got {self.boost}")

    def _check_defense(self, defenses) -> None:
        if self.defense not in defenses:
            raise BackdoorlabError(f"unknown --defense {self.defense!r}; valid: {valid_names(defenses)}")
        clips = self.defense in ("clip", "clip-noise")
        if (self.clip_norm is not None or self.clip_auto) and not clips:
            raise BackdoorlabError(f"--clip-norm is for --defense clip or clip-noise, not {self.defense}")
        if clips and self.clip_norm is None and not self.clip_auto:
            raise BackdoorlabError(f"--defense {self.defense} needs --clip-norm (a number, or auto)")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise BackdoorlabError(f"--clip-norm must be auto or a number > 0, got {self.clip_norm}")
        if not 0 < self.clip_quantile <= 1:
            raise BackdoorlabError(f"the clipping quantile must lie in (0, 1], got {self.clip_quantile}")
        if self.defense == "clip-noise":
            if not self.noise > 0:
                raise BackdoorlabError("--defense clip-noise needs --noise SIGMA > 0 (the noise's standard deviation)")
        elif self.noise:
            raise BackdoorlabError(f"--noise is for --defense clip-noise, not {self.defense}")
        if self.defense == "trimmed-mean":
            if not 0 <= self.trim_beta < 0.5:
                raise BackdoorlabError(f"--trim-beta must lie in [0, 0.5), got {self.trim_beta}")
            if int(self.trim_beta * self.per_round) < 1:
                raise BackdoorlabError(f"--trim-beta {self.trim_beta} trims no update from a round of {self.per_round} "
                                       f"(it cuts int(beta * K) from each end): raise it or --per-round")
        if self.krum_malicious is not None and self.krum_malicious < 0:
            raise BackdoorlabError(f"--krum-malicious must be >= 0, got {self.krum_malicious}")

    # --------------------------------------------------------------------------------------------- derived

    @property
    def attacker_epochs_or_default(self) -> int:
        return self.local_epochs if self.attacker_epochs is None else self.attacker_epochs

    @property
    def attacker_lr_or_default(self) -> float:
        return self.lr if self.attacker_lr is None else self.attacker_lr

    def is_attack_round(self, server_round: int) -> bool:
        return (self.attack is not None or self.attack_name is not None) and server_round in self.attack_rounds

    def evaluated(self, server_round: int) -> bool:
        """Whether the server measures the global model after ``server_round`` (0: the starting model): every
        ``evaluate_every``-th round, and always the start, the last round, each attack round and the round after
        it (what the attack did, and how fast it fades)."""
        return (server_round % self.evaluate_every == 0 or server_round == self.rounds
                or self.is_attack_round(server_round) or self.is_attack_round(server_round - 1))

    def malicious(self, client: int, server_round: int) -> bool:
        """Whether ``client`` sends a malicious update in ``server_round``."""
        return self.is_attack_round(server_round) and client in self.attackers

    def to_dict(self) -> dict:
        """The settings as JSON (the attack as its record, ``Backdoor.to_dict`` plus the poisoning rate)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "attack"}
        d["attackers"], d["attack_rounds"] = list(self.attackers), list(self.attack_rounds)
        d["image_size"] = list(self.image_size) if self.image_size is not None else None
        d["attack"] = attack_record(self.attack)
        return d


def attack_record(attack) -> dict | None:
    """What a checkpoint records of a data-poisoning attack (``to_dict`` of the attack), or None."""
    return attack.to_dict() if attack is not None else None
