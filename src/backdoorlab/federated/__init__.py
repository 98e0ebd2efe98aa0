"""Federated learning with backdoors, on Flower (``pip install 'backdoorlab[federated]'``).

A federation is a real Flower server strategy and real Flower clients (the message API of Flower 1.42:
``ServerApp``, ``ClientApp``, ``flwr.serverapp.strategy``), run on this machine by Flower's simulation engine
(Ray); nothing here reimplements the round loop. One idea per module:

- :mod:`.settings`: every setting of a federation, checked before any work;
- :mod:`.partition`: IID and Dirichlet label-skew splits of the training part (the held-out pool excluded);
- :mod:`.sampling`: the seeded choice of each round's clients (attackers in the sample of an attack round);
- :mod:`.attacks`: naive poisoning, model replacement (boosting) and constrain-and-scale on an attacker's update;
- :mod:`.client`: the ``ClientApp``, training with the project's own loop;
- :mod:`.strategies`: the server strategy of each defense, built from Flower's;
- :mod:`.server`: the ``ServerApp``: client discovery, the strategy's rounds, evaluation on the test set;
- :mod:`.simulation`: run both on Flower's simulation engine.

Flower and Ray are imported inside functions only, so ``import backdoorlab.federated`` works without them; what
needs them says which extra to install. ``backdoorlab federated`` (``runs/federated.py``) writes the outputs.
"""

from .attacks import auto_boost, boost, clip_to, difference, exchanged, norm
from .partition import dirichlet_partition, iid_partition, partition
from .sampling import round_sample
from .settings import FederationSettings, parse_ids

__all__ = ["FederationSettings", "auto_boost", "boost", "clip_to", "difference", "dirichlet_partition", "exchanged",
           "iid_partition", "norm", "parse_ids", "partition", "round_sample"]
