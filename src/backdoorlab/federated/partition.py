"""Split a data set's training part among federated clients: IID, or with Dirichlet label skew.

Only the *training part* is split (:func:`backdoorlab.budget.training_part`: the training images outside the
held-out clean pool), so no client ever holds a pool image and a later ``backdoorlab sanitize --clean-budget N`` on
the federation's global model draws clean images that no client trained on. Each client's part is a sorted tensor
of indices into ``dataset.train_x``; the parts are disjoint and, together, the whole training part.

- ``iid``: a seeded shuffle of the training part cut into N near-equal parts (sizes differ by at most one);
- ``dirichlet``: label skew as in Hsu, Qi and Brown (2019), "Measuring the Effects of Non-Identical Data
  Distribution for Federated Visual Classification": for each class, a draw ``p ~ Dir(alpha * 1_N)`` gives the
  share of that class's images each client gets. Small ``alpha`` (0.1) gives each client a few classes; large
  ``alpha`` (100) approaches IID. The draw is repeated (seeded) until every client holds at least
  ``min_size`` images.
"""

from __future__ import annotations

import numpy as np
import torch

from ..budget import holdout_split
from ..errors import BackdoorlabError

MAX_DRAWS = 1000


def training_indices(n_train: int, holdout: int) -> torch.Tensor:
    """The indices (sorted) of the training images outside the held-out pool of ``holdout`` images."""
    idx, _ = holdout_split(n_train, holdout)
    return idx


def iid_partition(indices: torch.Tensor, n_clients: int, seed: int = 0) -> list[torch.Tensor]:
    """``indices`` shuffled (seeded) and cut into ``n_clients`` parts of near-equal size, each sorted."""
    if len(indices) < n_clients:
        raise BackdoorlabError(f"{len(indices)} training images cannot be split among {n_clients} clients")
    perm = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed))
    return [indices[part].sort().values for part in torch.tensor_split(perm, n_clients)]


def dirichlet_partition(indices: torch.Tensor, labels: torch.Tensor, n_clients: int, alpha: float, seed: int = 0,
                        min_size: int = 1) -> list[torch.Tensor]:
    """Label-skewed parts of ``indices`` (``labels``: the labels of the images they index, same length): each
    class's images are shared among the clients in proportions drawn from ``Dir(alpha)``. Redrawn until every
    client has ``min_size`` images; a one-line error if that does not happen in :data:`MAX_DRAWS` draws."""
    if not alpha > 0:
        raise BackdoorlabError(f"the Dirichlet concentration alpha must be > 0, got {alpha}")
    if len(indices) < n_clients * min_size:
        raise BackdoorlabError(f"{len(indices)} training images cannot give {n_clients} clients {min_size} each")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    classes = np.unique(labels)
    by_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    for _ in range(MAX_DRAWS):
        parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
        for members in by_class:
            shares = rng.dirichlet(np.full(n_clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
            for client, chunk in enumerate(np.split(members, cuts)):
                parts[client].append(chunk)
        sizes = [sum(len(c) for c in p) for p in parts]
        if min(sizes) >= min_size:
            return [indices[torch.from_numpy(np.concatenate(p)).long()].sort().values for p in parts]
    raise BackdoorlabError(f"a Dirichlet partition with alpha {alpha} left a client with fewer than {min_size} "
                           f"images in {MAX_DRAWS} draws: raise --dirichlet-alpha or lower --clients")


def partition(dataset, n_clients: int, scheme: str = "iid", alpha: float = 0.5, seed: int = 0,
              holdout: int | None = None) -> list[torch.Tensor]:
    """The clients' parts of ``dataset``'s training part (held-out pool of ``holdout`` images excluded; None: the
    data set's default): a list of ``n_clients`` sorted index tensors into ``dataset.train_x``."""
    from ..budget import default_holdout
    holdout = default_holdout(dataset.name) if holdout is None else holdout
    idx = training_indices(len(dataset.train_y), holdout)
    if scheme == "iid":
        return iid_partition(idx, n_clients, seed)
    if scheme == "dirichlet":
        return dirichlet_partition(idx, dataset.train_y[idx], n_clients, alpha, seed)
    raise BackdoorlabError(f"unknown partition {scheme!r}; valid: 'dirichlet', 'iid'")
