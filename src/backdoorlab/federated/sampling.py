"""Which clients train in a round: a seeded draw, with the attackers put in the sample of an attack round.

Flower's strategies draw their sample with Python's global ``random``, over node ids that the simulation makes up
afresh in every run; the sample here is a function of the seed and the round alone, over the clients' own ids (0
to N-1, the partition each holds), so the same command samples the same clients. In an attack round the
attackers are all in the sample (the threat model of Bagdasaryan et al., 2020: the attacker is selected in the
round it attacks) and the other K - |A| places are drawn among the benign clients; in the other rounds all N
clients are drawn from alike.
"""

from __future__ import annotations

import numpy as np

from ..errors import BackdoorlabError


def round_sample(n_clients: int, per_round: int, server_round: int, seed: int = 0,
                 forced: tuple[int, ...] = ()) -> list[int]:
    """The sorted ids of the ``per_round`` clients of ``server_round``: ``forced`` (the attackers in an attack
    round) and a seeded draw without replacement from the others."""
    forced = tuple(sorted(set(forced)))
    if len(forced) > per_round or per_round > n_clients:
        raise BackdoorlabError(f"cannot sample {per_round} of {n_clients} clients with {len(forced)} forced in")
    rng = np.random.default_rng([seed, server_round])
    others = np.array([c for c in range(n_clients) if c not in forced], dtype=np.int64)
    drawn = rng.choice(others, size=per_round - len(forced), replace=False) if per_round > len(forced) else []
    return sorted(int(c) for c in (*forced, *drawn))
